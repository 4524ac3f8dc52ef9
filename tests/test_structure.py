"""The house's shape, read from the code itself: which package may import which, no import
cycles, no module or function past its size, project imports at the top, public faces with
``__all__``, and a short README."""

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Packages of models: the run machinery (jaxbasics.train) imports none of them.
MODELS = ("jaxbasics.tasks", "jaxbasics.vqvae", "jaxbasics.prior")
# The functional core imports neither the shell's training nor its data.
CORE = ("jaxbasics.tensors", "jaxbasics.calculus", "jaxbasics.autodiff", "jaxbasics.vqvae")
CORE += ("jaxbasics.prior", "jaxbasics.docs", "jaxbasics.debug", "jaxbasics.checks")
SHELL = ("jaxbasics.train", "jaxbasics.tasks", "jaxbasics.data")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60  # lines of code: no blank lines, comments or docstring


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in sorted((ROOT / "jaxbasics").rglob("*.py"))}
SCRIPTS = sorted((ROOT / "experiments").rglob("*.py"))


def _imported(node: ast.AST) -> list[str]:
    """The project modules an import statement imports (a name that is a submodule counts)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    else:
        return []
    return [n for n in names if n in MODULES]


def _imports(path: Path) -> list[tuple[str, bool]]:
    """``(module, at the top)`` of every project import in ``path``; "at the top" is module
    level, ``if TYPE_CHECKING:`` included."""
    tree = ast.parse(path.read_text())
    top = set()
    for node in tree.body:
        top |= (
            {id(n) for n in ast.walk(node)}
            if not isinstance(node, ast.FunctionDef | ast.ClassDef)
            else set()
        )
    return [(m, id(node) in top) for node in ast.walk(tree) for m in _imported(node)]


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_the_run_machinery_imports_no_model():
    for name, path in MODULES.items():
        if _within(name, ("jaxbasics.train",)):
            bad = [m for m, _ in _imports(path) if _within(m, MODELS)]
            assert not bad, f"{name} imports {bad}"


def test_the_core_imports_neither_training_nor_data():
    for name, path in MODULES.items():
        if _within(name, CORE):
            bad = [m for m, _ in _imports(path) if _within(m, SHELL)]
            assert not bad, f"{name} imports {bad}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), and self-imports."""
    index, low, stack, on, out = {}, {}, [], set(), []

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
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_there_are_no_import_cycles():
    graph = {name: {m for m, _ in _imports(path)} - {name} for name, path in MODULES.items()}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("path", [*MODULES.values(), *SCRIPTS], ids=lambda p: p.name)
def test_project_modules_are_imported_at_the_top(path):
    tree = ast.parse(path.read_text())
    # The PyTorch twins are the optional torch extra: imported where used, as torch is.
    local = {p.stem for p in SCRIPTS}
    local -= {"torch_reference", "torch_prior_reference", "torch_maskgit_reference"}
    local |= {"benchmarks"}
    inner = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for sub in ast.walk(node):
                names = [a.name for a in getattr(sub, "names", [])]
                module = getattr(sub, "module", None) or ""
                if isinstance(sub, ast.Import | ast.ImportFrom) and (
                    module.split(".")[0] in ("jaxbasics", *local)
                    or any(n.split(".")[0] in ("jaxbasics", *local) for n in names)
                ):
                    inner.append(sub.lineno)
    assert not inner, f"{path.name}: project imports inside functions at lines {inner}"


@pytest.mark.parametrize("path", [*MODULES.values(), *SCRIPTS], ids=lambda p: p.name)
def test_no_module_or_function_is_too_long(path):
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path} has {len(text.splitlines())} lines"
    lines = text.splitlines()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            skip = set()
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                skip = set(range(body[0].lineno, body[0].end_lineno + 1))
            code = [
                i
                for i in range(node.lineno, node.end_lineno + 1)
                if i not in skip
                and lines[i - 1].strip()
                and not lines[i - 1].strip().startswith("#")
            ]
            assert len(code) <= MAX_FUNCTION_LINES, f"{path.name}:{node.name} has {len(code)}"


@pytest.mark.parametrize(
    "package",
    ["jaxbasics.data", "jaxbasics.prior", "jaxbasics.train", "jaxbasics.vqvae", "jaxbasics.tasks"],
)
def test_public_packages_name_their_api(package):
    module = importlib.import_module(package)
    assert module.__all__ and sorted(module.__all__) == sorted(set(module.__all__))
    for name in module.__all__:
        assert hasattr(module, name), f"{package}.{name}"


def test_the_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200
