"""The results schema (see DESIGN.md): tidy rows, one per (run, step, task, shots, metric).

Every stage that produces scores goes through `append_rows`, and every reader through `load`,
so the schema lives in exactly one place.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from scaling.locks import exclusive

# Required columns, in order. `value` is a float; a missing score is a missing row.
COLUMNS = [
    "run", "rung", "params", "nonembed_params", "step", "tokens", "flops",
    "task", "shots", "metric", "value", "n",
]
# Optional columns: readers accept files without them.
OPTIONAL_COLUMNS = ["chance", "seed", "data_hash"]
# A row is identified by this key; later rows with the same key replace earlier ones.
KEY = ["run", "step", "task", "shots", "metric"]

RESULTS_FILE = "results.csv"
RESULTS_LOCK = ".results.lock"  # held while results.csv is rewritten


class ResultsError(ValueError):
    """A results file or directory that cannot be read as the results schema."""


def _check_columns(df: pd.DataFrame, source: str) -> pd.DataFrame:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ResultsError(
            f"{source}: missing column(s) {', '.join(missing)} of the results schema")
    df = df.copy()
    for col in ("params", "nonembed_params", "step", "tokens", "shots", "n"):
        df[col] = pd.to_numeric(df[col], errors="raise").astype("int64")
    for col in ("flops", "value"):
        df[col] = pd.to_numeric(df[col], errors="raise").astype("float64")
    if "chance" in df.columns:
        df["chance"] = pd.to_numeric(df["chance"], errors="coerce").astype("float64")
    for col in ("run", "rung", "task", "metric"):
        df[col] = df[col].astype(str)
    extra = [c for c in df.columns if c not in COLUMNS]
    return df[COLUMNS + extra]


def read_file(path: str | os.PathLike) -> pd.DataFrame:
    """Read one results file (CSV or Parquet), checking it against the schema."""
    path = Path(path)
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ResultsError(f"{path}: cannot be read as a results file ({exc})") from exc
    try:
        return _check_columns(df, str(path))
    except ResultsError:
        raise  # already names the file
    except (ValueError, TypeError) as exc:
        raise ResultsError(f"{path}: {exc}") from exc


def dedupe(df: pd.DataFrame) -> pd.DataFrame:
    """Keep the last row for each key (run, step, task, shots, metric)."""
    return df.drop_duplicates(subset=KEY, keep="last").reset_index(drop=True)


def load(path: str | os.PathLike) -> pd.DataFrame:
    """Load results as a DataFrame in the schema.

    `path` may be a results file, a run directory (holding results.csv), or any directory
    above run directories (a sweep, or several merged sweeps): every results.csv below it
    is read. Rows are deduplicated by key, the last one winning.
    """
    path = Path(path)
    if not path.exists():
        raise ResultsError(f"{path}: no such file or directory")
    if path.is_file():
        files = [path]
    else:
        files = sorted(path.rglob(RESULTS_FILE)) + sorted(path.rglob("*.parquet"))
    if not files:
        raise ResultsError(f"{path}: no results files ({RESULTS_FILE}) found")
    frames = [read_file(f) for f in files]
    frames = [f for f in frames if len(f)]
    if not frames:
        raise ResultsError(f"{path}: results files hold no rows")
    return dedupe(pd.concat(frames, ignore_index=True))


def append_rows(run_dir: str | os.PathLike, rows: list[dict]) -> Path:
    """Append rows to `run_dir/results.csv`, replacing rows with the same key.

    The file is rewritten atomically (temp file + rename), so a crash never leaves a
    half-written results file and already stored rows are never lost; one process at a
    time does this (a lock on `run_dir/.results.lock`), so processes that append to the
    same run at once (training and a `scaling eval` of it) keep each other's rows.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / RESULTS_FILE
    new = pd.DataFrame(rows)
    for col in COLUMNS:
        if col not in new.columns:
            raise ResultsError(f"row is missing column {col!r}")
    with exclusive(run_dir / RESULTS_LOCK):
        if target.exists():
            new = pd.concat([read_file(target), new], ignore_index=True)
        new = _check_columns(new, str(target))
        new = dedupe(new)
        tmp = target.with_suffix(".csv.tmp")
        new.to_csv(tmp, index=False)
        os.replace(tmp, target)
    return target
