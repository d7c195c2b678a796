"""Run a wandb sweep YAML locally, with no W&B server: `scaling sweep FILE [--jobs N]`.

The file is a valid wandb sweep config (method, parameters, command); `wandb sweep FILE` +
`wandb agent ID` run the same thing on a server. Here the runner expands `grid` and
`random` (seeded) methods itself and launches every run as a subprocess with exactly the
arguments an agent would pass (`--section.key=value`), using the current interpreter for
`${interpreter}`.

It is idempotent: a run whose directory says it is finished is skipped, a half-finished one
resumes from its last checkpoint (the training program does that), a failing run is
recorded with its error in `sweep_state.json` and never stops the others, and the next call
retries it. Ctrl-C (or SIGTERM) stops the runs that are going at their last checkpoint and
starts no other; the same command resumes them.

A sweep's runs train rungs (`scaling.train`: each run's arguments are a training config) or
run another program of PROGRAMS (`-m scaling.finetune` in the command: fine-tuning runs),
which reads its own arguments into the same record, a `Target`: where the run lives, and
whether it is finished when trained or only when evaluated.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import math
import os
import random
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from scaling import atomic, progress, run_info
from scaling.config import load_config, yaml_problem
from scaling.provenance import stale_code_message

METHODS = ("grid", "random")
SERVER_ONLY_METHODS = ("bayes",)
TOP_LEVEL_KEYS = {"program", "method", "parameters", "command", "name", "description",
                  "metric", "early_terminate", "run_cap", "project", "entity"}
DISTRIBUTIONS = {"uniform", "log_uniform_values", "int_uniform", "q_uniform", "categorical",
                 "q_log_uniform_values", "normal", "log_normal"}
MACROS = {"${env}", "${interpreter}", "${program}", "${args}", "${args_no_hyphens}"}
STATE_FILE = "sweep_state.json"
# What became of a run: its `status` in sweep_state.json and its outcome in `run_sweep`'s
# answer. RUNNING is a state only, SKIPPED (finished before this call) an outcome only: the
# state records a skipped run as FINISHED.
RUNNING, FINISHED, SKIPPED, FAILED, INTERRUPTED = (
    "running", "finished", "skipped", "failed", "interrupted")
INTERRUPTED_MESSAGE = ("interrupted: the runs that were going stopped at their last checkpoint "
                       "and no other run started; the same command resumes them")


class SweepError(ValueError):
    """A sweep file that cannot be run, in one line."""


@dataclass
class Sweep:
    """A parsed, validated sweep: its name, the runs' arguments and the command template."""

    name: str
    method: str
    command: list[str]
    program: str
    runs: list[dict] = field(default_factory=list)  # one {param: value} dict per run


@dataclass
class Target:
    """What the runner needs to know of one run, whatever program it runs."""

    dir: Path  # the run directory: its run.json says whether the run is finished
    root: Path  # the sweep's directory: sweep_state.json (the runs' logs go next to dir)
    needs_eval: bool  # finished means evaluated, not only trained
    flops: Callable[[], float]  # planned training FLOPs for the start order (0: unknown)


# Programs a sweep may run besides scaling.train (whose runs' arguments are training
# configs): module -> (module, function) that reads one run's arguments into a Target
# (ValueError with a one-line message for arguments the program refuses).
PROGRAMS = {"scaling.finetune": ("scaling.finetune", "sweep_target")}


def _flatten(params: dict, prefix: tuple = ()) -> dict[tuple, dict]:
    """Leaf parameter specs keyed by their path; wandb nests `parameters:` for mappings."""
    flat = {}
    for name, spec in params.items():
        path = prefix + (str(name),)
        if not isinstance(spec, dict):
            raise SweepError(f"parameter {'.'.join(path)!r} must be a mapping (value/values/...)")
        if "parameters" in spec:
            flat.update(_flatten(spec["parameters"], path))
        else:
            flat[path] = spec
    return flat


def _nest(values: dict[tuple, object]) -> dict:
    """Rebuild a run's top-level parameters: a nested parameter arrives as a dict, as the
    wandb server sends it (`--data={'train_tokens': 1000}`)."""
    run: dict = {}
    for path, value in values.items():
        node = run
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return run


