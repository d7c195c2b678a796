"""Score every checkpoint of a run on the probe tasks: `scaling eval RUN_DIR [--tasks a,b]`.

For each (checkpoint, task) not yet in `RUN_DIR/results.csv`, the model is run over the
task's held-out instances and one row per metric is appended in the results schema
(scaling/results.py), with `n`, `chance` (where known) and `stderr`. Re-running skips
what is already scored, so a task added to the registry later is scored on old checkpoints
without retraining.

"Already scored" means every metric row of the task is there. A metric added to
scaling/metrics.py later (answer_prob was) is missing from older results, so the next
`scaling eval` of such a run re-scores each (checkpoint, task) that lacks it, with all of
the task's metrics: the new rows replace the old ones of the same key (the same values,
scoring being deterministic for a given device and batch size) and the new metric is
added. Tasks whose metrics are all present (here the multiple-choice ones) are skipped.

This module is the run loop and the CLI. One checkpoint is scored by scaling/scorer.py
(task instances, rows), in this process or in worker processes (scaling/eval_pool.py);
the model-level scoring, and how each kind of task is scored, is in scaling/scoring.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from scaling.allocator import keep_freed_memory
from scaling.checkpoint import (
    CheckpointError, list_checkpoints, read_metadata, unfinished_checkpoints)
from scaling.eval_pool import default_workers, score_in_pool
from scaling.results import KEY, RESULTS_FILE, ResultsError, append_rows, read_file
from scaling.scorer import EvalError, PendingCheckpoint, resolve_device, score_here
from scaling.scoring import DEFAULT_BATCH_SIZE, DEFAULT_THREADS
from scaling.tasks import Task, UnknownTaskError, get_tasks


def _scored_keys(run_dir: Path) -> set[tuple]:
    """The result keys (scaling.results.KEY) already in the run's results file."""
    path = run_dir / RESULTS_FILE
    if not path.exists():
        return set()
    df = read_file(path)
    return set(map(tuple, df[KEY].itertuples(index=False, name=None)))


def _pending(run_dir: Path, ckpts: list[tuple[int, Path]], tasks: list[Task]
             ) -> list[PendingCheckpoint]:
    """The checkpoints of `ckpts` (step, path) with the tasks whose metric rows are not all
    in results.csv yet; checkpoints with none left are dropped."""
    done = _scored_keys(run_dir)
    plan = []
    for step, path in ckpts:
        meta = read_metadata(path)
        meta.setdefault("step", step)
        run = str(meta.get("run") or run_dir.name)
        pending = [t for t in tasks
                   if any((run, step, t.name, t.shots_column, m) not in done for m in t.metrics)]
        if pending:
            plan.append(PendingCheckpoint(path=path, meta=meta, run=run, tasks=pending))
    return plan


