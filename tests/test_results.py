"""Results files: processes that append to one run at once keep each other's rows."""

import subprocess
import sys

import pandas as pd

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