def _grid_values(name: str, spec: dict) -> list:
    if "value" in spec:
        return [spec["value"]]
    if "values" in spec:
        if not isinstance(spec["values"], list) or not spec["values"]:
            raise SweepError(f"parameter {name!r}: values must be a non-empty list")
        return spec["values"]
    raise SweepError(f"parameter {name!r}: a grid sweep needs value or values, got "
                     f"{', '.join(spec) or 'nothing'}")


def _draw(name: str, spec: dict, rng: random.Random):
    """One random draw of a parameter, with wandb's distribution names."""
    if "value" in spec or "values" in spec and "distribution" not in spec:
        return rng.choice(_grid_values(name, spec))
    dist = spec.get("distribution")
    if dist not in DISTRIBUTIONS:
        raise SweepError(f"parameter {name!r}: unknown distribution {dist!r}")
    lo, hi = spec.get("min"), spec.get("max")
    if dist == "categorical":
        return rng.choice(_grid_values(name, spec))
    if dist in ("normal", "log_normal"):
        x = rng.gauss(spec.get("mu", 0.0), spec.get("sigma", 1.0))
        return math.exp(x) if dist == "log_normal" else x
    if lo is None or hi is None or lo > hi:
        raise SweepError(f"parameter {name!r}: {dist} needs min <= max")
    if dist == "int_uniform":
        return rng.randint(int(lo), int(hi))
    if dist in ("log_uniform_values", "q_log_uniform_values"):
        if lo <= 0:
            raise SweepError(f"parameter {name!r}: {dist} needs min > 0")
        x = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    else:
        x = rng.uniform(lo, hi)
    if dist.startswith("q_"):
        q = spec.get("q", 1)
        x = round(x / q) * q
    return x


def load_sweep(path: str | Path, seed: int = 0) -> Sweep:
    """Read, validate and expand a sweep YAML; errors are one-line SweepErrors."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file {path} does not exist")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SweepError(f"sweep file {yaml_problem(path, exc)}") from None
    if not isinstance(doc, dict):
        raise SweepError(f"sweep file {path} must be a mapping")
    unknown = set(doc) - TOP_LEVEL_KEYS
    if unknown:
        raise SweepError(f"{path}: unknown top-level key(s) {', '.join(sorted(unknown))}")
    method = doc.get("method")
    if method in SERVER_ONLY_METHODS:
        raise SweepError(f"{path}: method {method!r} needs a W&B server; use wandb agent, or "
                         "grid/random here")
    if method is None:
        raise SweepError(f"{path}: no method; give method: grid or method: random")
    if method not in METHODS:
        raise SweepError(f"{path}: unknown method {method!r}; use grid or random")
    params = _flatten(doc.get("parameters") or {})
    if not params:
        raise SweepError(f"{path}: no parameters")
    names = {p: ".".join(p) for p in params}
    command = doc.get("command") or ["${env}", "${interpreter}", "${program}", "${args}"]
    bad = [c for c in command if "${" in str(c) and str(c) not in MACROS]
    if bad:
        raise SweepError(f"{path}: unknown command macro {bad[0]}")
    if "${program}" in [str(c) for c in command] and not str(doc.get("program") or "").strip():
        raise SweepError(f"{path}: no program (the command runs ${{program}}); give program: "
                         "scaling.train, or a command with -m MODULE")
    if method == "grid":
        keys = list(params)
        combos = itertools.product(*(_grid_values(names[k], params[k]) for k in keys))
        runs = [_nest(dict(zip(keys, combo))) for combo in combos]
    else:
        cap = doc.get("run_cap")
        if not isinstance(cap, int) or cap < 1:
            raise SweepError(f"{path}: a random sweep run locally needs run_cap (runs to draw)")
        rng = random.Random(seed)
        runs = [_nest({k: _draw(names[k], spec, rng) for k, spec in params.items()})
                for _ in range(cap)]
    sweep = Sweep(doc.get("name") or path.stem, method, [str(c) for c in command],
                  str(doc.get("program", "")), runs)
    for run in runs:  # every parameter must parse in the program that runs it
        try:
            run_target(sweep, run)
        except ValueError as exc:  # ConfigError, or the other program's refusal
            raise SweepError(f"{path}: {exc}") from None
    return sweep


def program_of(sweep: Sweep) -> str:
    """The module the sweep's command runs: the one after `-m`, else `program`."""
    command = sweep.command
    for flag, module in zip(command, command[1:]):
        if flag == "-m":
            return module
    return sweep.program


