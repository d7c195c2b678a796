"""The results schema (README "Results schema"): tidy rows, one per (run, step, task, shots,
metric).

Every stage that produces scores goes through `append_rows`, and every reader through `load`,
so the schema lives in exactly one place: the columns, their types, the values they may take
(METRIC_RANGE for the scores) and what a key may hold.

Results of any model family are accepted: `step`, `tokens`, `flops` and `nonembed_params` may
be empty (e.g. published scores of another family: parameter counts known, training budget
not). They are read as pandas nullable integers (`Int64`; `flops` as float), empty = NA.

Every refusal is a `ResultsError` with a one-line message that names the file, the row and
the column, e.g. `results.csv row 17: column params must be a positive integer, got -5`.
Rows are counted from 1 over the data rows (row 1 is the first line after a CSV's header),
and when several rows break the same rule the first is named with a count of the others.
Refused: a required cell that is empty or not a number; a count that is not a whole number,
is negative, or is absurd (params above MAX_PARAMS = 1e15; unchecked, a 1e30 would wrap
around in int64 without a word); `params` < 1 and `n` < 1 (a score averages at least one instance;
a validation loss at least one token); `nonembed_params` above `params`; negative or infinite
`flops`; a score outside its metric's range (METRIC_RANGE; metrics not listed there are not
range-checked); a `chance` outside the range of its row's metric; an empty run, task or
metric. An empty `value` is allowed here (a missing score; the report drops such rows); an
empty `rung` is the run's name (each such run a rung of its own). The optional `intervention`
is free text (empty: the base ladder); an intervention's runs carry run names of their own,
so the key needs no intervention.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from scaling.locks import exclusive

# Required columns, in order. `value` is a float; a missing score is a missing row.
COLUMNS = [
    "run", "rung", "params", "nonembed_params", "step", "tokens", "flops",
    "task", "shots", "metric", "value", "n",
]
# Optional columns: readers accept files without them.
OPTIONAL_COLUMNS = ["chance", "seed", "data_hash", "intervention"]
# Which intervention produced a row (e.g. `distill:s6`, `finetune:full:addition_3d`,
# `prompt:16:addition_3d`, `mlm`); BASE (an empty cell) is the base ladder. Read as text,
# "" for base; `load` returns the column only when some file has it (`intervention_of`
# answers for any table).
INTERVENTION, BASE = "intervention", ""
# A row is identified by this key; later rows with the same key replace earlier ones.
KEY = ["run", "step", "task", "shots", "metric"]

# Validation loss is a row of its own: task "val", metric "loss".
VAL_TASK, LOSS_METRIC = "val", "loss"
# Which metrics jump (a single token decides the score) and which move smoothly: the
# mirage analysis compares verdicts between the two kinds. answer_prob came after the
# others and stays last.
DISCONTINUOUS = ("exact_match", "accuracy")
CONTINUOUS = ("token_accuracy", "edit_similarity", "answer_logprob", "gold_prob", "answer_prob")

RESULTS_FILE = "results.csv"
RESULTS_LOCK = ".results.lock"  # held while results.csv is rewritten

# The range of each metric's scores (and of its chance level), bounds included. The schema
# owns it: readers refuse scores outside it, and analyses (e.g. the backtest's predictions)
# clip to it. Metrics not listed here are accepted with any value.
METRIC_RANGE: dict[str, tuple[float, float]] = {
    "exact_match": (0.0, 1.0),
    "accuracy": (0.0, 1.0),
    "token_accuracy": (0.0, 1.0),
    "edit_similarity": (0.0, 1.0),
    "gold_prob": (0.0, 1.0),
    "answer_prob": (0.0, 1.0),
    "answer_logprob": (-math.inf, 0.0),  # a log-probability
    "loss": (0.0, math.inf),  # cross-entropy
}
# Scores written by other tools in float32 may land a rounding error past a bound.
RANGE_TOLERANCE = 1e-6

MAX_PARAMS = 10**15  # 1000x the largest published models; far below int64's 9.2e18
MAX_COUNT = 10**18  # any other count: beyond it int64 (and float64's integers) give out
# Integer columns: (lowest allowed value, highest, required). Optional ones may be empty
# (results of another model family) and are read as pandas' nullable Int64.
INT_COLUMNS = {
    "params": (1, MAX_PARAMS, True),
    "nonembed_params": (0, MAX_PARAMS, False),
    "step": (0, MAX_COUNT, False),
    "tokens": (0, MAX_COUNT, False),
    "shots": (0, MAX_COUNT, True),
    "n": (1, MAX_COUNT, True),
}
STRING_KEYS = ("run", "task", "metric")  # must not be empty (they identify a score)
# Two scores of one key that differ by at most this (relative) are the same score.
SAME_VALUE_RTOL = 1e-9


class ResultsError(ValueError):
    """A results file or directory that cannot be read as the results schema."""


def result_row(*, run: str, rung: str, params: int, nonembed_params: int | None,
               step: int | None, tokens: int | None, flops: float | None, task: str,
               shots: int, metric: str, value: float | None, n: int,
               chance: float | None = None, seed: int | None = None,
               data_hash: str | None = None, intervention: str | None = None) -> dict:
    """One row of the results schema, as a dict for `append_rows`.

    Every required column (COLUMNS) is a keyword argument without a default, so a row
    that lacks one fails where it is built (a TypeError naming it), not when a file is
    read. None is an empty cell where the schema allows one: `nonembed_params`, `step`,
    `tokens`, `flops` (results of another origin), `value` (a missing score). Optional
    columns (OPTIONAL_COLUMNS) left at None are left out of the row, so a producer that
    never sets one writes no such column. Keys come in the schema's order: COLUMNS, then
    OPTIONAL_COLUMNS. Cells are checked when the rows are written (`append_rows`).
    """
    cells = locals()  # the arguments, by column name
    row = {col: cells[col] for col in COLUMNS}
    row.update((col, cells[col]) for col in OPTIONAL_COLUMNS if cells.get(col) is not None)
    return row


# --------------------------------------------------------------------------------------------
# checking one table
# --------------------------------------------------------------------------------------------

def _show(v) -> str:
    """A cell as a message shows it: numbers plainly (5, not 5.0), text quoted."""
    if isinstance(v, str):
        return repr(v)
    if pd.isna(v):
        return "an empty cell"
    if isinstance(v, (float, np.floating)) and float(v).is_integer() and abs(v) < 1e16:
        return str(int(v))
    return str(v.item() if isinstance(v, np.generic) else v)


EMPTY_RULE = "must not be empty"


def _refuse(source: str, raw: pd.Series, bad, col: str, rule: str) -> None:
    """Raise for the first row where `bad` holds (if any), naming the row and the column."""
    bad = np.asarray(bad, dtype=bool)
    if not bad.any():
        return
    i = int(np.argmax(bad))
    others = int(bad.sum()) - 1
    more = f" ({others} more row{'s' if others > 1 else ''} like it)" if others else ""
    got = "" if rule == EMPTY_RULE else f", got {_show(raw.iloc[i])}"
    raise ResultsError(f"{source} row {i + 1}: column {col} {rule}{got}{more}")


def _numbers(source: str, raw: pd.Series, col: str, required: bool) -> pd.Series:
    """The column as numbers (empty cells NA), refusing text and, if required, empty cells."""
    if pd.api.types.is_numeric_dtype(raw.dtype):  # the common case: no text to look at
        empty, num = raw.isna(), raw
    else:
        empty = raw.isna() | raw.astype(str).str.strip().eq("")
        num = pd.to_numeric(raw.where(~empty), errors="coerce")
    _refuse(source, raw, num.isna() & ~empty, col, "must be a number")
    if required:
        _refuse(source, raw, empty, col, EMPTY_RULE)
    return num


def _as_float(num: pd.Series) -> np.ndarray:
    return num.astype("Float64").to_numpy(dtype=float, na_value=np.nan)


def _integers(source: str, raw: pd.Series, col: str) -> pd.Series:
    """An integer column checked against INT_COLUMNS; int64 if required, else Int64."""
    low, high, required = INT_COLUMNS[col]
    num = _numbers(source, raw, col, required)
    x = _as_float(num)
    present = ~np.isnan(x)
    kind = "a positive integer" if low == 1 else "a non-negative integer"
    with np.errstate(invalid="ignore"):
        wrong = present & ~((x >= low) & (x % 1 == 0))  # inf % 1 is NaN: refused here
    _refuse(source, raw, wrong, col, f"must be {kind}")
    _refuse(source, raw, present & (x > high), col, f"must be at most {high:.0e}")
    if not pd.api.types.is_integer_dtype(num.dtype):
        num = num.astype("Float64")  # whole numbers as floats: exact below 2^53
    return num.astype("int64" if required else "Int64")


def _check_ranges(df: pd.DataFrame, raw: pd.DataFrame, source: str) -> None:
    """Scores (and chance levels) inside their metric's range; nonembed_params <= params."""
    over = (df.nonembed_params > df.params).fillna(False).to_numpy(bool)
    _refuse(source, raw.nonembed_params, over, "nonembed_params",
            "must not exceed params")
    value, metric = df.value.to_numpy(float), df.metric.to_numpy()
    chance = df.chance.to_numpy(float) if "chance" in df else None
    for name, (lo, hi) in METRIC_RANGE.items():
        rows = metric == name
        if not rows.any():
            continue
        span = f"lie in [{lo:g}, {hi:g}] for metric {name}"
        with np.errstate(invalid="ignore"):
            out = rows & ((value < lo - RANGE_TOLERANCE) | (value > hi + RANGE_TOLERANCE))
        _refuse(source, raw.value, out, "value", f"must {span}")
        if chance is not None:
            with np.errstate(invalid="ignore"):
                out = rows & ((chance < lo - RANGE_TOLERANCE) | (chance > hi + RANGE_TOLERANCE))
            _refuse(source, raw.chance, out, "chance", f"must {span}")