def evaluate_run(run_dir, tasks=None, progress: bool = True, checkpoints: str = "all",
                 batch_size: int = DEFAULT_BATCH_SIZE, device: str = "auto",
                 threads: int = DEFAULT_THREADS, n: int | None = None,
                 workers: int = 1, on_rows=None) -> int:
    """Score every checkpoint of `run_dir` on `tasks`; returns the number of rows written.

    n: instances per task instead of each task's default (the same instances, fewer).
    workers: checkpoints scored at once, each in its own process with `threads` threads
    (scaling/eval_pool.py); 1 scores them in this process. Rows are written checkpoint by
    checkpoint in step order either way. on_rows: called with each checkpoint's rows once
    they are written (the wandb logger: one point per checkpoint on every series).

    tasks: None / "default" (every registered task), names or ids (comma-separated string
    or list), or Task objects. checkpoints: "all" or "last". (checkpoint, task) pairs whose
    metric rows are all in results.csv already are skipped without loading anything.
    Raises EvalError, UnknownTaskError or CheckpointError with one-line messages.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EvalError(f"{run_dir}: no such run directory")
    if checkpoints not in ("all", "last"):
        raise EvalError(f"--checkpoints must be 'all' or 'last', got {checkpoints!r}")
    if workers < 1:
        raise EvalError(f"--workers must be >= 1, got {workers}")
    task_list = get_tasks(tasks)
    if n:
        task_list = [dataclasses.replace(t, n=n) for t in task_list]
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise EvalError(f"{run_dir}: no checkpoints (expected {run_dir / 'checkpoints'}/"
                        "step_*.pt with its .json)")
    if checkpoints == "last":
        ckpts = ckpts[-1:]
    plan = _pending(run_dir, ckpts, task_list)
    total = sum(len(checkpoint.tasks) for checkpoint in plan)
    if total == 0:
        return 0
    device = resolve_device(device)
    from scaling.progress import progress_bar

    with progress_bar(total=total, disable=not progress, unit="task",
                      desc=f"eval {run_dir.name}") as bar:
        if workers > 1 and len(plan) > 1:
            rows_per_checkpoint = score_in_pool(plan, workers, threads, batch_size, device,
                                                bar)
        else:
            rows_per_checkpoint = score_here(plan, threads, batch_size, device, bar)
        written = 0
        for rows in rows_per_checkpoint:
            append_rows(run_dir, rows)  # per checkpoint: a crash keeps finished work
            written += len(rows)
            if on_rows is not None:
                on_rows(rows)
    return written


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """Argument parser for `scaling eval`."""
    p = argparse.ArgumentParser(
        prog="scaling eval",
        description="Score every checkpoint of a run on the probe tasks; rows are appended "
                    "to RUN_DIR/results.csv and already scored (checkpoint, task) pairs "
                    "are skipped.")
    p.add_argument("run_dir", nargs="?", help="run directory (holds checkpoints/)")
    p.add_argument("--tasks", default="default",
                   help="comma-separated task names or ids (default: every registered task)")
    p.add_argument("--checkpoints", choices=("all", "last"), default="all",
                   help="score every checkpoint (default) or only the last one")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                   help=f"rows per forward pass (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                   help=f"torch CPU threads (default {DEFAULT_THREADS}; 0 = torch's default)")
    p.add_argument("--workers", default="auto",
                   help="checkpoints scored at once, one process each (default auto: one per "
                        "--threads CPUs, e.g. 2 on a 2-core machine; 1 on a GPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list-tasks", action="store_true",
                   help="print the registered tasks and exit")
    return p


def _parse_workers(value: str, threads: int, device: str) -> int:
    """--workers as a number (`evaluate_run` checks its range)."""
    if value == "auto":
        return default_workers(threads, device)
    try:
        return int(value)
    except ValueError:
        raise EvalError(f"--workers must be a number or 'auto', got {value!r}") from None


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; one-line `error: ...` on stderr and exit code 2 on bad input."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        if args.list_tasks:
            for t in get_tasks(args.tasks):
                print(f"{t.id:<18} task={t.name} shots={t.shots_column} kind={t.kind} "
                      f"n<={t.n}")
            return 0
        if not args.run_dir:
            raise EvalError("missing RUN_DIR (usage: scaling eval RUN_DIR [--tasks a,b])")
        if args.batch_size < 1:
            raise EvalError(f"--batch-size must be >= 1, got {args.batch_size}")
        workers = _parse_workers(args.workers, args.threads, args.device)
        keep_freed_memory()
        from scaling.logger import for_eval

        logger = for_eval(Path(args.run_dir))  # adds to the run's own wandb run, if it had one
        try:
            n = evaluate_run(args.run_dir, tasks=args.tasks, progress=not args.no_progress,
                             checkpoints=args.checkpoints, batch_size=args.batch_size,
                             device=args.device, threads=args.threads, workers=workers,
                             on_rows=logger.log_eval_rows)
        finally:
            logger.finish()
    except (EvalError, UnknownTaskError, CheckpointError, ResultsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: {Path(args.run_dir) / RESULTS_FILE} holds every checkpoint "
              "scored so far; the same command scores the rest", file=sys.stderr)
        return 130
    print(f"wrote {n} result rows to {Path(args.run_dir) / RESULTS_FILE}")
    unfinished = unfinished_checkpoints(Path(args.run_dir))
    if unfinished:  # skipped by design (see scaling/checkpoint.py), but say so
        names = ", ".join(p.name for p in unfinished)
        print(f"note: skipped {len(unfinished)} unfinished checkpoint(s) without their "
              f"metadata JSON (a write interrupted or still going on): {names}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
