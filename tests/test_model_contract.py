"""One model contract, checked: every shipped model and every model folder written before the saved-model base
existed loads and gives the answers recorded in ``tests/data/shipped_answers.json`` (``tests/shipped_answers.py``
recorded them), bit for bit where the CPU is of the kind that recorded them."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import pytest

import matgnn
from tests.shipped_answers import ANSWERS, answers, cpu_kind
from tests.test_architecture import _module_name


@pytest.fixture(scope="module")
def now_and_then():
    pytest.importorskip("chgnet")
    pytest.importorskip("sevenn")
    recorded = json.loads(ANSWERS.read_text())
    return answers(), recorded


def test_every_shipped_and_saved_model_gives_its_recorded_answers(now_and_then):
    now, recorded = now_and_then
    assert set(now) == set(recorded["answers"]), "the shipped models changed: record their answers on purpose"
    exact = recorded["cpu"] == cpu_kind()
    for model, rows in recorded["answers"].items():
        assert set(now[model]) == set(rows), model
        for sid, heads in rows.items():
            assert set(now[model][sid]) == set(heads), (model, sid)
            for head, value in heads.items():
                got, want = np.asarray(now[model][sid][head]), np.asarray(value)
                if exact:
                    assert np.array_equal(got, want), (model, sid, head, got, want)
                else:  # another CPU: float32 sums in another order, a few units of the 5th digit (more for an
                    # ensemble's σ, a difference of near-equal members); a changed model moves answers far more
                    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=f"{model} {sid} {head}")


def test_every_loadable_class_is_a_saved_model_and_none_copies_the_contract():
    """One saved-model base: every class a model.json may name inherits it; no class writes its own ``save``,
    ``init_args`` or registration, and no composite borrows another class's methods."""
    import ast
    import importlib

    from matgnn.models.registry import ALLOWED
    from matgnn.models.saved import SavedModel
    from tests.test_architecture import SRC

    for module, names in ALLOWED.items():
        for name in names:
            cls = getattr(importlib.import_module(module), name)
            assert issubclass(cls, SavedModel), f"{module}.{name}"
            assert "save" not in cls.__dict__, f"{module}.{name} defines its own save"
    for path in (SRC / "models").glob("*.py"):
        if path.name == "saved.py":
            continue
        text = path.read_text()
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                assert not any(ast.unparse(t).startswith("self.init_args") for t in targets), \
                    f"{path.name} writes init_args (record_resolved is the one way to add to it)"
        assert "MatgnnModel.save(" not in text and "@register_model_class" not in text, path.name
        assert 'getattr(model, "at_bound")' not in text and 'getattr(model, "bounded_heads")' not in text


def test_constructor_arguments_are_captured_once_and_nested_models_rebuild(tmp_path):
    """A composite's arguments hold its parts' specs, captured from the constructor call (defaults applied):
    saved and loaded, the rebuilt model has the same arguments, tensors and answers."""
    import torch

    from matgnn.models import model_class
    from matgnn.models.delta import DeltaModel
    from matgnn.models.ensemble import EnsembleModel
    from matgnn.models.loading import load_model

    heads = [{"name": "gap", "level": "graph"}]
    torch.manual_seed(0)
    a, b = model_class("cgcnn")(heads, hidden=8, layers=1), model_class("schnet")(heads, hidden=8, layers=1)
    assert a.init_args["hidden"] == 8 and a.init_args["pooling"] == "mean"  # defaults recorded too
    delta = DeltaModel.of(a, b)
    assert delta.init_args["base"]["class"] == "CGCNN" and delta.init_args["delta"]["init_args"]["hidden"] == 8
    ens = EnsembleModel.of([a, delta])
    for model, name in ((delta, "delta"), (ens, "ensemble")):
        again = load_model(model.save(tmp_path / name))
        assert again.init_args == json_round(model.init_args)
        assert type(again) is type(model)
        for (k1, v1), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items()):
            assert k1 == k2 and torch.equal(v1, v2)


def json_round(obj):
    return json.loads(json.dumps(obj))


def test_a_regressor_records_the_feature_version_it_was_fitted_on():
    pytest.importorskip("chgnet")
    from matgnn.models.backbones import frozen_features_model
    from matgnn.models.regressors import BackboneRegressor, graph_rows

    cols = graph_rows([np.zeros((3, 64))]).shape[1]
    model = BackboneRegressor.of([{"name": "gap"}], "chgnet", "linear", [np.zeros(cols + 1)])
    assert model.init_args["backbone_version"] == frozen_features_model("chgnet").current_version()


