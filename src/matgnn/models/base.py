"""Model base class: heads, target normalisation inside the model, save/load with
constructor arguments next to the weights (``load_model(path)`` needs nothing else).

Loading is data, never code: ``model.json`` may only name a class of matgnn's own registry
(every model class defined in the package registers itself); anything else is refused
before any module is imported, and weights load with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import inspect
import io
import json
import os
import pickle
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch_geometric.nn.aggr import AttentionalAggregation
from torch_geometric.utils import scatter

from matgnn import keys
from matgnn.artifacts import MODEL_FILE, WEIGHTS_FILE
from matgnn.data.structure import MAX_Z
from matgnn.errors import UnsafeArtifactError, UserError

#: buffers newer than some saved models; absent from a file, they keep their neutral default
OPTIONAL_BUFFERS = {"element_baseline"}

#: (module, class name) -> class of every model class that may be named in a model.json
_REGISTRY: dict[tuple[str, str], type] = {}


def register_model_class(cls: type) -> type:
    """Allow ``cls`` to be named in saved ``model.json`` files (matgnn's own classes only)."""
    if not cls.__module__.startswith("matgnn."):
        raise ValueError(f"only matgnn's own classes can be registered, not {cls.__module__}.{cls.__name__}")
    _REGISTRY[(cls.__module__, cls.__name__)] = cls
    return cls


def registered_class(module: Any, name: Any, where: str | Path) -> type:
    """The registered class ``module.name``; anything else is an :class:`UnsafeArtifactError`
    raised before anything is imported."""
    import matgnn.models  # noqa: F401 - defining the model classes fills the registry
    import matgnn.models.delta  # noqa: F401

    cls = _REGISTRY.get((module, name)) if isinstance(module, str) and isinstance(name, str) else None
    if cls is None:
        known = ", ".join(sorted(c for _, c in _REGISTRY))
        raise UnsafeArtifactError(f"{where} names class {module}.{name}, which is not one of matgnn's model classes "
                                  f"({known}); refused: a model folder is data and cannot name code to run")
    return cls


class ModelSettings(BaseModel):
    """Settings every model takes; each model's own config class (``config_class``) adds its
    fields and fixes ``name``, so a setting a model does not use is an error, never dropped."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("cgcnn", description="the model (each config class fixes it)")
    hidden: int = Field(64, ge=1, description="trunk width (CGCNN's published atom_fea_len is 64)")
    layers: int = Field(3, ge=1, description="message-passing layers (interaction blocks)")
    dropout: float = Field(0.0, ge=0, lt=1)
    pooling: Literal["mean", "sum", "attention"] = "mean"
    head_hidden: int = Field(128, ge=1)

    def constructor_args(self) -> dict[str, Any]:
        """Keyword arguments of the model class (everything but ``name``)."""
        return self.model_dump(exclude={"name"})


class Head(nn.Module):
    """An MLP mapping trunk features to one value per graph (after pooling) or per atom."""

    def __init__(self, in_dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.Softplus(), nn.Dropout(dropout),
                                 nn.Linear(hidden, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.mlp(h).squeeze(-1)


class MatgnnModel(nn.Module):
    """A shared trunk (``node_features``) and one head per target.

    Subclasses implement :meth:`node_features` (per-atom trunk features of a batch) and
    call ``super().__init__(heads=..., trunk_dim=..., ...)``. ``heads`` is a list of
    dicts ``{"name", "level": "graph"|"node"}``. Targets are predicted in normalised
    units and converted back with the per-head mean/std stored as buffers.
    """

    #: Bump when the meaning of saved weights changes; loading an older file warns.
    VERSION = 1
    #: the pydantic class of ``model:`` settings this model takes (see :mod:`matgnn.models`)
    config_class: type[ModelSettings] = ModelSettings

    @classmethod
    def training_statistics(cls, records: Iterable[dict[str, Any]]) -> dict[str, Any]:
        """Constructor arguments computed from the training graphs' records (the statistics
        hook: PNA's degree histogram); none by default. Called only when the run builds the
        model itself (a transferred model keeps its source's)."""
        return {}

    def __init__(self, heads: list[dict[str, Any]], trunk_dim: int, head_hidden: int = 128,
                 pooling: str = "mean", dropout: float = 0.0) -> None:
        super().__init__()
        if not heads:
            raise ValueError("a model needs at least one head")
        self.head_specs = [{"name": h["name"], "level": h.get("level", "graph"),
                            "transform": h.get("transform", "none"), "baseline": h.get("baseline", "none")}
                           for h in heads]
        bad = [h["name"] for h in self.head_specs if h["baseline"] not in ("none", "element_mean")
               or (h["baseline"] == "element_mean" and h["level"] != "node")]
        if bad:
            raise ValueError(f"head {bad[0]!r}: baseline must be 'none' or, for node heads, 'element_mean'")
        bad = [h["transform"] for h in self.head_specs if h["transform"] not in ("none", "log")]
        if bad:
            raise ValueError(f"unknown target transform {bad[0]!r}; use 'none' or 'log'")
        if pooling not in ("mean", "sum", "attention"):
            raise ValueError(f"unknown pooling {pooling!r}; use mean, sum or attention")
        self.pooling = pooling
        self.attention_pool = (AttentionalAggregation(nn.Linear(trunk_dim, 1)) if pooling == "attention" else None)
        self.heads = nn.ModuleDict({h["name"]: Head(trunk_dim, head_hidden, dropout) for h in self.head_specs})
        self.register_buffer("target_mean", torch.zeros(len(heads)))
        self.register_buffer("target_std", torch.ones(len(heads)))
        #: per-head, per-element reference added to node predictions (``baseline: element_mean``)
        self.register_buffer("element_baseline", torch.zeros(len(heads), MAX_Z + 1))

    # -- saving -----------------------------------------------------------------
    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__module__.startswith("matgnn."):
            register_model_class(cls)
        init = cls.__init__

        def wrapped(self, *args: Any, **kw: Any) -> None:
            if not hasattr(self, "init_args"):
                bound = inspect.signature(init).bind(self, *args, **kw)
                bound.apply_defaults()
                args_ = dict(bound.arguments)
                args_.pop("self")
                object.__setattr__(self, "init_args", args_)
            init(self, *args, **kw)

        wrapped.__signature__ = inspect.signature(init)  # type: ignore[attr-defined]
        wrapped.__doc__ = init.__doc__
        cls.__init__ = wrapped  # type: ignore[method-assign]

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write ``model.json`` (class, module, version, constructor arguments) and
        ``state.pt`` (weights and normalisation buffers) into folder ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        info = {"class": type(self).__name__, "module": type(self).__module__, "version": self.VERSION,
                "init_args": self.init_args, "matgnn_version": _package_version(), **(extra or {})}
        write_atomic(path / MODEL_FILE, json.dumps(info, indent=1).encode())
        save_tensors(self.state_dict(), path / WEIGHTS_FILE)
        return path

    def train(self, mode: bool = True) -> MatgnnModel:
        """``nn.Module.train``, except that modules of frozen layer groups (``frozen_modules``,
        set by :func:`matgnn.training.transfer.freeze`) stay in eval mode: frozen means their
        normalisation statistics do not move either."""
        super().train(mode)
        for name in getattr(self, "frozen_modules", ()):
            self.get_submodule(name).eval()
        return self

    # -- normalisation ----------------------------------------------------------
    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor,
                          element_baseline: torch.Tensor | None = None) -> None:
        self.target_mean.copy_(mean)
        self.target_std.copy_(std)
        if element_baseline is not None:
            self.element_baseline.copy_(element_baseline)

    # -- forward ----------------------------------------------------------------
    def node_features(self, batch: Any) -> torch.Tensor:
        raise NotImplementedError

    def pool(self, h: torch.Tensor, batch: Any) -> torch.Tensor:
        if self.attention_pool is not None:  # softmax-weighted mean over each graph's atoms
            return self.attention_pool(h, batch[keys.BATCH], dim_size=batch.num_graphs)
        return scatter(h, batch[keys.BATCH], dim=0, dim_size=batch.num_graphs, reduce=self.pooling)

    def transform_target(self, k: int, y: torch.Tensor, batch: Any = None) -> torch.Tensor:
        """Head ``k``'s label in the space the model is trained in (before standardising):
        ``log1p`` for ``transform: log`` (positive, skewed targets); minus each atom's
        element reference for ``baseline: element_mean`` (needs the batch); else unchanged."""
        spec = self.head_specs[k]
        if spec["transform"] == "log":
            return torch.log1p(y)
        if spec["baseline"] == "element_mean":
            return y - self.element_baseline[k][batch[keys.Z]]
        return y

    def forward_normalized(self, batch: Any) -> dict[str, torch.Tensor]:
        """Predictions in normalised units (what the losses compare)."""
        h = self.node_features(batch)
        out: dict[str, torch.Tensor] = {}
        pooled = None
        for spec in self.head_specs:
            if spec["level"] == "graph":
                if pooled is None:
                    pooled = self.pool(h, batch)
                out[spec["name"]] = self.heads[spec["name"]](pooled)
            else:
                out[spec["name"]] = self.heads[spec["name"]](h)
        return out

    def denormalize(self, k: int, v: torch.Tensor, batch: Any = None) -> torch.Tensor:
        """Head ``k``'s normalised prediction in the target's own units (node heads with an
        element baseline need the batch)."""
        spec = self.head_specs[k]
        v = v * self.target_std[k] + self.target_mean[k]
        if spec["baseline"] == "element_mean":
            v = v + self.element_baseline[k][batch[keys.Z]]
        return torch.expm1(v) if spec["transform"] == "log" else v

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        """Predictions in the targets' own units."""
        out = self.forward_normalized(batch)
        return {spec["name"]: self.denormalize(k, out[spec["name"]], batch) for k, spec in enumerate(self.head_specs)}


def write_atomic(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so a full disk or a
    kill never leaves a truncated file where a good one was (the OSError names the path)."""
    tmp = path.with_name(f".{path.name}.part-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_tensors(obj: Any, path: Path) -> None:
    """``torch.save`` of tensors and plain values, serialised in memory and written with
    :func:`write_atomic` (torch's own file writer hides the OS error of a full disk)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_atomic(Path(path), buf.getbuffer())


def read_model_info(path: Path) -> dict[str, Any]:
    """``model.json`` of model folder ``path`` as a dict (a bad file is a :class:`UserError`)."""
    try:
        info = json.loads((path / MODEL_FILE).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path / MODEL_FILE}: not a matgnn model file (not JSON: {e})") from None
    if not isinstance(info, dict):
        raise UserError(f"{path / MODEL_FILE}: not a matgnn model file (not a JSON object)")
    return info


def _package_version() -> str:
    from matgnn import __version__

    return __version__


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> MatgnnModel:
    """Rebuild a saved model from its folder, a run folder holding ``model/``, or a model's name
    (shipped, or a folder of ``$MATGNN_MODELS``): see :mod:`matgnn.artifacts`."""
    from matgnn.artifacts import model_folder

    path = Path(path)
    if not (path / MODEL_FILE).is_file():  # a run folder, a shipped name, a name in $MATGNN_MODELS
        if not path.exists() and ("/" in str(path) or path.is_absolute()):
            raise FileNotFoundError(f"{path}: no such run or model folder")
        path = model_folder(path)
    info = read_model_info(path)
    cls = registered_class(info.get("module"), info.get("class"), path / MODEL_FILE)
    if info.get("version") != getattr(cls, "VERSION", None):
        warnings.warn(f"{path} was saved by {info['class']} version {info.get('version')}; "
                      f"this code has version {cls.VERSION}", stacklevel=2)
    init_args = info.get("init_args")
    if not isinstance(init_args, dict):
        raise UserError(f"{path / MODEL_FILE}: 'init_args' is not a mapping of constructor arguments")
    try:
        model = cls(**init_args)
    except (TypeError, ValueError, KeyError) as e:
        raise UserError(f"{path / MODEL_FILE}: its constructor arguments do not fit {info['class']}: {e}") from None
    try:
        state = torch.load(path / WEIGHTS_FILE, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no {WEIGHTS_FILE} beside {MODEL_FILE}") from None
    except pickle.UnpicklingError:
        raise UnsafeArtifactError(f"{path / WEIGHTS_FILE}: refused, it holds more than tensors "
                                  "(torch.load with weights_only=True failed)") from None
    except RuntimeError as e:
        raise UserError(f"{path / WEIGHTS_FILE}: not a readable weights file: {str(e).splitlines()[0]}") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    # buffers added after a model was saved keep their neutral defaults (zeros: no element baseline)
    missing = [k for k in missing if k not in OPTIONAL_BUFFERS]
    if missing or unexpected:
        raise RuntimeError(f"{path / WEIGHTS_FILE} does not fit {info['class']}: missing {missing}, "
                           f"unexpected {unexpected}")
    model.eval()
    return model