def run_target(sweep: Sweep, run: dict) -> Target:
    """Where one run of `sweep` lives and what finishes it, read by the program it runs
    (a training config, or a PROGRAMS entry's reader)."""
    program = program_of(sweep)
    if program in PROGRAMS:
        module, function = PROGRAMS[program]
        return getattr(importlib.import_module(module), function)(run_args(run))
    cfg = load_config(None, run_args(run))
    return Target(cfg.run_dir(), Path(cfg.run.root), cfg.run.evaluate,
                  lambda: training_flops(cfg))


def run_args(run: dict) -> list[str]:
    """The flat `--name=value` arguments a wandb agent passes for one run.

    The agent formats each parameter as `f"--{name}={value}"` (wandb's
    `create_sweep_command_args`, which is not public API): a bool is `True`/`False`, a
    nested parameter a dict literal (`--data={'seed': 3}`). tests/test_wandb.py checks this
    against wandb's own function while the installed wandb has it.
    """
    return [f"--{name}={value}" for name, value in run.items()]


def command_line(sweep: Sweep, run: dict) -> list[str]:
    """The run's command with wandb's macros substituted as an agent would."""
    out: list[str] = []
    args = run_args(run)
    for part in sweep.command:
        if part == "${env}":
            continue  # the agent prepends /usr/bin/env; we launch directly
        elif part == "${interpreter}":
            out.append(sys.executable)
        elif part == "${program}":
            out.append(sweep.program)
        elif part == "${args}":
            out.extend(args)
        elif part == "${args_no_hyphens}":
            out.extend(a[2:] for a in args)
        else:
            out.append(part)
    return out


def run_dir_of(run: dict) -> Path:
    """Where this run's directory is (the training program derives it the same way)."""
    return load_config(None, run_args(run)).run_dir()


