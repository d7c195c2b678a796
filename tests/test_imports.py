"""The import graph of scaling/ and analysis/, read from the source with `ast`: no module
imports itself through others (a cycle makes import order matter and hides which module owns
what), and analysis/ never pulls torch in when it is imported."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("scaling", "analysis")
# Imports inside a function that close a cycle on purpose: (importer, imported) -> why.
LATE_IMPORTS = {
    ("scaling.data.skills.base", "scaling.data.skills"):
        "a skill looks up another in the registry, which imports base at module level",
}


def modules(root: Path = REPO) -> dict[str, Path]:
    """Dotted module name -> file, for every module of PACKAGES under `root`."""
    out = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(modules imported when `name` is imported, modules imported later by its functions).

    Both hold dotted names: a module of `known` where the import names one (`from scaling
    import scorer` is scaling.scorer, `from scaling.tasks import Task` is scaling.tasks),
    else the imported name as written (`torch`, `numpy.linalg`). Imports under
    `if TYPE_CHECKING:` never run and are left out.
    """
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    eager: set[str] = set()
    late: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            target = late if in_function else eager
            if isinstance(child, ast.Import):
                target.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = ".".join(package[:len(package) - child.level + 1]
                                    + ([child.module] if child.module else []))
                else:
                    base = child.module
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    target.add(sub if sub in known else base)
            visit(child, in_function or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text(), filename=str(path)), False)
    return eager, late - eager


def graphs(root: Path = REPO) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module-level import graph, graph of every import) among the modules under `root`;
    the second leaves out LATE_IMPORTS."""
    known = modules(root)
    eager, every = {}, {}
    for name, path in known.items():
        now, later = imports(name, path, known)
        eager[name] = {m for m in now if m in known}
        every[name] = eager[name] | {m for m in later
                                     if m in known and (name, m) not in LATE_IMPORTS}
    return eager, every


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None when it has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_module_level_imports_have_no_cycle():
    eager, _ = graphs()
    assert find_cycle(eager) is None, " -> ".join(find_cycle(eager))


def test_imports_inside_functions_close_no_cycle_either():
    # A cycle hidden behind an import inside a function (the evaluator and its worker pool
    # once imported each other so) still ties both modules together.
    _, every = graphs()
    assert find_cycle(every) is None, " -> ".join(find_cycle(every))


def test_late_imports_listed_still_exist():
    known = modules()
    for importer, imported in LATE_IMPORTS:
        _, later = imports(importer, known[importer], known)
        assert imported in later, f"{importer} no longer imports {imported} late: unlist it"


def test_the_evaluator_imports_in_one_direction():
    # evaluate -> eval_pool -> scorer -> scoring; the lm-eval backend uses scoring only.
    _, every = graphs()
    assert {"scaling.eval_pool", "scaling.scorer"} <= every["scaling.evaluate"]
    assert "scaling.scorer" in every["scaling.eval_pool"]
    assert "scaling.scoring" in every["scaling.scorer"]
    assert "scaling.scoring" in every["scaling.lm_eval_backend"]
    upstream = {"scaling.evaluate", "scaling.eval_pool", "scaling.scorer"}
    assert not every["scaling.scoring"] & (upstream | {"scaling.lm_eval_backend"})
    assert not every["scaling.scorer"] & {"scaling.evaluate", "scaling.eval_pool"}
    assert "scaling.evaluate" not in every["scaling.lm_eval_backend"]


def test_analysis_never_imports_torch_at_module_level():
    # analysis/ reads results only (analysis/__init__.py), so a report needs no torch.
    known = modules()
    eager = {name: imports(name, path, known)[0] for name, path in known.items()}
    for start in (name for name in known if name.split(".")[0] == "analysis"):
        seen, todo = set(), [start]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            third_party = {m.split(".")[0] for m in eager[name] if m not in known}
            assert "torch" not in third_party, f"{start} imports torch through {name}"
            todo += [m for m in eager[name] if m in known]


def test_a_cycle_is_found(tmp_path):
    # The checker itself: two modules that import each other, one of them late.
    pkg = tmp_path / "scaling"
    pkg.mkdir()
    (tmp_path / "analysis").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from scaling import b\n")
    (pkg / "b.py").write_text("def f():\n    from scaling.a import g\n")
    eager, every = graphs(tmp_path)
    assert find_cycle(eager) is None
    assert find_cycle(every) in (["scaling.a", "scaling.b", "scaling.a"],
                                 ["scaling.b", "scaling.a", "scaling.b"])
