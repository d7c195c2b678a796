"""`scaling report` end to end on planted synthetic results, and its error paths."""

from __future__ import annotations

import subprocess
import sys
import time

import pandas as pd
import pytest

from analysis import dynamics, emergence, mirage
from analysis.report import main
from helpers import STEPS, make_results
from scaling.results import COLUMNS


def test_report_end_to_end(tmp_path, run_report, capsys):
    rc, out = run_report(make_results(tasks={"addition": "mirage", "copy": "smooth",
                                             "chain": "flat", "quiz": "choice"}))
    assert rc == 0, capsys.readouterr().err
    for f in ("emergence.csv", "dynamics.csv", "mirage.csv", "fits.csv", "backtest.csv",
              "report.md", "report.html"):
        assert (out / f).is_file(), f
    pngs = {p.name for p in (out / "figures").glob("*.png")}
    assert {"loss_vs_compute.png", "probes_vs_params.png", "discontinuous_vs_continuous.png",
            "task_rung_heatmap.png", "training_curves.png", "backtest.png"} <= pngs
    assert not list(tmp_path.glob(".out.tmp-*")), "temporary build dir left behind"

    em = pd.read_csv(out / "emergence.csv")
    assert list(em.columns) == emergence.COLUMNS
    assert set(em.axis) == set(emergence.AXES) and set(em.verdict) <= set(emergence.VERDICTS)
    dyn = pd.read_csv(out / "dynamics.csv")
    assert list(dyn.columns) == dynamics.COLUMNS
    mir = pd.read_csv(out / "mirage.csv")
    assert list(mir.columns) == mirage.COLUMNS

    def verdict(task, metric, axis="params"):
        return em[(em.task == task) & (em.metric == metric) & (em.axis == axis)].verdict.item()

    # planted: p^8 looks emergent, per-token accuracy is smooth -> a mirage
    assert verdict("addition", "exact_match") == "emergent"
    assert verdict("addition", "token_accuracy") == "smooth"
    assert mir.set_index("task").loc["addition", "label"] == "mirage"
    # planted flat task: flat everywhere it has enough points
    assert set(em[(em.task == "chain") & (em.axis != "tokens")].verdict) == {"flat"}
    assert mir.set_index("task").loc["chain", "label"] == "not_emergent"
    # multiple choice: accuracy is its discontinuous metric, rising smoothly from chance
    assert mir.set_index("task").loc["quiz", "discontinuous_metric"] == "accuracy"
    assert verdict("quiz", "accuracy") == "smooth"
    # one token budget per size: the tokens axis has one value
    assert set(em[em.axis == "tokens"].verdict) == {"insufficient_data"}

    fits = pd.read_csv(out / "fits.csv")
    law = fits[(fits.law == "power_law") & (fits.scope == "ladder") & (fits.axis == "params")]
    assert set(law.param) == {"E", "A", "alpha"} and (law.status != "failed").all()
    assert {"ci_low", "ci_high", "rmse", "r2", "status"} <= set(fits.columns)
    bt = pd.read_csv(out / "backtest.csv")
    assert set(bt.holdout) == {1, 2}
    loss_bt = bt[bt.method == "power_law"]
    assert len(loss_bt) == 3 and (loss_bt.abs_error < 0.1).all()

    md = (out / "report.md").read_text()
    assert "addition" in md and "Metric artifact" in md
    assert "<table>" in (out / "report.html").read_text()


def test_report_without_optional_columns(run_report, capsys):
    df = make_results(optional=False, tasks={"chain": "flat"}, n_rungs=4)
    assert "chance" not in df.columns
    rc, out = run_report(df)
    assert rc == 0, capsys.readouterr().err
    md = (out / "report.md").read_text()
    assert "No task was found emergent" in md
    assert "no emergence to test" in md