class _State:
    """sweep_state.json: per-run status and last error, written atomically under a lock."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        self.data = json.loads(path.read_text()) if path.exists() else {"runs": {}}

    def set(self, key: str, **values) -> None:
        with self.lock:
            self.data["runs"].setdefault(key, {}).update(values)
            atomic.write_json(self.path, self.data)


def training_flops(cfg) -> float:
    """A run's planned training FLOPs (0 when its config cannot be planned: it will fail
    on its own, with its own error, when it runs)."""
    from scaling.train import make_plan

    try:
        plan = make_plan(cfg, vocab_size=cfg.model.vocab_size or 128)
    except ValueError:  # ConfigError, UnknownTaskError
        return 0.0
    return plan.flops_per_token * plan.total_steps * plan.tokens_per_step


def start_order(targets: list[Target], jobs: int) -> list[int]:
    """Indices of a sweep's runs in the order they start: the sweep's own order with one
    job; largest first with several (started last, the largest rung would finish alone
    while the other workers sit idle)."""
    order = list(range(len(targets)))
    if jobs > 1:
        cost = [t.flops() for t in targets]
        order.sort(key=lambda i: -cost[i])
    return order


def run_sweep(sweep: Sweep, jobs: int = 1, quiet: bool = False) -> dict:
    """Run every unfinished run of `sweep`; returns {run_dir: FINISHED | SKIPPED | FAILED |
    INTERRUPTED}."""
    targets = [run_target(sweep, r) for r in sweep.runs]
    roots = {t.root for t in targets}
    sweep_dir = sorted(roots)[0] if len(roots) == 1 else Path("runs") / sweep.name
    sweep_dir.mkdir(parents=True, exist_ok=True)
    state = _State(sweep_dir / STATE_FILE)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    # A run's stderr goes to its log through a pipe: progress bars write plain lines
    # there (scaling/progress.py), unless one run at a time is echoed to a terminal.
    echo = jobs == 1 and not quiet
    live = "live" if echo and progress.live(sys.stderr) else "lines"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               **{progress.ENV: live})
    outcome: dict[str, str] = {}
    stop = threading.Event()  # set on Ctrl-C: no run starts after it
    running: set[subprocess.Popen] = set()

    def one(i: int) -> None:
        if stop.is_set():
            return
        run, target = sweep.runs[i], targets[i]
        run_dir = target.dir
        key = str(run_dir)
        info = run_info.read(run_dir)
        if run_info.is_finished(info, target.needs_eval):
            stale = stale_code_message(run_dir, info)
            if stale and not quiet:
                print(stale, file=sys.stderr, flush=True)
            outcome[key] = SKIPPED
            state.set(key, status=FINISHED, args=run_args(run))
            return
        cmd = command_line(sweep, run)
        state.set(key, status=RUNNING, args=run_args(run), started=time.time())
        log_path = run_dir.parent / f"{run_dir.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if not quiet:
            print(f"[{i + 1}/{len(sweep.runs)}] {shlex.join(cmd)}", file=sys.stderr, flush=True)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.PIPE)
            running.add(proc)
            # Every byte of stderr goes to the run's log (where a failure's error is read
            # back), at once: `tail -f` on a log shows the run's progress as it goes. With
            # one job it is also echoed live, so progress bars show.
            for chunk in iter(lambda: os.read(proc.stderr.fileno(), 4096), b""):
                log.write(chunk)
                log.flush()
                if echo:
                    sys.stderr.buffer.write(chunk)
                    sys.stderr.flush()
            proc.wait()
            running.discard(proc)
        if stop.is_set() and proc.returncode != 0:
            outcome[key] = INTERRUPTED  # resumes from its last checkpoint next time
            state.set(key, status=INTERRUPTED, returncode=proc.returncode)
        elif proc.returncode == 0:
            outcome[key] = FINISHED
            state.set(key, status=FINISHED, error=None, finished=time.time())
        else:
            lines = log_path.read_text(errors="replace").replace("\r", "\n").splitlines()
            errors = [x for x in lines if x.startswith("error:") or "Error" in x]
            tail = (errors or [x for x in lines if x.strip()] or [""])[-1:]
            outcome[key] = FAILED
            state.set(key, status=FAILED, returncode=proc.returncode, error=tail[0][-500:])
            print(f"run {run_dir} failed (exit {proc.returncode}): {tail[0][-300:]}",
                  file=sys.stderr, flush=True)

    pool = ThreadPoolExecutor(max_workers=jobs)
    # SIGTERM (a scheduler or `kill` stopping the sweep) is taken as Ctrl-C: the runs stop
    # too, rather than go on without a runner while the next one starts them again.
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if on_main_thread else None
    try:
        list(pool.map(one, start_order(targets, jobs)))
    except KeyboardInterrupt:
        # A terminal's Ctrl-C reaches the runs too; a signal sent to this process alone
        # does not, so pass it on. Runs not started yet never start.
        stop.set()
        for proc in list(running):
            proc.send_signal(signal.SIGINT)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)
    return outcome


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Entry point for `scaling sweep`."""
    p = argparse.ArgumentParser(
        prog="scaling sweep", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="wandb sweep YAML (e.g. sweeps/ladder.yaml)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at a time, largest first; CPU threads are divided between them "
                        "unless the sweep pins run.threads (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of a random sweep's draws")
    p.add_argument("--dry-run", action="store_true",
                   help="print the commands in the order they would start, run nothing")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.jobs < 1:
            raise SweepError("--jobs must be at least 1")
        sweep = load_sweep(args.file, args.seed)
        if args.dry_run:
            targets = [run_target(sweep, r) for r in sweep.runs]
            for i in start_order(targets, args.jobs):
                print(shlex.join(command_line(sweep, sweep.runs[i])))
            return 0
        outcome = run_sweep(sweep, args.jobs)
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{INTERRUPTED_MESSAGE}", file=sys.stderr)
        return 130
    failed = [k for k, v in outcome.items() if v == FAILED]
    done = sum(v in (FINISHED, SKIPPED) for v in outcome.values())
    print(f"sweep {sweep.name}: {done}/{len(outcome)} runs finished"
          + (f", {len(failed)} failed (run the same command again to retry)" if failed else ""),
          file=sys.stderr)
    return 1 if failed else 0