def _check_columns(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """The table in the schema's types, or a ResultsError naming the first bad cell."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ResultsError(
            f"{source}: missing column(s) {', '.join(missing)} of the results schema")
    raw = df.reset_index(drop=True)
    df = raw.copy()
    for col in INT_COLUMNS:
        df[col] = _integers(source, raw[col], col)
    flops = _as_float(_numbers(source, raw.flops, "flops", required=False))
    with np.errstate(invalid="ignore"):
        _refuse(source, raw.flops, ~np.isnan(flops) & ~((flops >= 0) & np.isfinite(flops)),
                "flops", "must be a non-negative finite number")
    df["flops"] = flops
    df["value"] = _as_float(_numbers(source, raw.value, "value", required=False))
    if "chance" in df.columns:
        df["chance"] = _as_float(_numbers(source, raw.chance, "chance", required=False))
    if INTERVENTION in df.columns:
        df[INTERVENTION] = _intervention_text(raw[INTERVENTION])
    for col in STRING_KEYS:
        empty = raw[col].isna() | raw[col].astype(str).str.strip().eq("")
        _refuse(source, raw[col], empty, col, EMPTY_RULE)
        df[col] = df[col].astype(str)
    # a run without a rung label (another family's model) is a rung of its own
    rung = raw.rung.where(~raw.rung.astype(str).str.strip().eq(""))
    df["rung"] = rung.fillna(df.run).astype(str)
    _check_ranges(df, raw, source)
    extra = [c for c in df.columns if c not in COLUMNS]
    return df[COLUMNS + extra]


def require_parquet(path: str | os.PathLike) -> None:
    """Raise a one-line ResultsError when no Parquet engine is installed (pyarrow is the
    optional extra `parquet`; pandas' own error is an ImportError with a traceback)."""
    import importlib.util

    if not any(importlib.util.find_spec(m) for m in ("pyarrow", "fastparquet")):
        raise ResultsError(f"{path}: reading or writing Parquet needs pyarrow: "
                           "pip install 'scaling[parquet]' (or save the results as CSV)")


def val_loss_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The validation-loss rows of results (task `val`, metric `loss`)."""
    return df[(df.task == VAL_TASK) & (df.metric == LOSS_METRIC)]


def _intervention_text(raw: pd.Series) -> pd.Series:
    """The `intervention` column as text: empty cells (NaN, None, blanks) are BASE, other
    cells are stripped of surrounding blanks (CSV quoting carries commas and quotes)."""
    return raw.astype(object).where(raw.notna(), BASE).astype(str).str.strip()


def intervention_of(df: pd.DataFrame) -> pd.Series:
    """Each row's intervention, BASE ("") for the base ladder and for files without the
    column."""
    if INTERVENTION not in df.columns:
        return pd.Series(BASE, index=df.index, dtype=str)
    return _intervention_text(df[INTERVENTION])


def base_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The base ladder's rows (intervention empty): all rows when there is no such column."""
    if INTERVENTION not in df.columns:
        return df
    return df[intervention_of(df).eq(BASE).to_numpy()]


def read_file(path: str | os.PathLike) -> pd.DataFrame:
    """Read one results file (CSV or Parquet), checking it against the schema."""
    path = Path(path)
    if path.suffix == ".parquet":
        require_parquet(path)
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        else:
            # names stay text: a rung called 125000000 or a run called 007 is a label
            df = pd.read_csv(path, dtype={c: str for c in ("run", "rung", "task", "metric",
                                                           INTERVENTION)})
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ResultsError(f"{path}: cannot be read as a results file ({exc})") from exc
    try:
        return _check_columns(df, str(path))
    except ResultsError:
        raise  # already names the file
    except (ValueError, TypeError) as exc:
        raise ResultsError(f"{path}: {exc}") from exc


# --------------------------------------------------------------------------------------------
# duplicates
# --------------------------------------------------------------------------------------------

def dedupe(df: pd.DataFrame) -> pd.DataFrame:
    """Keep the last row for each key (run, step, task, shots, metric); an empty step is a
    value of its own (NA equals NA here)."""
    return df.drop_duplicates(subset=KEY, keep="last").reset_index(drop=True)


def _describe_key(row: pd.Series) -> str:
    return ", ".join(f"{k}={'empty' if pd.isna(row[k]) else row[k]}" for k in KEY)


def refuse_conflicts(df: pd.DataFrame, where: list[str]) -> None:
    """Raise if two rows share a key but not their score (value, or n).

    `where[i]` says where row i came from ("FILE row K"). Values within SAME_VALUE_RTOL
    (relative) of each other, or both empty, are the same score: such copies are harmless
    (e.g. one run's results copied onto two machines). Different ones are two answers to one
    question and no rule can pick one, so they are never resolved silently.
    """
    dup = df.duplicated(KEY, keep=False).to_numpy()
    if not dup.any():
        return
    d = df[dup]
    ids = d.groupby(KEY, dropna=False, sort=False).ngroup().to_numpy()
    _, first = np.unique(ids, return_index=True)
    ref = first[ids]  # position (within d) of each row's first copy
    v, n = d.value.to_numpy(float), d.n.to_numpy()
    rv, rn = v[ref], n[ref]
    with np.errstate(invalid="ignore"):
        same = (v == rv) | (np.isnan(v) & np.isnan(rv)) | (
            np.abs(v - rv) <= SAME_VALUE_RTOL * np.maximum(np.abs(v), np.abs(rv)))
    bad = ~(same & (n == rn))
    if not bad.any():
        return
    i = int(np.argmax(bad))
    pos = np.flatnonzero(dup)
    a, b = pos[ref[i]], pos[i]
    total = np.unique(ids[bad]).size
    raise ResultsError(
        f"conflicting rows for key {_describe_key(d.iloc[i])}: value {_show(v[ref[i]])}, "
        f"n {rn[i]} ({where[a]}) vs value {_show(v[i])}, n {n[i]} ({where[b]}); "
        f"{total} conflicting key{'s' if total > 1 else ''} in total (remove or re-score "
        "the wrong copy)")


def load(path: str | os.PathLike, exclude: str | os.PathLike | None = None) -> pd.DataFrame:
    """Load results as a DataFrame in the schema.

    `path` may be a results file, a run directory (holding results.csv), or any directory
    above run directories (a sweep, or several merged sweeps): every results.csv below it
    is read, except below `exclude` (e.g. a report directory inside the sweep that holds a
    copy of the runs' results). Rows that repeat a key with the same score are dropped (one
    copy kept); rows that repeat a key with a different score are refused
    (`refuse_conflicts`), within one file or across files.
    """
    path = Path(path)
    if not path.exists():
        raise ResultsError(f"{path}: no such file or directory")
    if path.is_file():
        files = [path]
    else:
        files = sorted(path.rglob(RESULTS_FILE)) + sorted(path.rglob("*.parquet"))
        if exclude is not None:
            skip = Path(exclude).resolve()
            files = [f for f in files if skip not in f.resolve().parents]
    if not files:
        raise ResultsError(f"{path}: no results files ({RESULTS_FILE}) found")
    read = [(f, read_file(f)) for f in files]
    read = [(f, frame) for f, frame in read if len(frame)]
    if not read:
        raise ResultsError(f"{path}: results files hold no rows")
    df = pd.concat([frame for _, frame in read], ignore_index=True)
    if INTERVENTION in df.columns:  # files without the column hold base-ladder rows
        df[INTERVENTION] = _intervention_text(df[INTERVENTION])
    where = [f"{f} row {k}" for f, frame in read for k in range(1, len(frame) + 1)]
    refuse_conflicts(df, where)
    return dedupe(df)


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------

def append_rows(run_dir: str | os.PathLike, rows: list[dict]) -> Path:
    """Append rows to `run_dir/results.csv`, replacing rows with the same key.

    Replacing is deliberate: re-scoring a checkpoint updates its rows (unlike `load`, which
    refuses conflicting copies it finds). The rows are checked against the schema first.
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
    new = _check_columns(new, f"{target} (new rows)")
    with exclusive(run_dir / RESULTS_LOCK):
        if target.exists():
            new = pd.concat([read_file(target), new], ignore_index=True)
        new = dedupe(new)
        tmp = target.with_suffix(".csv.tmp")
        new.to_csv(tmp, index=False)
        os.replace(tmp, target)
    return target