def test_chinchilla_with_three_token_budgets(run_report, capsys):
    # 4 sizes x 3 budgets: the loss is planted as 1.5 + 30 N^-0.25 + 10 D^-0.2
    df = pd.concat([make_results(n_rungs=4, tasks={"chain": "flat"}, steps=STEPS[:cut],
                                 seed=cut).assign(run=lambda d, c=cut: d.run + f"-{c}")
                    for cut in (len(STEPS), len(STEPS) - 3, len(STEPS) - 6)])
    rc, out = run_report(df)
    assert rc == 0, capsys.readouterr().err
    fits = pd.read_csv(out / "fits.csv")
    chin = fits[fits.law == "chinchilla"].set_index("param")
    assert set(chin.index) == {"E", "A", "B", "alpha", "beta"}
    assert (chin.status != "failed").all()
    assert chin.loc["alpha", "ci_low"] <= 0.25 <= chin.loc["alpha", "ci_high"]
    assert "Chinchilla" in (out / "report.md").read_text()


def test_error_empty_file(tmp_path, capsys):
    (tmp_path / "empty.csv").write_text("")
    rc = main(["--results", str(tmp_path / "empty.csv"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_error_missing_columns(tmp_path, run_report, capsys):
    df = make_results(n_rungs=4, tasks={"chain": "flat"}).drop(columns=["flops", "n"])
    rc, out = run_report(df)
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "flops" in err
    assert err.count(str(tmp_path)) == 1  # the file is named once
    assert not out.exists()


def test_error_header_only_and_missing_path(tmp_path, capsys):
    (tmp_path / "head.csv").write_text(",".join(COLUMNS) + "\n")
    assert main(["--results", str(tmp_path / "head.csv"), "--out", str(tmp_path / "o")]) == 2
    assert main(["--results", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines)


def test_help_teaches(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--results" in text and "emergence.csv" in text and "schema" in text


def test_analysis_never_imports_torch():
    code = "import sys, analysis.report; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.slow
def test_report_speed(run_report):
    """~6 runs x 15 checkpoints x 20 task/shots x 5 metrics must report in under 10 s."""
    kinds = ["mirage", "smooth", "flat", "flat", "smooth"] * 4
    df = make_results(tasks={f"t{i}": k for i, k in enumerate(kinds)},
                      metrics=("exact_match", "token_accuracy", "edit_similarity",
                               "answer_logprob", "contains"))
    t0 = time.process_time()  # CPU time: wall time on a shared machine measures the others
    rc, _ = run_report(df, extra=["--bootstrap", "100"])
    assert rc == 0 and time.process_time() - t0 < 10


def test_report_names_curves_that_turn_back_and_outlier_sizes():
    from analysis.report import _section_emergence

    df = make_results(tasks={"copy": "smooth", "chain": "flat"})
    last = df.step == df.step.max()
    planted = last & (df.task == "copy") & (df.metric == "exact_match")
    # an inverted U over the six rungs: up over three, down over three
    level = {"R0": 0.1, "R1": 0.5, "R2": 0.9, "R3": 0.9, "R4": 0.5, "R5": 0.1}
    df.loc[planted, "value"] = [level[r] for r in df.loc[planted, "rung"]]
    em, _ = emergence.detect(df, n_boot=0)
    lines = _section_emergence(em, emergence.probe_rows(emergence.last_checkpoints(df)))
    turned = lines[lines.index(next(x for x in lines if x.startswith("Not monotone"))) + 2]
    assert turned.startswith("- `copy` (3-shot) exact_match (peak)")
    # only the 4th rung has the ability: one size, named as an outlier, the rest is flat
    df.loc[planted, "value"] = [1.0 if r == "R3" else 0.0 for r in df.loc[planted, "rung"]]
    em, _ = emergence.detect(df, n_boot=0)
    row = em[(em.task == "copy") & (em.metric == "exact_match") & (em.axis == "params")].iloc[0]
    assert row.verdict == "flat" and row.outlier == df[df.rung == "R3"].params.iloc[0]
    lines = _section_emergence(em, emergence.probe_rows(emergence.last_checkpoints(df)))
    assert any(x.startswith("- `copy` (3-shot) exact_match:") and "verdict flat" in x
               for x in lines)


def test_negative_bootstrap_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--results", str(tmp_path), "--out", str(tmp_path / "out"), "--bootstrap", "-1"])
    assert exc.value.code == 2 and "must be 0 or more" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
