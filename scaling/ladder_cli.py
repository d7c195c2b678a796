"""`scaling ladder`: the main job. Plan, run the ladder sweep locally, then write the report.

    scaling ladder                  # the default CPU ladder (sweeps/ladder.yaml): reports/ladder/
    scaling ladder --preset quick   # four rungs, a few minutes
    scaling ladder --preset seeds   # after the default ladder: seeds 1, 2 of s3..s6 (spread)
    scaling ladder --preset distill # after the default ladder: s1..s5 distilled from its s6
    scaling ladder --preset study   # the shipped study in reports/: s0..s4 x 3 seeds, ~40 min
    scaling ladder --preset mlm     # the default ladder's rungs as BERT encoders (runs/mlm)
    scaling ladder --list           # the rungs: shape, parameters, FLOPs per token, LR, batch
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from scaling import ladder, run_info
from scaling.config import load_config
from scaling.sweep import FAILED, FINISHED, SKIPPED

# The sweep YAMLs are package data, so an installed `scaling ladder` finds them anywhere;
# the repository's top-level sweeps/ is a link to this folder (`wandb sweep sweeps/...`).
SWEEPS_DIR = Path(__file__).resolve().parent / "sweeps"
PRESETS = {"cpu": "ladder.yaml", "quick": "quick.yaml", "tiny": "tiny.yaml",
           "seeds": "seeds.yaml", "study": "study.yaml", "distill": "distill.yaml",
           "mlm": "mlm.yaml"}
# Sustained share of the matmul peak a training step reaches across the CPU ladder
# (bench/train_throughput.py; measured: docs/LOG.md); used only for the time estimate in the
# plan.
PLAN_EFFICIENCY = 0.5


def _print_rungs(names: list[str]) -> None:
    print(f"{'rung':<5} {'layers':>6} {'width':>5} {'heads':>5} {'params':>11} "
          f"{'nonembed':>11} {'FLOPs/token':>12} {'lr':>8} {'batch':>5}")
    for r in ladder.describe(names):
        print(f"{r['rung']:<5} {r['n_layer']:>6} {r['d_model']:>5} {r['n_head']:>5} "
              f"{r['params']:>11,} {r['nonembed_params']:>11,} {r['flops_per_token']:>12.3g} "
              f"{r['lr']:>8.2g} {r['batch_size']:>5}")
    print("lr and batch: the OLMo ladder rules (scaling/ladder.py); the CPU sweeps pin the "
          "batch to 16 sequences of 128 tokens.")


def _peak_flops() -> float:
    """A quick fp32 matmul measurement (0.5 s) for the plan's time estimate."""
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 0.5:
        a @ b
        reps += 1
    return 2 * 1024**3 * reps / (time.perf_counter() - t0)


def print_plan(sweep, peak: float) -> float:
    """Print rungs, parameters, tokens and an estimated time; return the estimate (s)."""
    from scaling.sweep import run_args
    from scaling.train import make_plan

    total = 0.0
    print(f"plan: sweep {sweep.name!r}, {len(sweep.runs)} runs "
          f"(matmul peak here {peak / 1e9:.0f} GFLOP/s)")
    print(f"  {'rung':<5} {'params':>11} {'nonembed':>11} {'tokens':>11} {'batch':>5} "
          f"{'steps':>6} {'est. train':>10}")
    for run in sweep.runs:
        cfg = load_config(None, run_args(run))
        plan = make_plan(cfg, vocab_size=cfg.model.vocab_size or 128)
        seconds = plan.flops_per_token * plan.total_steps * plan.tokens_per_step / (
            peak * PLAN_EFFICIENCY)
        total += seconds
        print(f"  {cfg.model.size:<5} {plan.params:>11,} {plan.nonembed_params:>11,} "
              f"{plan.total_steps * plan.tokens_per_step:>11,} {plan.batch_size:>5} "
              f"{plan.total_steps:>6} {seconds / 60:>9.1f}m")
    print(f"  estimated training time {total / 60:.1f} min (+ evaluation and report)")
    return total


def timing_summary(run_dirs: list[Path]) -> dict[str, float]:
    """Sum the train/eval seconds the runs recorded in their run.json."""
    out = {"train": 0.0, "eval": 0.0}
    for d in run_dirs:
        info = run_info.read(d)
        out["train"] += info.get("train_seconds", 0.0)
        out["eval"] += info.get("eval_seconds", 0.0)
    return out


# run.root of sweeps/ladder.yaml and sweeps/seeds.yaml, and of sweeps/study.yaml: the runs
# the committed reports show
DEFAULT_ROOT = Path("runs/ladder")
STUDY_ROOT = Path("runs/study")
# The committed reports: the study in reports/, the default ladder (with its seeds, which
# share its runs) in reports/ladder/.
COMMITTED = {("study", STUDY_ROOT): Path("reports"),
             ("ladder", DEFAULT_ROOT): Path("reports/ladder"),
             ("seeds", DEFAULT_ROOT): Path("reports/ladder")}


