"""`scaling report` end to end on planted synthetic results, and its error paths."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from analysis import dynamics, emergence, mirage
from analysis.report import main
from scaling.results import COLUMNS

BATCH_TOKENS = 4096
STEPS = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 1500, 2000, 2500]


def make_results(n_rungs: int = 6, tasks: dict | None = None, *, steps=STEPS, n: int = 300,
                 metrics=("exact_match", "token_accuracy", "edit_similarity",
                          "answer_logprob"),
                 optional: bool = True, seed: int = 0) -> pd.DataFrame:
    """A synthetic ladder in the results schema with planted abilities.

    Validation loss follows L = 1.5 + 30 N^-0.25 + 10 D^-0.2 (N params, D tokens; about 4.4
    to 2.6 at the end of training). Every task's per-token accuracy p is a function of that
    loss, so the same ability shows along training and across rungs:
    - "mirage": p = exp(-0.65 (L - 2.57)) rises smoothly (0.3 to 0.97 over the ladder);
      exact match = p^L with L = 8 answer tokens.
    - "smooth": p linear in the loss (0.15 to 0.6 over the ladder), exact match = p.
    - "flat": every score at chance plus noise.
    - "choice": a multiple-choice probe (metrics accuracy and gold_prob, chance 1/4) whose
      accuracy rises smoothly from chance.
    """
    tasks = tasks or {"addition": "mirage", "copy": "smooth", "chain": "flat"}
    rng = np.random.default_rng(seed)
    sizes = np.geomspace(2e4, 3e6, n_rungs).astype(int)
    rows = []
    for i, params in enumerate(sizes):
        run = f"r{i}"
        for step in steps:
            tokens = step * BATCH_TOKENS
            loss = 1.5 + 30 * params ** -0.25 + (10 * tokens ** -0.2 if tokens else 3.0)
            loss = float(loss * (1 + 0.003 * rng.standard_normal()))
            base = {"run": run, "rung": f"R{i}", "params": int(params),
                    "nonembed_params": int(params * 0.9), "step": step, "tokens": tokens,
                    "flops": 6.0 * params * tokens}
            if optional:
                base.update(seed=0, data_hash="abc123")
            rows.append(dict(base, task="val", shots=0, metric="loss", value=loss, n=50_000,
                             **({"chance": np.nan} if optional else {})))
            for task, kind in tasks.items():
                length, chance = (8, 0.0) if kind == "mirage" else (1, 0.1)
                if kind == "mirage":
                    p = float(np.clip(np.exp(-0.65 * (loss - 2.57)), 1e-3, 0.999))
                elif kind == "smooth":
                    p = float(np.clip(0.15 + 0.25 * (4.4 - loss), 0.02, 0.99))
                else:
                    p = 0.1
                scores = {"exact_match": rng.binomial(n, p ** length) / n,
                          "token_accuracy": rng.binomial(n * length, p) / (n * length),
                          "edit_similarity": float(np.clip(
                              0.2 + 0.8 * p + 0.01 * rng.standard_normal(), 0, 1)),
                          "answer_logprob": length * np.log(p) + 0.05 * rng.standard_normal(),
                          "contains": rng.binomial(n, min(1.0, 1.2 * p)) / n}
                if kind == "choice":
                    q = float(np.clip(0.25 + 0.3 * (4.4 - loss), 0.25, 0.95))
                    scores = {"accuracy": rng.binomial(n, q) / n,
                              "gold_prob": float(np.clip(q - 0.05 + 0.01 * rng.standard_normal(),
                                                         0, 1))}
                    chance = 0.25
                for metric in metrics if kind != "choice" else ("accuracy", "gold_prob"):
                    row = dict(base, task=task, shots=0 if kind != "smooth" else 3,
                               metric=metric, value=float(scores[metric]), n=n)
                    if optional:
                        row["chance"] = chance if metric in ("exact_match", "accuracy") \
                            else np.nan
                    rows.append(row)
    return pd.DataFrame(rows)


def _run(tmp_path, df, name="results.csv", extra=()):
    src = tmp_path / name
    df.to_csv(src, index=False)
    out = tmp_path / "out"
    return main(["--results", str(src), "--out", str(out), "--bootstrap", "30", *extra]), out


def test_report_end_to_end(tmp_path, capsys):
    rc, out = _run(tmp_path, make_results(tasks={"addition": "mirage", "copy": "smooth",
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


def test_report_without_optional_columns(tmp_path, capsys):
    df = make_results(optional=False, tasks={"chain": "flat"}, n_rungs=4)
    assert "chance" not in df.columns
    rc, out = _run(tmp_path, df)
    assert rc == 0, capsys.readouterr().err
    md = (out / "report.md").read_text()
    assert "No task was found emergent" in md
    assert "no emergence to test" in md


def test_chinchilla_with_three_token_budgets(tmp_path, capsys):
    # 4 sizes x 3 budgets: the loss is planted as 1.5 + 30 N^-0.25 + 10 D^-0.2
    df = pd.concat([make_results(n_rungs=4, tasks={"chain": "flat"}, steps=STEPS[:cut],
                                 seed=cut).assign(run=lambda d, c=cut: d.run + f"-{c}")
                    for cut in (len(STEPS), len(STEPS) - 3, len(STEPS) - 6)])
    rc, out = _run(tmp_path, df)
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


def test_error_missing_columns(tmp_path, capsys):
    df = make_results(n_rungs=4, tasks={"chain": "flat"}).drop(columns=["flops", "n"])
    rc, out = _run(tmp_path, df)
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
def test_report_speed(tmp_path):
    """~6 runs x 15 checkpoints x 20 task/shots x 5 metrics must report in under 10 s."""
    kinds = ["mirage", "smooth", "flat", "flat", "smooth"] * 4
    df = make_results(tasks={f"t{i}": k for i, k in enumerate(kinds)},
                      metrics=("exact_match", "token_accuracy", "edit_similarity",
                               "answer_logprob", "contains"))
    t0 = time.process_time()  # CPU time: wall time on a shared machine measures the others
    rc, _ = _run(tmp_path, df, extra=["--bootstrap", "100"])
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
