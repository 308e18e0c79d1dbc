"""The shape of the package, checked: no import circles (module-level or inside functions; only
``if TYPE_CHECKING:`` imports are exempt), a thin training entry, every model with its own config
class, and every model class loadable from the registry."""

from __future__ import annotations

import ast
from pathlib import Path

import matgnn
from matgnn.models import MODELS, model_class
from matgnn.models.base import MatgnnModel, ModelSettings
from matgnn.models.registry import ALLOWED

SRC = Path(matgnn.__file__).resolve().parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST, modules: set[str]) -> set[str]:
    """matgnn modules imported anywhere in ``tree`` (``from a import b`` counts as a.b when that
    is a module), except under ``if TYPE_CHECKING:``."""
    out: set[str] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if _is_type_checking(node):
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("matgnn"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in modules else node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("matgnn"))
        stack.extend(ast.iter_child_nodes(node))
    return {m for m in out if m in modules}


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    return {m: _imports(ast.parse(p.read_text()), set(files)) - {m} for m, p in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    assert cycles(import_graph()) == []


#: the layer order (docs/design/layout.md): a module may import its own package and the layers before it, never
#: one after it; packages of one layer do not import each other
LAYERS: list[tuple[str, ...]] = [
    ("keys", "errors", "version", "artifacts", "runtime", "progress", "packages", "pretrained"),  # core
    ("data",), ("graphs",), ("models",), ("config",), ("evaluation",), ("training",), ("prediction",),
    ("baselines",), ("commands", "ase"), ("cli",), ("__main__", ""),  # "": matgnn/__init__, the public API
]


def layer_of(module: str) -> tuple[int, str]:
    part = module.split(".")[1] if "." in module else ""
    for k, names in enumerate(LAYERS):
        if part in names:
            return k, part
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS and docs/design/layout.md")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``a -> b`` for every import of a module ``b`` of a later layer (or another package of the same layer)."""
    bad = []
    for module, deps in sorted(graph.items()):
        (la, pa) = layer_of(module)
        for dep in sorted(deps):
            (lb, pb) = layer_of(dep)
            if lb > la or (lb == la and pa != pb and la != 0):
                bad.append(f"{module} -> {dep}")
    return bad


def test_imports_point_down_the_layers_only():
    assert upward_imports(import_graph()) == []


def test_the_layer_check_finds_an_upward_import():
    assert upward_imports({"matgnn.models.x": {"matgnn.prediction.y"}, "matgnn.prediction.y": set(),
                           "matgnn.training.a": {"matgnn.evaluation.b"}, "matgnn.evaluation.b": set(),
                           "matgnn.commands.c": {"matgnn.ase"}, "matgnn.ase": set()}) == \
        ["matgnn.commands.c -> matgnn.ase", "matgnn.models.x -> matgnn.prediction.y"]


def test_package_level_graph_has_no_cycle():
    """Packages as nodes (matgnn.data, matgnn.graphs, ...): no two import each other, directly or round a loop."""
    graph = import_graph()
    packages: dict[str, set[str]] = {}
    for module, deps in graph.items():
        a = ".".join(module.split(".")[:2])
        packages.setdefault(a, set()).update(".".join(d.split(".")[:2]) for d in deps)
    assert cycles({p: d - {p} for p, d in packages.items()}) == []


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_training_entry_is_thin():
    lines = (SRC / "training" / "run.py").read_text().count("\n")
    assert lines < 300, f"training/run.py has {lines} lines"


def test_every_model_has_its_own_config_class_and_is_loadable():
    for name in MODELS:
        cls = model_class(name)
        assert cls.config_class is not ModelSettings, name
        assert issubclass(cls.config_class, ModelSettings)
        assert cls.__name__ in ALLOWED[cls.__module__], name
    # every model class defined in the package is listed (listed classes register on import)
    for module, names in ALLOWED.items():
        mod = __import__(module, fromlist=list(names))
        for n in names:
            assert isinstance(getattr(mod, n), type)
    assert all(issubclass(model_class(n), MatgnnModel) for n in MODELS)


def test_config_defaults_build_the_python_defaults():
    """One home for each model's defaults: ``model: {name: NAME}`` in a config and ``Class(heads)`` in Python
    build the same network — every constructor default equals its config class's (``freeze``: None and [] both
    freeze nothing; the zoo model's operator comes from the name a config gives)."""
    import inspect

    from matgnn.models import MODELS

    for name, cls in sorted(MODELS.items()):
        signature = inspect.signature(cls.__init__)
        for key, field in cls.config_class.model_fields.items():
            if key == "name" or key not in signature.parameters:
                continue
            python = signature.parameters[key].default
            config = field.get_default(call_default_factory=True)
            if python is inspect.Parameter.empty:
                continue
            assert python == config or (python is None and config in ([], None)) or name == "zoo", \
                (name, key, python, config)
