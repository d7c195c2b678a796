"""Which code trained a run: a fingerprint of the modules that decide training numerics.

A run directory is keyed by its configuration, so a finished run is reused by every later
sweep even if the model or training code has changed since (our own report once mixed two
rotary layouts that way). `train` records this fingerprint in run.json; the sweep runner
and a resumed run warn when it differs from the current code, and keep the run as it is.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

# The modules whose code decides what a run computes (data has its own corpus hash), and
# the compiled kernels training calls.
TRAINING_MODULES = ("model", "train", "ladder", "config", "checkpoint", "cpu_attention")
TRAINING_KERNELS = ("kernels/causal_attention.cpp",)


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(
                    getattr(body[0], "value", None), ast.Constant) and isinstance(
                    body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def fingerprint_of(sources: list[str], kernels: tuple[bytes, ...] = ()) -> str:
    """12 hex digits of sha256 over the sources' syntax trees without docstrings: editing a
    comment, a docstring or the layout keeps it; changing code changes it. Kernel sources
    (C++) count byte for byte."""
    digest = hashlib.sha256()
    for src in sources:
        digest.update(ast.dump(_without_docstrings(ast.parse(src))).encode())
    for kernel in kernels:
        digest.update(kernel)
    return digest.hexdigest()[:12]


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """The fingerprint of this installation's training modules (read once per process)."""
    here = Path(__file__).resolve().parent
    return fingerprint_of([(here / f"{m}.py").read_text() for m in TRAINING_MODULES],
                          tuple((here / k).read_bytes() for k in TRAINING_KERNELS))


def stale_code_message(run_dir: Path, info: dict) -> str | None:
    """A one-line warning when run.json says other code trained this run, else None."""
    recorded, now = info.get("code"), code_fingerprint()
    if recorded is None or recorded == now:
        return None
    return (f"warning: {run_dir} was trained by other code (fingerprint {recorded}, now "
            f"{now}); its results are kept as they are: delete the directory to retrain")
