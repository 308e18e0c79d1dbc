"""A regressor fitted on a pretrained backbone's frozen features as a model: ``matgnn baseline xgboost|linear
CFG --features chgnet|sevennet`` saves one in its run folder's ``model/``, and ``predict``, ``evaluate``,
``ensemble --combine`` (beside networks), ``reference --fallback`` and delta learning use it like any model.

The columns are :class:`~matgnn.baselines.descriptors.BackboneSpace`'s (a structure: the mean, max and min of its
atoms' features; an atom: its feature beside its structure's mean), computed by the same functions at fitting
and prediction time. Saved as data: XGBoost's own JSON model format (its trees as numbers; no pickle) as UTF-8
bytes in a ``uint8`` buffer, a linear model's weights as a float buffer; ``model.json`` holds the buffer sizes, so
``load_model`` builds the empty buffers before the weights file fills them (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from matgnn import keys
from matgnn.errors import UserError
from matgnn.models.backbones import frozen_features_model
from matgnn.models.saved import SavedModel

#: the regressors a model folder may hold
KINDS = ("xgboost", "linear")


def graph_rows(atom_features: list[np.ndarray]) -> np.ndarray:
    """One row per structure (its atoms' features ``[n_atoms, dim]``): ``[mean | max | min]`` over the atoms."""
    return np.vstack([np.concatenate([a.mean(0), a.max(0), a.min(0)]) for a in atom_features])


def atom_rows(a: np.ndarray) -> np.ndarray:
    """One row per atom of a structure: ``[its feature | the structure's mean]``."""
    return np.hstack([a, np.broadcast_to(a.mean(0), a.shape)])


class BackboneRegressor(SavedModel):
    """One fitted regressor per head (``kind``: ``xgboost`` trees or ``linear`` ridge weights) on backbone
    ``backbone``'s frozen features; graph heads read a structure's pooled row, node heads an atom's row.
    ``sizes[k]``: the length of head ``k``'s saved model (bytes of XGBoost JSON, or weights)."""

    def __init__(self, heads: list[dict[str, Any]], backbone: str, kind: str, sizes: list[int],
                 backbone_version: str | None = None) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown regressor {kind!r}; known: {', '.join(KINDS)}")
        network = frozen_features_model(backbone)
        from matgnn.packages import require_package

        require_package(network.backbone_package, f"a regressor on {network.backbone_title} features")
        current = network.current_version()
        version = backbone_version or current
        if version != current:
            raise ValueError(f"this model was fitted on {backbone} {version} features; matgnn computes {backbone} "
                             f"{current}'s")
        if not heads or len(sizes) != len(heads):
            raise ValueError("a regressor model needs one saved model size per head")
        bad = [h.get("name") for h in heads if h.get("components") or h.get("level", "graph") not in ("graph", "node")]
        if bad:
            raise ValueError(f"head {bad[0]!r}: a regressor model answers scalar graph or node heads")
        self.backbone, self.kind = backbone, kind
        #: the batch field the packer adds for it (instance-level: it depends on the backbone)
        self.batch_fields = network.batch_fields
        self._heads = [{"name": h["name"], "level": h.get("level", "graph"), "transform": "none", "baseline": "none"}
                       for h in heads]
        dtype = torch.uint8 if kind == "xgboost" else torch.float64
        for k, size in enumerate(sizes):
            self.register_buffer(f"model_{k}", torch.zeros(size, dtype=dtype))
        self._fitted: list[Any] | None = None
        self.register_load_state_dict_post_hook(_read_loaded)

    @classmethod
    def of(cls, heads: list[dict[str, Any]], backbone: str, kind: str, fitted: list[Any]) -> BackboneRegressor:
        """A model of fitted regressors, one per head: XGBoost ``XGBRegressor`` or ``Booster``s, or linear weights
        (``[w..., intercept]`` arrays)."""
        blobs = []
        for f in fitted:
            if kind == "xgboost":
                booster = f.get_booster() if hasattr(f, "get_booster") else f
                try:  # early stopping: the trees up to the best round, which the fitted model's predict uses
                    booster = booster[: int(f.best_iteration) + 1]
                except AttributeError:
                    pass
                blobs.append(torch.frombuffer(bytearray(booster.save_raw(raw_format="json")), dtype=torch.uint8))
            else:
                blobs.append(torch.as_tensor(np.asarray(f, np.float64)))
        # the features' version is recorded, so a model fitted on other features is refused on loading
        model = cls(heads, backbone, kind, [len(b) for b in blobs], frozen_features_model(backbone).current_version())
        with torch.no_grad():
            for k, b in enumerate(blobs):
                getattr(model, f"model_{k}").copy_(b)
        return model.eval()

    @property
    def head_specs(self) -> list[dict[str, Any]]:
        return self._heads

    def _models(self) -> list[Any]:
        """The regressors, rebuilt from the buffers once (again after new weights are loaded)."""
        if self._fitted is None:
            fitted = []
            for k, spec in enumerate(self._heads):
                buf = getattr(self, f"model_{k}").detach().cpu()
                if self.kind == "xgboost":
                    try:
                        import xgboost as xgb
                    except ImportError:
                        raise UserError("this model holds XGBoost trees: pip install 'matgnn[baselines]'") from None
                    booster = xgb.Booster()
                    try:
                        booster.load_model(bytearray(buf.numpy().tobytes()))
                    except xgb.core.XGBoostError as e:
                        raise UserError(f"head {spec['name']!r}: its saved XGBoost model is not readable "
                                        f"({str(e).splitlines()[0][:200]})") from None
                    fitted.append(booster)
                else:
                    fitted.append(buf.numpy())
            self._fitted = fitted
        return self._fitted

    def _predict(self, k: int, x: np.ndarray) -> np.ndarray:
        m = self._models()[k]
        if self.kind == "xgboost":  # as fitted: a sparse matrix, whose absent (zero) entries XGBoost reads as missing
            import scipy.sparse as sp

            return np.asarray(m.inplace_predict(sp.csr_matrix(x)), np.float64).reshape(-1)
        if x.shape[1] != len(m) - 1:
            raise ValueError(f"{self.backbone} features have {x.shape[1]} columns; this model was fitted on {len(m) - 1}")
        return x @ m[:-1] + m[-1]

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        feats = batch[keys.backbone_atom(self.backbone)].detach().cpu().numpy()
        starts = np.cumsum([0] + batch[keys.N_ATOMS].tolist())
        per_graph = [feats[starts[g]:starts[g + 1]] for g in range(len(starts) - 1)]
        device = batch[keys.N_ATOMS].device
        out: dict[str, torch.Tensor] = {}
        for k, spec in enumerate(self._heads):
            if not per_graph:
                out[spec["name"]] = torch.zeros(0, device=device)
                continue
            x = graph_rows(per_graph) if spec["level"] == "graph" else np.vstack([atom_rows(a) for a in per_graph])
            out[spec["name"]] = torch.as_tensor(self._predict(k, x), dtype=torch.float32, device=device)
        return out


def _read_loaded(model: BackboneRegressor, _incompatible: Any) -> None:
    """After new weights are loaded (``load_model``, a composite's load): read them at once, so an unreadable
    saved model is an error on loading, not in the middle of a prediction."""
    model._fitted = None
    if all(bool(getattr(model, f"model_{k}").any()) for k in range(len(model.head_specs))):  # else not filled
        model._models()


__all__ = ["KINDS", "BackboneRegressor", "atom_rows", "graph_rows"]