def test_one_backbone_registry_and_the_fast_package_table_agree():
    """The backbones are listed once (:data:`matgnn.packages.BACKBONES`): models, batch fields, baseline feature
    sets and package checks derive from it. ``matgnn models`` reads which package a folder needs without importing
    torch, from ``artifacts``' table: checked here against the model classes."""
    from matgnn import artifacts
    from matgnn.baselines.descriptors import FEATURE_SETS
    from matgnn.graphs.extras import BUILDERS
    from matgnn.models import MODELS
    from matgnn.packages import BACKBONES

    assert set(FEATURE_SETS) == {"descriptors", *BACKBONES}
    assert {f"{name}_features" for name in BACKBONES} <= set(BUILDERS)
    assert {f"{name}_graphs" for name, e in BACKBONES.items() if e.fine_tuned} <= set(BUILDERS)
    assert artifacts._BACKBONE_PACKAGES == {name: e.package for name, e in BACKBONES.items()}
    needs = {cls.__name__: cls.backbone_package for cls in MODELS.values() if getattr(cls, "backbone_package", "")}
    assert needs == artifacts._CLASS_PACKAGES
    for name, entry in BACKBONES.items():
        for model, cls_name in entry.models.items():
            assert MODELS[model].__name__ == cls_name and MODELS[model].__module__ == entry.module


#: modules that may name a backbone in code besides its own file and the registry, and why
BACKBONE_NAMED_ELSEWHERE = {
    "chgnet": dict.fromkeys(("matgnn.baselines.run", "matgnn.cli.main"), (
        "the zero-shot and fine-tuned CHGNet magnetic-moment baselines (`matgnn baseline chgnet|chgnet_finetuned`, "
        "CHGNet's own recipe)")),
}


def _code_names(tree: ast.AST) -> set[str]:
    """Identifiers, imported names and the string constants that are names (``"sevennet"``, a module path) of
    ``tree``: prose in docstrings, help texts and messages may name anything."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            out.add(node.id)
        elif isinstance(node, ast.Attribute):
            out.add(node.attr)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            out.update(a.name for a in node.names)
            out.add(getattr(node, "module", None) or "")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if re.fullmatch(r"[\w.]+", node.value):  # a name used as data, not prose in a message
                out.update(node.value.split("."))
    return out


def test_a_backbone_is_one_file_and_a_registry_line():
    """Adding a backbone is ``models/backbones/<name>.py`` plus a line in ``matgnn.packages.BACKBONES``: no other
    module's code names a backbone (its name, package, title or classes, as an identifier or a name-like string), except
    the modules listed with their reason; and a backbone's file holds its feature store, fields and models."""
    from matgnn.graphs.backbone_features import FEATURE_STORES
    from matgnn.graphs.extras import BUILDERS
    from matgnn.packages import BACKBONES

    src = Path(matgnn.__file__).resolve().parent
    files = {_module_name(p): p for p in src.rglob("*.py")}
    found = []
    for name, entry in BACKBONES.items():
        words = {name, entry.package, entry.title, *entry.models, *entry.models.values()}
        words_lower = {w.lower() for w in words}
        allowed = {entry.module, "matgnn.packages", *BACKBONE_NAMED_ELSEWHERE.get(name, {})}
        for module, path in files.items():
            if module in allowed:
                continue
            names = _code_names(ast.parse(path.read_text()))
            hits = sorted(n for n in names if n.lower() in words_lower or name in n.lower().split("_"))
            if hits:
                found.append(f"{module}: {hits}")
        assert FEATURE_STORES[name].__module__ == entry.module
        assert BUILDERS[f"{name}_features"].__module__ == entry.module
    assert found == []


def test_model_folders_naming_the_backbones_old_module_load_at_its_new_home():
    """Model folders written before the backbones had a file each name ``matgnn.models.backbones`` (every shipped
    backbone model does): the registry finds those classes at their new home, and nothing else through that name."""
    from matgnn.errors import UnsafeArtifactError
    from matgnn.models import MODELS
    from matgnn.models.registry import registered_class
    from matgnn.packages import BACKBONES

    for entry in BACKBONES.values():
        for model, cls_name in entry.models.items():
            assert registered_class("matgnn.models.backbones", cls_name, "old model.json") is MODELS[model]
    with pytest.raises(UnsafeArtifactError):
        registered_class("matgnn.models.backbones", "FrozenFeaturesModel", "old model.json")
    # the shipped folders are unchanged (their nested backbone specs name the old module) and load (above)
    shipped = (Path(matgnn.__file__).parent / "pretrained" / "bandgap-2d-sevennet" / "model.json").read_text()
    assert '"module": "matgnn.models.backbones"' in shipped
