"""The package's layers hold (issue 22), checked on the source itself with ``ast``:

- ``anchorlens/hooks/`` (the hook plumbing) imports nothing above it: only other ``hooks`` modules and the leaf
  modules in ``FOUNDATION``;
- Hugging Face / TransformerLens internals are read only in ``hooks/``, ``models/`` and ``random_models.py``: no other module imports
  ``transformers`` or a TransformerLens module outside its public utilities (``PUBLIC_TL``), and none reads the
  bridge's gateways to the Hugging Face modules (``INTERNAL_ATTRIBUTES``);
- no import cycle between modules (every import counts, those inside functions too; only imports under
  ``if TYPE_CHECKING:`` are left out, since they never run).

Each rule is also run on a small planted package in ``tmp_path`` that breaks it, so a checker that finds
nothing cannot pass unnoticed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "anchorlens"

#: Leaf modules hooks/ may import: they import nothing of anchorlens but each other.
FOUNDATION = {"anchorlens.errors", "anchorlens.versions", "anchorlens.heads", "anchorlens.progress"}
#: Modules that may read model internals: the hook layer and the model loader.
INTERNALS_ALLOWED = ("anchorlens.hooks", "anchorlens.models", "anchorlens.random_models")
#: TransformerLens's public utilities and tools, which any module may use (kept libraries, issue 22).
PUBLIC_TL = ("transformer_lens.utilities", "transformer_lens.tools")
#: The bridge's attributes that hand out the Hugging Face modules behind it.
INTERNAL_ATTRIBUTES = {"original_model", "original_component"}

# Known exceptions, each with its reason; the lead removes the h-* ones when those branches land.
HOOKS_EXCEPTIONS: set[str] = set()
INTERNALS_EXCEPTIONS = {
    # Model organisms build or plant weights in the Hugging Face modules themselves: that is what they are for.
    "anchorlens.mediation.organism",
    "anchorlens.flow.organism",
    "anchorlens.receivers.organism",
}


def modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """``{dotted name: (file, is a package __init__)}`` of every module under ``root`` (a package folder)."""
    found = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for statement in node.body for n in ast.walk(statement))
    return skipped


def imports(name: str, path: Path, is_package: bool, known: set[str] | None = None) -> set[str]:
    """Every module ``name`` imports, as absolute dotted names. ``from a import b`` gives ``a`` and ``a.b``; with
    ``known`` (the package's modules) only ``a.b`` when that is a known module, since ``b`` is then a submodule
    and not a name defined in ``a`` (both import ``a``'s ``__init__`` first, as every import of a submodule does)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_nodes(tree)
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: climb from this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            names = {f"{module}.{alias.name}" for alias in node.names}
            if known is None or not names <= known:
                found.add(module)
            found.update(names)
    return found


def internal_attributes(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr in INTERNAL_ATTRIBUTES}


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (an import of ``a.b.c`` names ``a.b.c``, not ``a`` or ``a.b``)."""
    found = modules(root)
    graph = {}
    for name, (path, is_package) in found.items():
        graph[name] = {m for m in imports(name, path, is_package, set(found)) if m in found and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def hooks_violations(root: Path, top: str) -> dict[str, set[str]]:
    """Modules of ``top.hooks`` -> the package's modules above the hook layer that they import."""
    found = modules(root)
    foundation = {f.replace("anchorlens", top, 1) for f in FOUNDATION}
    bad = {}
    for name, (path, is_package) in found.items():
        if name.startswith(f"{top}.hooks"):
            above = {m for m in imports(name, path, is_package, set(found))
                     if m in found and not m.startswith(f"{top}.hooks") and m not in foundation and m != top}
            if above:
                bad[name] = above
    return bad


def internals_violations(root: Path, top: str) -> dict[str, set[str]]:
    allowed = tuple(a.replace("anchorlens", top, 1) for a in INTERNALS_ALLOWED)
    bad = {}
    for name, (path, is_package) in modules(root).items():
        if name.startswith(allowed):
            continue
        found = {m for m in imports(name, path, is_package)
                 if m.split(".")[0] == "transformers"
                 or (m.split(".")[0] == "transformer_lens" and m != "transformer_lens" and not m.startswith(PUBLIC_TL))}
        found |= {f".{a}" for a in internal_attributes(path)}
        if found:
            bad[name] = found
    return bad


# ------------------------------------------------------------------------------------------------ the package


def test_hooks_import_no_method_package():
    bad = hooks_violations(PACKAGE, "anchorlens")
    assert set(bad) - HOOKS_EXCEPTIONS == set(), {k: v for k, v in bad.items() if k not in HOOKS_EXCEPTIONS}


def test_foundation_modules_are_leaves():
    graph = import_graph(PACKAGE)
    for name in FOUNDATION:
        assert graph[name] <= FOUNDATION, f"{name} imports {graph[name] - FOUNDATION}: hooks/ may import it, keep it a leaf"


def test_model_internals_only_in_hooks_and_models():
    bad = internals_violations(PACKAGE, "anchorlens")
    assert set(bad) - INTERNALS_EXCEPTIONS == set(), {k: v for k, v in bad.items() if k not in INTERNALS_EXCEPTIONS}


def test_no_import_cycle():
    assert cycles(import_graph(PACKAGE)) == []


# ------------------------------------------------------------------------------- the checkers catch what they should


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


@pytest.fixture
def planted(tmp_path):
    return _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/errors.py": "",
        "pkg/hooks/__init__.py": "from pkg.errors import X\n",
        "pkg/hooks/leak.py": "def f():\n    from pkg.method.a import g\n",  # lazy import from hooks to a method
        "pkg/method/__init__.py": "",
        "pkg/method/a.py": "from . import b\nimport transformers.cache_utils\n",
        "pkg/method/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.method import c\n"
                           "def h(model):\n    from pkg.method.a import g\n    return model.original_model\n",
        "pkg/method/c.py": "from pkg.method import b\nfrom transformer_lens.utilities import get_act_name\n",
        "pkg/models.py": "import transformers\n",
    })


def test_checkers_find_planted_breaches(planted):
    graph = import_graph(planted)
    assert cycles(graph) == [["pkg.method.a", "pkg.method.b"]]  # b -> c only under TYPE_CHECKING: no cycle
    assert hooks_violations(planted, "pkg") == {"pkg.hooks.leak": {"pkg.method.a"}}
    assert internals_violations(planted, "pkg") == {
        "pkg.method.a": {"transformers.cache_utils"},
        "pkg.method.b": {".original_model"},
    }  # models.py may import transformers; c's public TransformerLens utility is fine