def report_dir(sweep_name: str, root: Path) -> Path:
    """Where a sweep's report goes by default: the study into reports/, the default ladder
    and its seed replicates into reports/ladder/; any other sweep, a copy of those with
    another run root included, reports beside its runs (ROOT/report), so a quick look, a
    re-run elsewhere or a test never overwrites a committed report."""
    for (name, committed_root), out in COMMITTED.items():
        if sweep_name == name and Path(root).resolve() == committed_root.resolve():
            return out
    return Path(root) / "report"


def where_message(sweep, out: str | None) -> str:
    """Where a sweep's runs, corpus cache and report go: run.root and run.data_root are
    relative to the current directory (the YAMLs say runs/<sweep> and data), so the same
    command works from a checkout or, installed, from any directory."""
    from scaling.sweep import run_args

    cfg = load_config(None, run_args(sweep.runs[0]))
    root = cfg.run_dir().parent
    report = Path(out) if out else report_dir(sweep.name, root)
    return (f"  runs in {root.resolve()}, corpus cache in {Path(cfg.run.data_root).resolve()}, "
            f"report to {report.resolve()}")


def main(argv: list[str] | None = None) -> int:
    """Entry point for `scaling ladder`."""
    p = argparse.ArgumentParser(prog="scaling ladder", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS),
                   help="which sweep in sweeps/ to run (default: cpu = sweeps/ladder.yaml)")
    p.add_argument("--sweep", help="run this sweep YAML instead of a preset")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="runs at a time (default: one per CPU core, %(default)s here; the CPU "
                        "sweeps train each run on one thread)")
    p.add_argument("--out", help="report directory (default: reports/ for the study, "
                                 "reports/ladder/ for the default ladder and its seeds, "
                                 "RUN_ROOT/report/ for any other sweep)")
    p.add_argument("--list", action="store_true", help="print the rungs and exit")
    p.add_argument("--ladder", default="cpu", choices=sorted(ladder.LADDERS),
                   help="which named ladder --list prints")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        _print_rungs(ladder.LADDERS[args.ladder])
        return 0
    if args.jobs < 1:
        print(f"error: --jobs must be at least 1, got {args.jobs}", file=sys.stderr)
        return 2

    from scaling.sweep import INTERRUPTED_MESSAGE, SweepError, load_sweep, run_dir_of, run_sweep

    try:
        sweep = load_sweep(args.sweep or SWEEPS_DIR / PRESETS[args.preset])
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_plan(sweep, _peak_flops())
    print(where_message(sweep, args.out))
    t0 = time.perf_counter()
    try:
        outcome = run_sweep(sweep, args.jobs)
    except KeyboardInterrupt:
        print(f"\n{INTERRUPTED_MESSAGE}; no report was written", file=sys.stderr)
        return 130
    sweep_seconds = time.perf_counter() - t0
    failed = [k for k, v in outcome.items() if v == FAILED]
    if failed:
        print(f"error: {len(failed)} run(s) failed ({', '.join(failed)}); see "
              "sweep_state.json, then run the same command again to retry", file=sys.stderr)
        return 1
    run_dirs = [run_dir_of(r) for r in sweep.runs]
    root = run_dirs[0].parent

    from scaling.results import load

    out = Path(args.out or report_dir(sweep.name, root))
    # the runs' own results, not an earlier report's copy of them (ROOT/report/results.csv)
    results = load(root, exclude=out)
    out.mkdir(parents=True, exist_ok=True)
    stored = out / "results.csv"
    results.to_csv(stored.with_suffix(".csv.tmp"), index=False)
    shutil.move(stored.with_suffix(".csv.tmp"), stored)  # the report reads stored results only
    t1 = time.perf_counter()
    from analysis.report import main as report_main

    code = report_main(["--results", str(stored), "--out", str(out)])
    report_seconds = time.perf_counter() - t1
    print(done_message(run_dirs, outcome, sweep_seconds + report_seconds, report_seconds) +
          f" Report: {out / 'report.md'}")
    return code


def done_message(run_dirs: list[Path], outcome: dict[str, str], wall_seconds: float,
                 report_seconds: float) -> str:
    """The closing line: wall time, and the train/eval time of the runs done by this call
    (finished runs that were reused cost nothing now, so they are counted apart)."""
    ran = [d for d in run_dirs if outcome.get(str(d)) == FINISHED]
    reused = sum(outcome.get(str(d)) == SKIPPED for d in run_dirs)
    spent = timing_summary(ran)
    return (f"ladder done in {wall_seconds / 60:.1f} min: {len(ran)} run(s) done now (train "
            f"{spent['train'] / 60:.1f} min, eval {spent['eval'] / 60:.1f} min, summed over "
            f"runs), {reused} finished run(s) reused, report {report_seconds:.1f} s.")
