"""A package that installs: declared dependencies match the imports, the wheel carries the
data files the code reads (sweep YAMLs, the C++ kernel, the lm-eval hooks), and the
repository's sweeps/ is the packaged one."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("scaling", "analysis")
# Import name -> distribution, for imports whose distribution is not installed here (and to
# be independent of what happens to be installed).
DISTRIBUTION_OF = {"yaml": "pyyaml", "sklearn": "scikit-learn", "lm_eval": "lm-eval",
                   "PIL": "pillow"}
# Modules that only ever run with an extra installed (lm-eval loads the task hooks itself):
# they may import the extra's packages at module level.
OPTIONAL_MODULES = {"scaling/lm_eval_tasks/hooks.py": "lmeval"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(req: str) -> str:
    return _norm(re.match(r"\s*([A-Za-z0-9._-]+)", req).group(1))


def declared() -> tuple[set[str], dict[str, set[str]]]:
    """(core dependencies, {extra: dependencies}) from pyproject.toml, names normalised."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {_requirement_name(r) for r in project["dependencies"]}
    extras = {k: {_requirement_name(r) for r in v}
              for k, v in project.get("optional-dependencies", {}).items()}
    return core, extras


@functools.cache
def _installed() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()  # scans every installed package


def _distribution(module: str) -> str:
    if module in DISTRIBUTION_OF:
        return _norm(DISTRIBUTION_OF[module])
    installed = _installed().get(module)
    return _norm(installed[0] if installed else module)


def _is_third_party(module: str) -> bool:
    return module not in sys.stdlib_module_names and module not in PACKAGES


class _Imports(ast.NodeVisitor):
    """Top-level module names imported by a file, and whether each import runs when the
    module is imported (module level, outside try) or only later (in a function, or
    guarded by try/except ImportError)."""

    def __init__(self):
        self.eager: set[str] = set()
        self.lazy: set[str] = set()
        self._depth = 0

    def _add(self, names):
        target = self.lazy if self._depth else self.eager
        target.update(n.split(".")[0] for n in names if n)

    def visit_Import(self, node):
        self._add(a.name for a in node.names)

    def visit_ImportFrom(self, node):
        if node.level == 0:
            self._add([node.module])

    def _nested(self, node):
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Try = _nested


@functools.cache
def imports() -> dict[str, _Imports]:
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            found = _Imports()
            found.visit(ast.parse(path.read_text()))
            out[str(path.relative_to(REPO))] = found
    return out


def test_every_third_party_import_is_declared():
    core, extras = declared()
    anywhere = core.union(*extras.values())
    missing = {}
    for path, found in imports().items():
        for module in filter(_is_third_party, found.eager | found.lazy):
            if _distribution(module) not in anywhere:
                missing.setdefault(_distribution(module), []).append(path)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_modules_import_only_core_dependencies_when_loaded():
    """A core install (`pip install scaling`) can import every module except the optional
    ones: extras' packages are imported lazily (in a function or a guarded try)."""
    core, extras = declared()
    wrong = {}
    for path, found in imports().items():
        allowed = core | extras.get(OPTIONAL_MODULES.get(path, ""), set())
        for module in filter(_is_third_party, found.eager):
            if _distribution(module) not in allowed:
                wrong.setdefault(path, []).append(module)
    assert not wrong, f"modules that import an optional package when loaded: {wrong}"


def test_every_core_dependency_is_imported():
    core, _ = declared()
    used = {_distribution(m) for found in imports().values()
            for m in filter(_is_third_party, found.eager | found.lazy)}
    assert not core - used, f"declared but never imported: {sorted(core - used)}"


def test_repository_sweeps_are_the_packaged_ones():
    """`wandb sweep sweeps/ladder.yaml` from the checkout and `scaling ladder` installed
    read the same files (sweeps/ is a link to scaling/sweeps/)."""
    top = {p.name: p.read_bytes() for p in (REPO / "sweeps").glob("*.yaml")}
    packaged = {p.name: p.read_bytes() for p in (REPO / "scaling" / "sweeps").glob("*.yaml")}
    assert top == packaged and {"ladder.yaml", "quick.yaml", "tiny.yaml"} <= set(top)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel `pip install .` would install, built offline from a copy of the sources
    (a build in the checkout would leave build/ behind, and stale files in it)."""
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in PACKAGES:
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-q", "-w", str(out), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = out.glob("scaling-*.whl")
    return path


def test_wheel_carries_the_data_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for sweep in (REPO / "scaling" / "sweeps").glob("*.yaml"):
        assert f"scaling/sweeps/{sweep.name}" in names
    for required in ("scaling/kernels/causal_attention.cpp", "scaling/lm_eval_tasks/hooks.py",
                     "scaling/lm_eval_tasks/__init__.py", "scaling/tasks/__init__.py",
                     "scaling/data/skills/__init__.py", "analysis/__init__.py",
                     "analysis/report.py"):
        assert required in names, required
    source = {str(p.relative_to(REPO)) for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")
              if "__pycache__" not in p.parts}
    assert source <= names, f"modules missing from the wheel: {sorted(source - names)}"
    assert not [n for n in names if n.startswith(("tests/", "bench/", "sweeps/", "runs/"))]


def test_wheel_metadata(wheel):
    archive = zipfile.ZipFile(wheel)
    info = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
    metadata = archive.read(info).decode()
    core, extras = declared()
    requires = {_requirement_name(line.split(":", 1)[1]) for line in metadata.splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line}
    assert requires == core
    provided = {line.split(":", 1)[1].strip() for line in metadata.splitlines()
                if line.startswith("Provides-Extra:")}
    assert {"lmeval", "parquet", "hf", "bpe", "dev"} <= provided
    entry = archive.read(info.replace("METADATA", "entry_points.txt")).decode()
    assert "scaling = scaling.cli:main" in entry


def test_parquet_without_pyarrow_is_a_one_line_error(tmp_path, monkeypatch):
    """pyarrow is the optional extra `parquet`: without it a .parquet results file is refused
    in one line that says what to install, not an ImportError from inside pandas."""
    import importlib.util

    from scaling.results import ResultsError, load

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in (
        "pyarrow", "fastparquet") else real(name, *a))
    path = tmp_path / "scores.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(ResultsError, match=r"needs pyarrow: pip install 'scaling\[parquet\]'"):
        load(path)
