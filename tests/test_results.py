"""Results files: processes that append to one run at once keep each other's rows."""

import inspect
import subprocess
import sys

import pandas as pd
import pytest

from scaling.results import (
    COLUMNS,
    LOSS_METRIC,
    OPTIONAL_COLUMNS,
    VAL_TASK,
    append_rows,
    load,
    read_file,
    result_row,
)

WRITER = """
import sys
from scaling.results import append_rows
run_dir, who = sys.argv[1], sys.argv[2]
for step in range(40):
    append_rows(run_dir, [dict(run=who, rung="s1", params=1, nonembed_params=1, step=step,
                               tokens=0, flops=0.0, task="t", shots=0, metric="m",
                               value=0.5, n=1)])
"""


def test_processes_appending_at_once_keep_each_others_rows(tmp_path):
    # As a training process (validation rows) and `scaling eval` (probe rows) of one run.
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), who],
                                stderr=subprocess.PIPE, text=True) for who in "abc"]
    for w in writers:
        assert w.wait(timeout=120) == 0, w.stderr.read()[-2000:]
    df = pd.read_csv(tmp_path / "results.csv")
    assert len(df) == 3 * 40 and df.groupby("run").size().to_dict() == {"a": 40, "b": 40,
                                                                         "c": 40}


# --------------------------------------------------------------------------------------------
# results of other model families: training columns may be empty
# --------------------------------------------------------------------------------------------

def _published(**change) -> dict:
    """A score as another family publishes it: parameters known, no training budget."""
    return dict(run="other-1b", rung="1b", params=1_000_000_000, nonembed_params=None,
                step=None, tokens=None, flops=None, task="t", shots=0, metric="exact_match",
                value=0.5, n=200) | change


def test_empty_training_columns_round_trip(tmp_path):
    append_rows(tmp_path, [_published(), _published(task="u", value=0.25)])
    text = (tmp_path / "results.csv").read_text().splitlines()
    assert text[1] == "other-1b,1b,1000000000,,,,,t,0,exact_match,0.5,200"  # empty, no 0.0
    df = load(tmp_path)
    assert [str(df[c].dtype) for c in ("params", "nonembed_params", "step", "tokens",
                                       "flops", "n")] == ["int64", "Int64", "Int64", "Int64",
                                                          "float64", "int64"]
    assert df.step.isna().all() and len(df) == 2
    df.to_parquet(tmp_path / "copy.parquet")
    assert load(tmp_path / "copy.parquet").equals(df)


def test_rescoring_a_stepless_key_replaces_it(tmp_path):
    append_rows(tmp_path, [_published()])
    append_rows(tmp_path, [_published(value=0.75)])  # the empty step is one key, as any step
    assert load(tmp_path).value.tolist() == [0.75]


def test_bounds_allow_float32_rounding_and_empty_values(tmp_path):
    append_rows(tmp_path, [_published(value=1 + 1e-9), _published(task="u", value=None),
                           _published(task="v", metric="answer_logprob", value=-float("inf"))])
    assert len(load(tmp_path)) == 3  # an empty value is a missing score; the report drops it


def test_whole_numbers_written_as_floats_are_read(tmp_path):
    src = tmp_path / "results.csv"
    pd.DataFrame([_published(step=1000.0, tokens=4.096e6, nonembed_params=9e8)]).to_csv(
        src, index=False)
    df = read_file(src)
    assert df.step.item() == 1000 and df.tokens.item() == 4_096_000


def test_load_skips_an_excluded_report_copy(tmp_path):
    append_rows(tmp_path / "run", [_published()])
    append_rows(tmp_path / "report", [_published(value=0.25)])  # a stale copy, re-scored since
    assert load(tmp_path / "run").value.tolist() == [0.5]
    assert load(tmp_path, exclude=tmp_path / "report").value.tolist() == [0.5]


# One validation-loss row, every required column given.
CELLS = dict(run="r", rung="s1", params=10128, nonembed_params=7056, step=4, tokens=8192,
             flops=8.0e8, task=VAL_TASK, shots=0, metric=LOSS_METRIC, value=4.15, n=65536)


def test_result_row_takes_the_schema_columns_and_requires_every_required_one():
    params = inspect.signature(result_row).parameters
    assert list(params) == COLUMNS + OPTIONAL_COLUMNS  # a column added to the schema fails here
    assert all(params[c].kind is inspect.Parameter.KEYWORD_ONLY for c in params)
    assert [c for c in params if params[c].default is inspect.Parameter.empty] == COLUMNS
    for col in COLUMNS:
        with pytest.raises(TypeError, match=f"'{col}'"):
            result_row(**{k: v for k, v in CELLS.items() if k != col})


def test_result_row_lists_columns_in_schema_order_and_leaves_out_unset_optional_ones():
    assert list(result_row(**CELLS)) == COLUMNS
    row = result_row(**CELLS, data_hash="ab12", seed=3)
    assert list(row) == COLUMNS + ["seed", "data_hash"]
    assert row == dict(CELLS, seed=3, data_hash="ab12")
    assert result_row(**CELLS, chance=0.1)["chance"] == 0.1


def test_rows_built_by_result_row_round_trip(tmp_path):
    append_rows(tmp_path, [result_row(**CELLS, seed=0, data_hash="ab12"),
                           result_row(**dict(CELLS, step=None, tokens=None, flops=None,
                                             nonembed_params=None, task="t", metric="m"))])
    df = load(tmp_path)
    assert list(df.columns) == COLUMNS + ["seed", "data_hash"]
    val, other = df.iloc[0], df.iloc[1]
    assert val.to_dict() == dict(CELLS, seed=0, data_hash="ab12")
    assert other[["step", "tokens", "flops", "nonembed_params", "seed"]].isna().all()
