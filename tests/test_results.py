"""Results files: processes that append to one run at once keep each other's rows."""

import subprocess
import sys

import pandas as pd

from scaling.results import append_rows, load, read_file

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
