"""Throughput of the native evaluator vs the lm-eval path, on the same checkpoint and tasks.

    python bench/eval_throughput.py --checkpoint runs/default/s3/checkpoints/step_001464.pt
    python bench/eval_throughput.py --untrained s3 --n 200   # no trained checkpoint needed
    python bench/eval_throughput.py --checkpoint RUN_DIR --cli  # also time `scaling lm-eval`

Both paths score the same instances of the same tasks with the same model, in one process,
with the same torch thread count and batch size, and glibc told to keep freed memory
(scaling/allocator.py) as `scaling eval` and `scaling lm-eval` both do. Both clocks run from
a checkpoint on disk to scores: the native evaluator from `evaluate_run` to rows in
results.csv (model load, tokenizing, scoring, writing); lm-eval from `simple_evaluate` to
its results dict (task loading, model load, requests, metrics). Generating the held-out
instances is shared preparation and timed apart: the native path caches them per process,
the lm-eval path reads them from the export (YAML + JSONL) written before its clock starts.
A warm-up forward pass runs before both, so neither pays torch's one-time start-up, and the
paths alternate for `--rounds` rounds, each keeping its best time (a process's first pass
over the tasks is slower, whichever path makes it). It prints examples/s of each path, the
ratio, the token positions each path runs through the model (the work it asks for) and
the seconds spent in the model, split into passes over many tokens (prompts, teacher
forcing) and one-token decoding steps, and checks that the scores agree (exact match etc.
equal, log-probabilities within 1e-4).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _untrained_checkpoint(size: str, folder: Path) -> Path:
    from scaling import ladder
    from scaling.checkpoint import save_checkpoint
    from scaling.model import GPT

    cfg = ladder.gpt_config(size, vocab_size=128, block_size=128)
    model = GPT(cfg, seed=0)
    counts = model.num_scaling_params()
    return save_checkpoint(folder, 0, {"model": model.state_dict(),
                                       "model_config": dataclasses.asdict(cfg)},
                           {"run": f"untrained-{size}", "rung": size, "params": counts["total"],
                            "nonembed_params": counts["nonembed"], "tokens": 0, "flops": 0.0,
                            "tokenizer": "char"})


@dataclasses.dataclass
class ModelWork:
    """Token positions (padding included) given to the model and seconds spent in it, for
    passes over several tokens per row and for one-token decoding steps."""

    pass_positions: int = 0
    pass_s: float = 0.0
    step_positions: int = 0
    step_s: float = 0.0

    @property
    def positions(self) -> int:
        return self.pass_positions + self.step_positions

    @property
    def seconds(self) -> float:
        return self.pass_s + self.step_s


@contextlib.contextmanager
def measuring_model_work(works: dict, key: str):
    """Add to works[key] (a ModelWork) the token positions that every GPT forward call
    inside the block is given, and the time it takes: the work each path asks of the model,
    whichever way it batches. A counter and a clock read per call, nothing per token."""
    from scaling.model import GPT

    forward = GPT.forward
    work = works.setdefault(key, ModelWork())

    def counted(self, idx, *args, **kwargs):
        t0 = time.perf_counter()
        out = forward(self, idx, *args, **kwargs)
        seconds = time.perf_counter() - t0
        if idx.size(1) == 1:
            work.step_positions += idx.numel()
            work.step_s += seconds
        else:
            work.pass_positions += idx.numel()
            work.pass_s += seconds
        return out

    GPT.forward = counted
    try:
        yield
    finally:
        GPT.forward = forward


def _per_position(seconds: float, positions: int) -> str:
    return f"{1e6 * seconds / positions:.1f} us/position" if positions else "-"


def _fresh_run(ckpt: Path, run: Path) -> Path:
    """A run directory holding only a copy of the checkpoint (nothing scored yet)."""
    (run / "checkpoints").mkdir(parents=True)
    for suffix in (".pt", ".json"):
        shutil.copy(ckpt.with_suffix(suffix), run / "checkpoints" / ckpt.with_suffix(suffix).name)
    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a step_*.pt file or a run directory (last checkpoint)")
    src.add_argument("--untrained", metavar="RUNG", help="benchmark an untrained rung (e.g. s3)")
    p.add_argument("--tasks", default="default", help="task names or ids (default: all)")
    p.add_argument("--n", type=int, default=0, help="instances per task (default: the tasks' n)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for both paths")
    p.add_argument("--rounds", type=int, default=2,
                   help="timed rounds of both paths (each keeps its best; default 2)")
    p.add_argument("--cli", action="store_true",
                   help="also time `scaling lm-eval run` (lm-eval's CLI, which indexes "
                        "lm-eval's built-in tasks before it starts)")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds must be at least 1, got {args.rounds}")

    import lm_eval
    import pandas as pd
    import torch
    from lm_eval.tasks import TaskManager

    import scaling.lm_eval_backend  # noqa: F401  (registers the `scaling` model)
    from scaling.allocator import keep_freed_memory
    from scaling.checkpoint import load_model
    from scaling.evaluate import evaluate_run
    from scaling.lm_eval_backend import cli_main, resolve_checkpoint
    from scaling.lm_eval_tasks import export, lm_eval_name
    from scaling.tasks import get_tasks
    from scaling.tasks.base import _heldout  # the per-process instance cache

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    kept = keep_freed_memory()  # as `scaling eval` and `scaling lm-eval` do: both paths
    tmp = Path(tempfile.mkdtemp(prefix="eval_bench_"))
    try:
        if args.checkpoint:
            ckpt = resolve_checkpoint(args.checkpoint)
        else:
            ckpt = _untrained_checkpoint(args.untrained, tmp / "source")
        tasks = get_tasks(args.tasks)
        if args.n:
            tasks = [dataclasses.replace(t, n=args.n) for t in tasks]
        # Instances are generated before both clocks: the lm-eval path reads them from the
        # export, the native path from the per-process cache (filled here, timed apart).
        _heldout.cache_clear()
        t0 = time.perf_counter()
        n_examples = sum(len(t.examples()) for t in tasks)
        instances_s = time.perf_counter() - t0
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        names = export(tmp / "tasks", tasks=tasks, tokenizer=json.loads(
            ckpt.with_suffix(".json").read_text()).get("tokenizer", "char"),
            block_size=state["model_config"]["block_size"])

        with torch.inference_mode():  # warm-up: torch's first ops pay one-time costs
            model, _ = load_model(ckpt)
            model(torch.zeros(8, 16, dtype=torch.long))
        # Rounds alternate the two paths and each keeps its best time: whichever runs first
        # in a process also pays the process's warm-up (a sizeable share of the native time;
        # measured: docs/LOG.md), so one round in a fixed order favours the second path.
        native_times, lm_eval_times, work = [], [], {}
        for r in range(args.rounds):
            run = _fresh_run(ckpt, tmp / f"run{r}")
            with measuring_model_work(work, f"native{r}"):
                t0 = time.perf_counter()
                evaluate_run(run, tasks=tasks, progress=False, batch_size=args.batch_size,
                             threads=args.threads)
                native_times.append(time.perf_counter() - t0)

            with measuring_model_work(work, f"lm-eval{r}"):
                t0 = time.perf_counter()
                tm = TaskManager(include_path=str(tmp / "tasks"), include_defaults=False)
                out = lm_eval.simple_evaluate(
                    model="scaling", tasks=names, task_manager=tm,
                    model_args=f"checkpoint={ckpt},batch_size={args.batch_size},"
                               f"threads={args.threads}")
                lm_eval_times.append(time.perf_counter() - t0)
        native_s, lm_eval_s = min(native_times), min(lm_eval_times)

        cli_s, cli_results = None, None
        if args.cli:
            t0 = time.perf_counter()
            code = cli_main(["run", "--model", "scaling", "--model_args",
                             f"checkpoint={ckpt},batch_size={args.batch_size},"
                             f"threads={args.threads}", "--tasks", ",".join(names),
                             "--include_path", str(tmp / "tasks"),
                             "--output_path", str(tmp / "cli")])
            cli_s = time.perf_counter() - t0
            files = sorted((tmp / "cli").rglob("results_*.json"))
            if code or not files:
                print(f"lm-eval CLI failed (exit code {code})", file=sys.stderr)
                return 1
            cli_results = json.loads(files[-1].read_text())["results"]

        df = pd.read_csv(run / "results.csv")
        ours = {(r.task, r.shots, r.metric): r.value for r in df.itertuples()}
        worst_lp, mismatches = 0.0, []
        for results in filter(None, [out["results"], cli_results]):
            for task in tasks:
                res = results[lm_eval_name(task)]
                for metric in task.metrics:
                    a, b = ours[(task.name, task.shots_column, metric)], res[f"{metric},none"]
                    if metric in ("answer_logprob", "gold_prob"):
                        worst_lp = max(worst_lp, abs(a - b))
                    elif metric == "answer_prob":  # a product of probabilities: compare logs
                        worst_lp = max(worst_lp, abs(math.log(a) - math.log(b)))
                    elif abs(a - b) > 1e-12:
                        mismatches.append(f"{task.id}/{metric}: native {a} lm-eval {b}")
        meta = json.loads(ckpt.with_suffix(".json").read_text())
        print(f"checkpoint: {ckpt} (rung {meta.get('rung')}, {meta.get('params')} params, "
              f"step {meta.get('step')})")
        print(f"tasks: {len(tasks)}, instances: {n_examples}, batch size {args.batch_size}, "
              f"torch threads {torch.get_num_threads()}, device cpu, freed memory kept "
              f"(scaling/allocator.py): {'yes' if kept else 'no'}")
        print(f"instances: {instances_s:7.2f} s  (generated once, before both clocks)")
        rounds = f"best of {args.rounds} rounds, each round native then lm-eval"

        def each(times):
            return ", ".join(f"{t:.2f}" for t in times)

        print(f"native   : {native_s:7.2f} s  {n_examples / native_s:9.1f} examples/s  "
              f"(rounds: {each(native_times)} s)")
        print(f"lm-eval  : {lm_eval_s:7.2f} s  {n_examples / lm_eval_s:9.1f} examples/s  "
              f"(rounds: {each(lm_eval_times)} s)")
        print(f"speed-up : {lm_eval_s / native_s:.1f}x (native over lm-eval; {rounds}; first "
              f"round alone: {lm_eval_times[0] / native_times[0]:.1f}x)")
        # The work of the best round of each path (every round asks for the same positions).
        native_work = work[f"native{native_times.index(native_s)}"]
        lm_eval_work = work[f"lm-eval{lm_eval_times.index(lm_eval_s)}"]
        print(f"positions through the model (padding included): native "
              f"{native_work.positions:,}, lm-eval {lm_eval_work.positions:,} "
              f"({lm_eval_work.positions / max(native_work.positions, 1):.1f}x; lm-eval asks one "
              "loglikelihood request per gold token, each a full forward pass)")
        for name, work, total in (("native", native_work, native_s),
                                  ("lm-eval", lm_eval_work, lm_eval_s)):
            print(f"  {name:8s} in the model {work.seconds:6.2f} s of {total:.2f}: passes "
                  f"{work.pass_positions:,} positions in {work.pass_s:.2f} s "
                  f"({_per_position(work.pass_s, work.pass_positions)}), decoding steps "
                  f"{work.step_positions:,} in {work.step_s:.2f} s "
                  f"({_per_position(work.step_s, work.step_positions)})")
        if cli_s is not None:
            print(f"lm-eval CLI: {cli_s:5.2f} s  {n_examples / cli_s:9.1f} examples/s  "
                  f"({cli_s / native_s:.1f}x slower than native)")
        ok = not mismatches and worst_lp <= 1e-4
        print(f"scores equal: {'yes' if ok else 'NO'} (exact match / accuracy / token accuracy "
              f"/ edit similarity: {len(mismatches)} mismatches; max |log-prob metric "
              f"difference| {worst_lp:.2e})")
        for line in mismatches[:10]:
            print("  " + line)
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
