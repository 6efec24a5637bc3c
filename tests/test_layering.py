"""The package's layering: the import-linter contracts of pyproject.toml, no import cycle,
an ``__all__`` in every public module, and no private rnncells name used outside it."""

import ast
import importlib
import pathlib
import sys

import grimp
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("rnncells", "experiments", "configs")


@pytest.fixture(scope="module")
def graph():
    sys.path.insert(0, str(ROOT))
    try:
        return grimp.build_graph(*PACKAGES, cache_dir=None)
    finally:
        sys.path.remove(str(ROOT))


def test_the_import_linter_contracts_are_kept(monkeypatch):
    from importlinter.cli import lint_imports

    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def _cycles(graph):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in sorted(graph.find_modules_directly_imported_by(module)):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph.modules)))
    try:
        for module in sorted(graph.modules):
            if module not in index:
                visit(module)
    finally:
        sys.setrecursionlimit(limit)
    return found


def test_no_import_cycle_anywhere(graph):
    """Imports inside functions count: a cycle cannot hide in one."""
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    class Graph:
        modules = {"a", "b", "c"}

        def find_modules_directly_imported_by(self, module):
            return {"a": {"b"}, "b": {"c"}, "c": {"a"}}[module]

    assert _cycles(Graph()) == [["a", "b", "c"]]


def _public_modules():
    for path in sorted((ROOT / "rnncells").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not any(part.startswith("_") for part in parts):
            yield ".".join(parts)


@pytest.mark.parametrize("name", list(_public_modules()))
def test_every_public_module_says_what_it_exports(name):
    if name in ("rnncells.linen", "rnncells.nnx"):
        pytest.importorskip("flax")
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported, f"{name} has no __all__"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it lacks: {missing}"
    assert not [n for n in exported if n.startswith("_")], exported


def _private_uses(path):
    """(line, what) of each private rnncells module or name that ``path`` imports or reads."""
    tree = ast.parse(path.read_text(), str(path))
    aliases = {}  # local name -> rnncells module it stands for
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("rnncells"):
                    aliases[alias.asname or alias.name.split(".")[0]] = alias.name
                    if any(p.startswith("_") for p in alias.name.split(".")):
                        uses.append((node.lineno, alias.name))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rnncells"):
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                if any(p.startswith("_") for p in name.split(".")):
                    uses.append((node.lineno, name))
                aliases[alias.asname or alias.name] = name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            uses.append((node.lineno, f"{aliases[node.value.id]}.{node.attr}"))
    return uses


def test_nothing_outside_rnncells_uses_a_private_rnncells_name():
    found = {
        str(path.relative_to(ROOT)): uses
        for folder in ("experiments", "configs")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if (uses := _private_uses(path))
    }
    assert found == {}


def test_the_private_name_check_finds_one(tmp_path):
    path = tmp_path / "user.py"
    path.write_text(
        "import rnncells as rc\nfrom rnncells._engine import fused\nrc.cells._unregister\n"
        "x = rc._checks\n"
    )
    assert _private_uses(path) == [(2, "rnncells._engine.fused"), (4, "rnncells._checks")]


def test_the_layer_contract_is_checked_by_the_linter(tmp_path, monkeypatch):
    """A contract the code breaks fails the linter (so that the test above can fail)."""
    from importlinter.cli import lint_imports

    config = tmp_path / "contracts.toml"
    config.write_text(
        '[tool.importlinter]\nroot_packages = ["rnncells"]\n'
        "[[tool.importlinter.contracts]]\n"
        'name = "unrolling never imports the cells (it does)"\n'
        'type = "forbidden"\n'
        'source_modules = ["rnncells.unrolling"]\n'
        'forbidden_modules = ["rnncells.cells"]\n'
    )
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))
    assert lint_imports(config_filename=str(config), no_cache=True) == 1
