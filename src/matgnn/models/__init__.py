"""Models, chosen by name from one registry; all read the same cached graphs.

Each model class owns its settings (``config_class``, a pydantic model with a fixed ``name``);
:data:`ModelConfig` is their union, discriminated by ``name`` (a zoo operator's name selects the
zoo model), so the ``model:`` section of a run config accepts exactly what the chosen model
takes: a setting it would not use is an error naming it.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Discriminator, Tag, TypeAdapter

from matgnn.models.alignn import ALIGNN
from matgnn.models.backbones import backbone_models
from matgnn.models.base import MatgnnModel
from matgnn.models.cgcnn import CGCNN, CGConvNet
from matgnn.models.dimenet import DimeNetPP
from matgnn.models.loading import load_model
from matgnn.models.pna import PNA
from matgnn.models.schnet import SchNet
from matgnn.models.zoo import OPERATORS, ZooModel

#: the model a config without a model section, or a model section without a name, trains: the family with the
#: lowest mean normalised error on the task suite among those a plain install has (benchmarks/task_suite.py,
#: ``suite_choice`` in benchmarks/results/task_suite.json)
DEFAULT_MODEL = "pna"

#: name -> model class. Every zoo operator name (``gatv2conv``, ...) also names a model:
#: the zoo model with that operator. Each pretrained backbone's models come from its entry in
#: :data:`matgnn.packages.BACKBONES`.
MODELS: dict[str, type[MatgnnModel]] = {
    "cgcnn": CGCNN,
    "cgconv_net": CGConvNet,
    "schnet": SchNet,
    "pna": PNA,
    "dimenet++": DimeNetPP,
    "zoo": ZooModel,
    "alignn": ALIGNN,
    **backbone_models(),
}


def model_names() -> list[str]:
    return sorted(MODELS) + [f"{op}" for op in OPERATORS if op not in MODELS]


def model_class(name: str) -> type[MatgnnModel]:
    """The class a registry name stands for (a zoo operator name means the zoo model)."""
    if name in MODELS:
        return MODELS[name]
    if name in OPERATORS:
        return ZooModel
    raise ValueError(f"unknown model {name!r}; available: {', '.join(model_names())}")


#: settings a flat config of matgnn < 0.2 wrote for every model, at the values it used when the
#: model ignored them: dropped on reading (any other value of a setting the model lacks is an error)
LEGACY_DEFAULTS = {"operator": None, "atom_features": "cgcnn", "n_rbf": 40}


def _model_tag(value: Any) -> str:
    name = value.get("name", DEFAULT_MODEL) if isinstance(value, dict) else getattr(value, "name", DEFAULT_MODEL)
    return "zoo" if name in OPERATORS else str(name)


#: the ``model:`` section of a run config: one class per model, chosen by ``name``
ModelConfig = Annotated[
    Union[tuple(Annotated[cls.config_class, Tag(name)] for name, cls in MODELS.items())],  # noqa: UP007
    Discriminator(_model_tag)]


def model_settings(data: dict[str, Any]) -> dict[str, Any]:
    """A ``model:`` mapping with the legacy defaults the chosen model does not take removed."""
    if not isinstance(data, dict):
        return data
    tag = _model_tag(data)
    cls = MODELS.get(tag)
    if cls is None:
        return data
    fields = cls.config_class.model_fields
    return {k: v for k, v in data.items() if k in fields or k not in LEGACY_DEFAULTS or v != LEGACY_DEFAULTS[k]}


def build_model(settings: Any, heads: list[dict[str, Any]], cutoff: float, **kwargs: Any) -> MatgnnModel:
    """The model ``settings`` describe (one of the :data:`ModelConfig` classes, or a model name
    with its settings among ``kwargs``), with ``heads``, the graphs' ``cutoff`` and constructor
    arguments computed from the training graphs (``training_statistics``, e.g. PNA's ``deg``).
    A setting the model does not take is an error."""
    if isinstance(settings, str):
        cls = model_class(settings)
        fields = cls.config_class.model_fields
        own = {k: v for k, v in kwargs.items() if k in fields}
        kwargs = {k: v for k, v in kwargs.items() if k not in fields}
        settings = TypeAdapter(ModelConfig).validate_python({"name": settings, **own})
    cls = model_class(settings.name)
    return cls(heads=heads, cutoff=cutoff, **settings.constructor_args(), **kwargs)


__all__ = ["MODELS", "MatgnnModel", "ModelConfig", "OPERATORS", "build_model", "load_model", "model_class",
           "model_names", "model_settings"]
