"""Transfer learning: start a run from another run's (or a shipped) model, freeze layer groups,
replace or keep heads, and measure how far each group moved.

Layer groups are named the same for every model family: ``embedding`` (atom embedding, learned
edge bases), ``conv_k`` (message-passing layer k with its norm), ``readout`` (DimeNet++'s output
blocks, attention pooling) and ``head`` (the per-target MLPs). Freeze policies, the seed
research's set:

- ``none``: fine-tune every weight;
- ``all_but_embedding_conv0``: train the embedding, the first convolution and the heads;
- ``all_but_embedding``: train the embedding and the heads;
- ``trunk``: train the heads alone;
- or an explicit list of groups to freeze.

Two-phase fine-tuning (phase 1 with the embedding frozen, phase 2 everything at a lower learning
rate) is :func:`matgnn.training.transfer.finetune` with ``two_phase``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from matgnn.errors import UserError
from matgnn.models.base import MatgnnModel
from matgnn.models.loading import load_model
from matgnn.models.registry import saved_arguments

FREEZE_POLICIES: dict[str, tuple[str, ...] | None] = {
    "none": None,
    "all_but_embedding_conv0": ("embedding", "conv_0", "head"),
    "all_but_embedding": ("embedding", "head"),
    "trunk": ("head",),
}
#: the heads' training statistics (:mod:`matgnn.models.targets`): a transferred model computes its own
TARGET_STATISTICS = "targets."


def layer_groups(model: MatgnnModel) -> dict[str, list[str]]:
    """Group name → the model's parameter names in it (each model knows its groups:
    :meth:`MatgnnModel.layer_groups`)."""
    return model.layer_groups()


def model_dir(spec: str | Path) -> Path:
    """The model folder of a run folder, model folder or shipped model's name."""
    from matgnn.artifacts import model_folder

    return model_folder(spec)


def source_info(spec: str | Path) -> dict[str, Any]:
    """The saved ``model.json`` of the source model (class, constructor arguments, graphs)."""
    from matgnn.artifacts import read_model_info

    return read_model_info(model_dir(spec))


def check_source(spec: str | Path, info: dict[str, Any] | None = None) -> None:
    """A :class:`UserError` unless ``spec`` holds one trained network (checked from its ``model.json``, ``info`` when
    already read, before any run folder exists): a composite (delta, ensemble, reference) or a fitted regressor has no
    one network's layers to start from."""
    from matgnn.models.registry import registered_class

    info = info if info is not None else source_info(spec)
    cls = registered_class(info.get("module"), info.get("class"), model_dir(spec))
    if not issubclass(cls, MatgnnModel):
        raise UserError(f"{model_dir(spec)} holds a {cls.__name__}, not one trained network: transfer starts from a "
                        "network's layers (fine-tune a delta run's delta_model/ or an ensemble's member instead); "
                        "a model like this one can be the frozen base of delta learning (delta.base_model)")


def transferred_model(spec: str | Path, heads: list[dict[str, Any]], keep_heads: bool = False
                      ) -> tuple[MatgnnModel, dict[str, Any]]:
    """The source's architecture with ``heads``, initialised from the source's weights: every
    trunk weight, and (``keep_heads``) the head of a target the source also predicted. Returns
    the model and what was loaded and what is new."""
    info = source_info(spec)
    check_source(spec, info)
    source = load_model(model_dir(spec))
    cls = type(source)  # load_model admitted only a registered class
    args = dict(saved_arguments(cls, info["init_args"]), heads=heads)
    model = cls(**args)
    src_state = source.state_dict()
    own = model.state_dict()
    loaded, new = [], []
    for name, value in own.items():
        take = (name in src_state and src_state[name].shape == value.shape
                and not name.startswith(TARGET_STATISTICS)
                and (model.parameter_group(name) != "head" or keep_heads))
        if take:
            own[name] = src_state[name].clone()
            loaded.append(name)
        elif not name.startswith(TARGET_STATISTICS):
            new.append(name)
    model.load_state_dict(own)
    from matgnn.artifacts import fingerprint

    return model, {"source": str(model_dir(spec)), "source_sha256": fingerprint(model_dir(spec)),
                   "class": info["class"], "loaded": loaded, "new": new,
                   "graphs": info.get("graphs")}


def freeze(model: MatgnnModel, policy: str | list[str]) -> list[str]:
    """Freeze layer groups by a named policy or an explicit list of groups; returns the
    frozen groups. Frozen parameters get ``requires_grad = False``."""
    groups = layer_groups(model)
    if isinstance(policy, str):
        if policy not in FREEZE_POLICIES:
            raise ValueError(f"unknown freeze policy {policy!r}; use one of {list(FREEZE_POLICIES)} or a list of "
                             f"groups from {sorted(groups)}")
        train = FREEZE_POLICIES[policy]
        frozen = [] if train is None else [g for g in groups if g not in train]
    else:
        unknown = [g for g in policy if g not in groups]
        if unknown:
            raise ValueError(f"freeze: {unknown} are not layer groups of {type(model).__name__}; groups: {sorted(groups)}")
        frozen = list(policy)
    frozen += [g for g in sorted(model.fixed_groups()) if g in groups and g not in frozen]  # the model's own
    names = {n for g in frozen for n in groups[g]}
    for n, p in model.named_parameters():
        p.requires_grad_(n not in names)
    # a frozen group's normalisation statistics stay fixed too (BatchNorm running mean/var):
    # those modules stay in eval mode whenever the model trains
    model.frozen_modules = [name for name, mod in model.named_modules()
                            if name and isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)
                            and model.parameter_group(name + ".") in frozen]
    model.train(model.training)
    return frozen


def weight_shift(before: dict[str, torch.Tensor], model: MatgnnModel) -> dict[str, float]:
    """Relative change ‖Δw‖/‖w‖ of each layer group between ``before`` (a state dict) and
    the model now."""
    num: dict[str, float] = {}
    den: dict[str, float] = {}
    for name, p in model.named_parameters():
        g = model.parameter_group(name)
        w0 = before[name].float()
        num[g] = num.get(g, 0.0) + float((p.detach().float().cpu() - w0.cpu()).pow(2).sum())
        den[g] = den.get(g, 0.0) + float(w0.pow(2).sum())
    return {g: (num[g] ** 0.5) / max(den[g] ** 0.5, 1e-12) for g in num}


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the model's weights and buffers."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
