"""What every loadable model is: a :class:`SavedModel`. Networks (:class:`~matgnn.models.base.MatgnnModel` and its
subclasses) and composites (delta, ensemble, reference models, fitted regressors) all inherit it, and none of
them repeats any of it:

- **constructor arguments captured once**: ``init_args`` is recorded from the outermost constructor call of any
  subclass (defaults applied), so a class never writes it by hand; a composite's arguments hold its parts'
  :func:`~matgnn.models.registry.model_spec`\\ s, so nested models are saved and rebuilt recursively;
- **registration**: defining a subclass in matgnn registers it with :mod:`matgnn.models.registry` (a class
  missing from ``ALLOWED`` is an error at import, so no model can be saved in a form that does not load);
- **save**: ``model.json`` (class, module, ``VERSION``, ``init_args``, matgnn's version and the caller's extra
  fields) and ``state.pt`` (every tensor), both written atomically; :func:`matgnn.models.loading.load_model`
  is the one way back;
- **heads**: ``head_specs``, the list of ``{"name", "level", ...}`` the model answers;
- **bound checks**: :meth:`SavedModel.bounded_heads` and :meth:`SavedModel.at_bound` (heads whose answer can sit
  at a log transform's bound; a composite answers for the parts whose answers it uses);
- **arguments added later**: ``ARGUMENTS_BEFORE``, what a saved ``model.json`` without them means
  (:func:`~matgnn.models.registry.saved_arguments`), so a new default never changes an old model;
- **batch fields**: ``batch_fields``, the extra fields the packer builds for this model (a class's, or an
  instance's own).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from matgnn.artifacts import MODEL_FILE, WEIGHTS_FILE, save_tensors, write_atomic
from matgnn.models.registry import register_model_class
from matgnn.version import __version__


class SavedModel(nn.Module):
    """The one contract of a model ``load_model`` can rebuild (see the module's docstring)."""

    #: bump when the meaning of saved weights changes; loading an older file warns
    VERSION = 1
    #: extra batch fields the packer builds for this model (:data:`matgnn.graphs.extras.BUILDERS`)
    batch_fields: tuple[str, ...] = ()
    #: the heads the model answers, each ``{"name", "level": "graph"|"node", ...}`` (an attribute or a property)
    head_specs: list[dict[str, Any]]
    #: the constructor arguments, captured by :meth:`__init_subclass__`'s wrapper
    init_args: dict[str, Any]
    #: constructor arguments added after models of this class were saved, with the value such a ``model.json``
    #: (which lacks them) stands for: the behaviour of the code that saved it, not today's default
    ARGUMENTS_BEFORE: dict[str, Any] = {}

    def __init_subclass__(cls, abstract: bool = False, **kwargs: Any) -> None:
        """``abstract=True``: a base of other models (:class:`~matgnn.models.base.MatgnnModel`), never saved itself,
        so not registered."""
        super().__init_subclass__(**kwargs)
        if cls.__module__.startswith("matgnn.") and not abstract:
            register_model_class(cls)
        init = cls.__dict__.get("__init__")
        if init is None:  # inherits its parent's (already wrapped) constructor
            return

        def wrapped(self, *args: Any, **kw: Any) -> None:
            if "init_args" not in self.__dict__:  # the outermost constructor of the call records its arguments
                bound = inspect.signature(init).bind(self, *args, **kw)
                bound.apply_defaults()
                captured = dict(bound.arguments)
                captured.pop("self")
                object.__setattr__(self, "init_args", captured)
            init(self, *args, **kw)

        wrapped.__signature__ = inspect.signature(init)  # type: ignore[attr-defined]
        wrapped.__doc__ = init.__doc__
        wrapped.__wrapped__ = init  # type: ignore[attr-defined]
        cls.__init__ = wrapped  # type: ignore[method-assign]

    def record_resolved(self, **arguments: Any) -> None:
        """Record constructor arguments whose value the constructor resolved itself (a default computed at run
        time, such as the version of a backbone's features), so that a reload rebuilds the same model and checks
        the same things. The one way a class adds to its captured ``init_args``."""
        unknown = sorted(set(arguments) - set(self.init_args))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no constructor arguments {unknown}")
        self.init_args.update(arguments)

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write ``model.json`` (class, module, version, constructor arguments, ``extra``) and ``state.pt``
        (weights and buffers) into folder ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        info = {"class": type(self).__name__, "module": type(self).__module__, "version": self.VERSION,
                "init_args": self.init_args, "matgnn_version": __version__, **(extra or {})}
        write_atomic(path / MODEL_FILE, json.dumps(info, indent=1).encode())
        save_tensors(self.state_dict(), path / WEIGHTS_FILE)
        return path

    def bounded_heads(self) -> list[str]:
        """The heads whose answer can sit at a log transform's bound (see :meth:`at_bound`); none by default."""
        return []

    def at_bound(self, batch: Any, out: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Per graph of ``batch``, for each of :meth:`bounded_heads`: whether the answer sat at its bound (a
        composite: whether the answer of a part it used did). ``out``: the model's own answers for ``batch`` when
        already computed. A model without such heads answers ``{}`` without running."""
        return {}
