"""Rebuilding a saved model from its folder: ``model.json`` (class, constructor arguments) and
``state.pt`` (weights). Loading is data, never code: the class must be one of
:mod:`matgnn.models.registry`'s, refused before anything is imported otherwise, and the weights
load with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import torch

from matgnn.artifacts import (
    MODEL_FILE,
    WEIGHTS_FILE,
    ensemble_members,
    read_model_info,
    regular_file,
    resolve,
)
from matgnn.errors import UnsafeArtifactError, UserError
from matgnn.models.base import MatgnnModel
from matgnn.models.registry import registered_class, saved_arguments
from matgnn.models.targets import STEP_BUFFERS_MAY_BE_NON_FINITE, STEP_BUFFERS_OPTIONAL
from matgnn.packages import BACKBONES
from matgnn.runtime import keep_freed_memory

#: buffers newer than some saved models; absent from a file, they keep their neutral default (also inside a
#: composite: a delta model's ``delta.targets.0.steps.0.element_reference``)
OPTIONAL_BUFFERS = set(STEP_BUFFERS_OPTIONAL)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> MatgnnModel:
    """Rebuild a saved model from its folder, a run folder holding ``model/``, or a model's name
    (shipped, or a folder of ``$MATGNN_MODELS``): see :mod:`matgnn.artifacts`."""
    keep_freed_memory()  # inference from this model: see matgnn.runtime
    path = Path(path)
    if not (path / MODEL_FILE).is_file():  # a run folder, a shipped name, a name in $MATGNN_MODELS
        if not path.exists() and ("/" in str(path) or path.is_absolute()):
            raise FileNotFoundError(f"{path}: no such run or model folder")
        found = resolve(path)
        if found.kind == "ensemble":  # ensemble.json + member folders: one EnsembleModel
            from matgnn.models.ensemble import EnsembleModel

            members, recalibration = ensemble_members(found.path)
            return EnsembleModel.of([load_model(m, map_location) for m in members], recalibration).eval()
        path = found.model_dir
    info = read_model_info(path)
    cls = registered_class(info.get("module"), info.get("class"), path / MODEL_FILE)
    if info.get("version") != getattr(cls, "VERSION", None):
        warnings.warn(f"{path} was saved by {info['class']} version {info.get('version')}; "
                      f"this code has version {cls.VERSION}", stacklevel=2)
    init_args = info.get("init_args")
    if not isinstance(init_args, dict):
        raise UserError(f"{path / MODEL_FILE}: 'init_args' is not a mapping of constructor arguments")
    init_args = saved_arguments(cls, init_args)
    check_size_arguments(init_args, path / MODEL_FILE)
    if (path / WEIGHTS_FILE).exists():
        regular_file(path / WEIGHTS_FILE)
    try:
        state = torch.load(path / WEIGHTS_FILE, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no {WEIGHTS_FILE} beside {MODEL_FILE}") from None
    except pickle.UnpicklingError:
        raise UnsafeArtifactError(f"{path / WEIGHTS_FILE}: refused, it holds more than tensors "
                                  "(torch.load with weights_only=True failed)") from None
    except RuntimeError as e:
        raise UserError(f"{path / WEIGHTS_FILE}: not a readable weights file: {str(e).splitlines()[0]}") from None
    if not isinstance(state, dict):
        raise UserError(f"{path / WEIGHTS_FILE}: not a matgnn weights file (not a mapping of tensors)")
    bad = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
           and k.rsplit(".", 1)[-1] not in MAY_HOLD_NAN and not bool(torch.isfinite(v).all())]
    if bad:
        raise UserError(f"{path / WEIGHTS_FILE}: refused, tensor {bad[0]!r} holds non-finite values (NaN or inf)"
                        + (f" and {len(bad) - 1} more" if len(bad) > 1 else "") + "; such a model answers nothing useful")
    _check_shapes_before_building(cls, init_args, state, path)
    try:
        model = cls(**init_args)
    except UserError:
        raise  # already one line (an optional package missing, ...)
    except (TypeError, ValueError, KeyError) as e:
        raise UserError(f"{path / MODEL_FILE}: its constructor arguments do not fit {info['class']}: {e}") from None
    try:
        load_weights(model, state, f"{path / WEIGHTS_FILE}")
    except RuntimeError as e:  # tensors of other shapes than the constructor arguments make (an edited model.json)
        raise UserError(f"{path / WEIGHTS_FILE} does not fit the model {path / MODEL_FILE} describes: "
                        f"{' '.join(str(e).split())[:300]}") from None
    except UserError as e:  # weights the model cannot use (a fitted regressor's unreadable trees)
        raise UserError(f"{path / WEIGHTS_FILE}: {e}") from None
    model.eval()
    return model


#: tensors that may hold NaN or inf by design: not-yet-filled references, open ends of a training range
MAY_HOLD_NAN = {"backbone_magmom_weight", "backbone_magmom_bias", *STEP_BUFFERS_MAY_BE_NON_FINITE,
                "target_low", "target_high", "element_baseline"}  # the last three: as saved before heads' steps
#: upper bounds of size arguments in a model.json (a mailed folder must not allocate hundreds of GB or build
#: for minutes before its weights are found not to fit): any integer argument named like a depth, a width
_MAX_DEPTH = 64
_MAX_WIDTH = 16384


def check_size_arguments(init_args: object, where: Path) -> None:
    """Every integer argument named like a depth (``layers``, ``blocks``, ...) is at most 64, like a width
    (``hidden``, ``*_dim``, ...) at most 16384 — in nested models too; else a one-line :class:`UserError`."""
    def walk(x: object) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                if isinstance(v, int) and not isinstance(v, bool):
                    name = str(k).lower()
                    if any(w in name for w in ("layer", "block", "conv", "depth", "interaction")) and v > _MAX_DEPTH:
                        raise UserError(f"{where}: {k}: {v} is beyond the bound {_MAX_DEPTH} of a depth")
                    if any(w in name for w in ("hidden", "dim", "width", "channel", "basis", "rbf", "embed")) \
                            and v > _MAX_WIDTH:
                        raise UserError(f"{where}: {k}: {v} is beyond the bound {_MAX_WIDTH} of a width")
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(init_args)


#: classes whose constructor loads a pretrained network of its own (and keeps process-wide caches of it): never
#: built on the meta device, whose tensors would end up in those caches
_OWN_PRETRAINED = {entry.fine_tuned for entry in BACKBONES.values() if entry.fine_tuned}


def _loads_outside_weights(name: str, init_args: object) -> bool:
    """Whether the model, or a model nested in its arguments, loads a pretrained network when built."""
    if name in _OWN_PRETRAINED:
        return True
    if isinstance(init_args, dict):
        return any(_loads_outside_weights(str(v) if k == "class" else "", v) for k, v in init_args.items())
    if isinstance(init_args, list):
        return any(_loads_outside_weights("", v) for v in init_args)
    return False


def _check_shapes_before_building(cls: type, init_args: dict, state: dict, path: Path) -> None:
    """Build the model on PyTorch's ``meta`` device (shapes only, no memory) and compare its tensors' shapes
    with ``state``'s, so that constructor arguments that do not fit the weights are refused before anything
    is allocated. Models whose constructors cannot run on ``meta`` (a backbone loading its own wheel's
    weights) are checked after building, by :func:`load_weights`."""
    if _loads_outside_weights(cls.__name__, init_args):
        return
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            skeleton = cls(**init_args)
        want = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    except Exception:  # noqa: BLE001 - not buildable on meta: checked after building
        return
    for k, v in state.items():
        if k in want and isinstance(v, torch.Tensor) and tuple(v.shape) != want[k]:
            raise UserError(f"{path / WEIGHTS_FILE} does not fit the model {path / MODEL_FILE} describes: tensor "
                            f"{k!r} has shape {tuple(v.shape)}, the constructor arguments make {want[k]} (an edited "
                            "model.json?); nothing was built")


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``model.load_state_dict(state)``, except that buffers added after ``state`` was saved (a model folder or
    a training checkpoint of an earlier version) keep what the model holds: their neutral default, or in a
    resumed run what this run computed from its training split."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k.rsplit(".", 1)[-1] not in OPTIONAL_BUFFERS]
    if missing or unexpected:
        raise RuntimeError(f"{source} does not fit {type(model).__name__}: missing {missing}, "
                           f"unexpected {unexpected}")
