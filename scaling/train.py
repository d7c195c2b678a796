"""Train one rung: `scaling train --config FILE --model.size=s3 --run.dir=DIR [...]`.

Also runs under torchrun for data parallelism (DDP; gloo on CPU, NCCL on CUDA):
    torchrun --nproc_per_node=2 -m scaling.train --model.size=s3 --run.dir=DIR
Running the same command again on the same run.dir resumes from the last checkpoint; the
result is bit-identical on CPU to a run that was never interrupted, because the data batch,
the learning rate and every random draw are functions of the step alone.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml

from scaling import cpu_attention, ladder, run_info
from scaling.allocator import keep_freed_memory
from scaling.checkpoint import (
    CheckpointError, checkpoint_steps, restore_latest,
    save_checkpoint)
from scaling.config import (
    RESUMABLE_FIELDS, Config, ConfigError, load_config, settings_help, with_intervention_defaults)
from scaling.data.shards import ShardError, build_corpus, data_hash, get_batch, open_shard
from scaling.distill import find_teacher, record_teacher
from scaling.locks import run_lock
from scaling.logger import MetricsLogger
from scaling.model import GPT
from scaling.objectives import make_objective, model_config_for, validation_batch_loss
from scaling.progress import progress_bar
from scaling.provenance import code_fingerprint, stale_code_message
from scaling.results import LOSS_METRIC, VAL_TASK, append_rows, result_row
from scaling.results import load as load_results


@dataclasses.dataclass
class Plan:
    """Everything derived from the config before training starts."""

    model_config: object  # GPTConfig
    lr: float
    batch_size: int  # global sequences per step
    total_steps: int
    save_steps: list[int]
    params: int
    nonembed_params: int
    flops_per_token: float

    @property
    def tokens_per_step(self) -> int:
        """Training tokens consumed by one optimizer step (global)."""
        return self.batch_size * self.model_config.block_size


def make_plan(cfg: Config, vocab_size: int) -> Plan:
    """Resolve rung shape, learning rate, batch size and checkpoint steps from the config."""
    m = cfg.model
    if cfg.run.evaluate and cfg.run.tasks != "default":
        from scaling.tasks import get_tasks

        get_tasks(cfg.run.tasks.split(","))  # an unknown name fails here, before any training
    try:
        gcfg = ladder.gpt_config(m.size, vocab_size=m.vocab_size or vocab_size,
                                 block_size=m.block_size, pos=m.pos, n_layer=m.n_layer,
                                 d_model=m.d_model, n_head=m.n_head, dropout=m.dropout,
                                 mlp_ratio=m.mlp_ratio)
    except ValueError as exc:
        raise ConfigError(f"model.size: {exc}") from None
    gcfg = model_config_for(cfg, gcfg)  # mlm: the rung as an encoder (scaling/mlm.py)
    if gcfg.d_model % gcfg.n_head:
        raise ConfigError(f"model.d_model={gcfg.d_model} is not divisible by "
                          f"model.n_head={gcfg.n_head}")
    model = GPT(gcfg)  # meta-cheap at these sizes; counts come from the model itself
    counts = model.num_scaling_params()
    lr = cfg.train.lr or ladder.learning_rate(counts["nonembed"])
    batch = cfg.train.batch_size or ladder.batch_size(counts["nonembed"], gcfg.block_size)
    total = cfg.train.tokens // (batch * gcfg.block_size)
    if total < 1:
        raise ConfigError(f"train.tokens={cfg.train.tokens} is less than one batch "
                          f"({batch} x {gcfg.block_size} tokens)")
    interval = cfg.train.ckpt_interval or max(1, total // 8)
    return Plan(gcfg, lr, batch, total, checkpoint_steps(total, interval), counts["total"],
                counts["nonembed"], model.estimate_flops())


def get_lr(step: int, plan: Plan, cfg: Config) -> float:
    """Learning rate at `step`: linear warmup, then cosine decay to lr * min_lr_ratio."""
    warmup = int(cfg.train.warmup_frac * plan.total_steps)
    # 1) linear warmup over the first `warmup` steps
    if step < warmup:
        return plan.lr * (step + 1) / warmup
    # 2) cosine from lr down to lr * min_lr_ratio at the last step
    progress = (step - warmup) / max(1, plan.total_steps - warmup)
    coeff = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    floor = plan.lr * cfg.train.min_lr_ratio
    return floor + coeff * (plan.lr - floor)


def compile_for_training(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`torch.compile` of the training model; on CPU with Inductor's C++ wrapper.

    On CPU the default Python wrapper around the generated kernels costs each step about
    what the fused kernels save on the small rungs; with the C++ wrapper compiled steps are
    faster than eager ones on every CPU rung (figures and command: docs/LOG.md,
    2026-12-08). The first step compiles; a rung's later runs reuse Inductor's cache.
    """
    options = {"cpp_wrapper": True} if device.type == "cpu" else None
    if device.type == "cpu":
        cpu_attention.load()  # built before tracing: the compiled graph calls it, or not
    return torch.compile(model, options=options)


def make_optimizer(model: GPT, plan: Plan, cfg: Config) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings only (not norms), as in nanoGPT."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.train.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    # fused=True: one kernel for all tensors; faster steps on CPU (docs/LOG.md, 2026-12-08).
    return torch.optim.AdamW(groups, lr=plan.lr, betas=(cfg.train.beta1, cfg.train.beta2),
                             fused=True)


@torch.no_grad()
def validation_loss(model: GPT, val_shard, n_tokens: int, batch_size: int, device,
                    autocast) -> float:
    """Mean loss over the first `n_tokens` of the validation shard: next-token loss, or
    for an encoder the masked-token loss (scaling/objectives.py validation_batch_loss)."""
    model.eval()
    T = model.cfg.block_size
    n_seqs = max(1, min(n_tokens, len(val_shard) - 1) // T)
    total, count = 0.0, 0
    for start in range(0, n_seqs, batch_size):
        rows = min(batch_size, n_seqs - start)
        # contiguous, non-overlapping windows from the start of the shard: (rows, T + 1)
        chunk = torch.from_numpy(val_shard[start * T:(start + rows) * T + 1].astype("int64"))
        x = torch.stack([chunk[i * T:(i + 1) * T] for i in range(rows)])
        y = torch.stack([chunk[i * T + 1:(i + 1) * T + 1] for i in range(rows)])
        with autocast:
            loss = validation_batch_loss(model, x.to(device), y.to(device), start)
        total += loss.item() * rows
        count += rows
    model.train()
    return total / count


def _distributed() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment; (0, 0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


def _device(cfg: Config, local_rank: int) -> torch.device:
    want = cfg.train.device
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("train.device=cuda but CUDA is not available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


@dataclasses.dataclass
class _Process:
    """This process's share of the job: its rank, its device and its number format."""

    rank: int
    local_rank: int
    world: int  # processes training this run (1 without torchrun)
    device: torch.device
    bf16: bool
    autocast: Any  # torch.autocast to bf16, or a context that does nothing

    @property
    def master(self) -> bool:
        """Rank 0 writes the run directory; the other ranks only train."""
        return self.rank == 0


def _start_process(cfg: Config) -> _Process:
    """Join the process group (under torchrun), set CPU threads, pick device and dtype."""
    rank, local_rank, world = _distributed()
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and cfg.train.device != "cpu" else "gloo"
        dist.init_process_group(backend)
    threads = cfg.run.threads or (max(1, (os.cpu_count() or 1) // world) if world > 1 else 0)
    if threads:
        torch.set_num_threads(threads)
    # Attention keeps each step's probabilities (scaling/cpu_attention.py): several MB a
    # layer that glibc would otherwise hand back and fault in again every step (what that
    # costs: docs/LOG.md, 2026-12-08).
    keep_freed_memory()
    device = _device(cfg, local_rank)
    bf16 = cfg.train.dtype == "bf16" or (cfg.train.dtype == "auto" and device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    return _Process(rank, local_rank, world, device, bf16, autocast)


def _check_same_run(run_dir: Path, cfg: Config) -> None:
    """Refuse to resume a run directory that was started with a different config (only
    RESUMABLE_FIELDS may differ)."""
    saved_path = run_dir / "config.yaml"
    if not saved_path.exists():
        return
    saved = with_intervention_defaults(yaml.safe_load(saved_path.read_text()))
    now = with_intervention_defaults(cfg.to_dict())
    for section, values in now.items():
        for key, value in values.items():
            old = saved.get(section, {}).get(key)
            if (section, key) not in RESUMABLE_FIELDS and old != value:
                raise ConfigError(
                    f"{run_dir} holds a run started with {section}.{key}={old!r}, not {value!r}; "
                    "use another run.dir or the original config")


def _claim_run_dir(run_dir: Path, cfg: Config, held: contextlib.ExitStack) -> None:
    """Make the run directory and hold its lock (one process per run, scaling/locks.py) until
    `held` closes; refuse it if it holds a run of another config."""
    run_dir.mkdir(parents=True, exist_ok=True)
    held.enter_context(run_lock(run_dir))
    _check_same_run(run_dir, cfg)


@dataclasses.dataclass
class _Corpus:
    """The built corpus this run trains on, its shards checked against their manifest."""

    dir: Path
    manifest: dict
    train: Any  # uint16 memmap of token ids
    val: Any
    hash: str  # scaling.data.shards.data_hash: recorded with the run and every row


def _open_corpus(cfg: Config, proc: _Process) -> _Corpus:
    """Build the corpus once (rank 0; the other ranks then find it) and open its shards."""
    if proc.master:
        corpus_dir = build_corpus(cfg.data, Path(cfg.run.data_root))
    if proc.world > 1:
        dist.barrier()  # rank 0 built the corpus; the others only find it
    if not proc.master:
        corpus_dir = build_corpus(cfg.data, Path(cfg.run.data_root))
    manifest = json.loads((corpus_dir / "manifest.json").read_text())
    # The shard's sha256 is checked against its manifest before any training step.
    return _Corpus(corpus_dir, manifest, open_shard(corpus_dir, "train", verify=True),
                   open_shard(corpus_dir, "val", verify=True), data_hash(corpus_dir))


def _check_same_plan(run_dir: Path, info: dict, plan: Plan, dhash: str) -> None:
    """Refuse to resume a run whose learning rate, batch size, length or corpus would now
    differ from what its run.json says it began with."""
    for key, now in (("lr", plan.lr), ("batch_size", plan.batch_size),
                     ("total_steps", plan.total_steps)):
        if info.get(key, now) != now:  # a ladder rule changed since this run began
            raise ConfigError(f"{run_dir} was trained with {key}={info[key]}, but the "
                              f"config now gives {now}; use another run.dir")
    if info.get("data_hash", dhash) != dhash:
        raise ConfigError(f"{run_dir} was trained on corpus {info['data_hash'][:12]}, "
                          f"but the corpus now hashes to {dhash[:12]}")


def _record_start(run_dir: Path, cfg: Config, plan: Plan, run_name: str,
                  corpus: _Corpus) -> None:
    """Write config.yaml, and run.json with status TRAINING once a resumed run is found to
    train what it began with (a warning when other code trained its first steps)."""
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    info = run_info.read(run_dir)
    _check_same_plan(run_dir, info, plan, corpus.hash)
    stale = stale_code_message(run_dir, info)
    if stale:  # resuming: the first steps and the rest come from different code
        print(stale, file=sys.stderr)
    info.setdefault("code", code_fingerprint())
    info.update(run=run_name, rung=cfg.model.size, params=plan.params,
                nonembed_params=plan.nonembed_params, data_hash=corpus.hash,
                corpus_dir=str(corpus.dir), total_steps=plan.total_steps,
                batch_size=plan.batch_size, lr=plan.lr, status=run_info.TRAINING)
    run_info.write(run_dir, info)


def _for_training(model: GPT, cfg: Config, proc: _Process) -> torch.nn.Module:
    """The module the steps call: the model, wrapped in DDP under torchrun, compiled if
    asked. Checkpoints and validation use the bare model (same parameters)."""
    train_model = model
    if proc.world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[proc.local_rank] if proc.device.type == "cuda" else None)
    if cfg.train.compile:
        train_model = compile_for_training(train_model, proc.device)
    return train_model


@dataclasses.dataclass
class _Checkpointer:
    """Saves checkpoints on rank 0: the validation loss, its results row, then the
    checkpoint itself; called with the number of steps done."""

    cfg: Config
    plan: Plan
    proc: _Process
    run_dir: Path
    run_name: str
    corpus: _Corpus
    model: GPT
    optimizer: torch.optim.Optimizer
    logger: MetricsLogger

    def __call__(self, step: int) -> None:
        if not self.proc.master:
            return
        cfg, plan, corpus, run_dir = self.cfg, self.plan, self.corpus, self.run_dir
        tokens = step * plan.tokens_per_step
        val = validation_loss(self.model, corpus.val, cfg.train.val_tokens, plan.batch_size,
                              self.proc.device, self.proc.autocast)
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "model_config": plan.model_config.to_dict(),
                 "rng": torch.get_rng_state(), "step": step, "tokens": tokens,
                 "config": cfg.to_dict()}
        flops = plan.flops_per_token * tokens
        append_rows(run_dir, [result_row(
            run=self.run_name, rung=cfg.model.size, params=plan.params,
            nonembed_params=plan.nonembed_params, step=step, tokens=tokens, flops=flops,
            task=VAL_TASK, shots=0, metric=LOSS_METRIC, value=val, n=cfg.train.val_tokens,
            seed=cfg.train.seed, data_hash=corpus.hash, intervention=cfg.intervention())])
        # The row goes first: killed in between, the resumed run recomputes this step and
        # rewrites the same row (rows are keyed), so no checkpoint is ever without its row.
        meta = dict(run=self.run_name, rung=cfg.model.size, params=plan.params,
                    nonembed_params=plan.nonembed_params, data_hash=corpus.hash,
                    seed=cfg.train.seed, tokenizer=corpus.manifest.get("tokenizer", "char"),
                    corpus_dir=str(corpus.dir), tokens=tokens, flops=flops, val_loss=val)
        if cfg.intervention():  # the scorer copies it into every row of this checkpoint
            meta["intervention"] = cfg.intervention()
        save_checkpoint(run_dir, step, state, meta)
        self.logger.log({"val/loss": val, "tokens": tokens, "flops": flops}, step)


class _Throughput:
    """Training tokens per second since the last restart, checkpoint pauses left out."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        """Count from zero, from now."""
        self.t0, self.tokens = time.perf_counter(), 0

    def add(self, tokens: int) -> None:
        """Count the tokens of one more step."""
        self.tokens += tokens

    def rate(self) -> float:
        """Tokens per second since the restart."""
        return self.tokens / (time.perf_counter() - self.t0)

    @contextlib.contextmanager
    def paused(self):
        """Time spent inside is not training time."""
        paused = time.perf_counter()
        yield
        self.t0 += time.perf_counter() - paused


def _log_step(logger: MetricsLogger, bar, done: int, loss: torch.Tensor, norm: torch.Tensor,
              lr: float, speed: _Throughput, plan: Plan, world: int) -> None:
    """Log the training loss (averaged over ranks), learning rate, gradient norm and speed
    after `done` steps, then restart the speed's clock."""
    loss_val = loss.detach()
    if world > 1:
        dist.all_reduce(loss_val)  # gloo has no AVG: sum, then divide
        loss_val /= world
    tps = speed.rate()
    tokens = done * plan.tokens_per_step
    logger.log({"train/loss": loss_val.item(), "lr": lr, "train/grad_norm": norm.item(),
                "perf/tokens_per_s": tps, "perf/flops_per_s": tps * plan.flops_per_token,
                "tokens": tokens, "flops": tokens * plan.flops_per_token}, done)
    bar.set_postfix(loss=f"{loss_val.item():.3f}", tok_s=f"{tps:,.0f}", refresh=False)
    speed.restart()


def _record_end(run_dir: Path, cfg: Config, logger: MetricsLogger, seconds: float) -> None:
    """After the last step: run.json says TRAINED (training time added up over resumptions);
    then, with run.evaluate, every checkpoint is scored on the probe tasks (EVALUATED)."""
    info = run_info.read(run_dir)
    run_info.update(run_dir, train_seconds=info.get("train_seconds", 0.0) + seconds,
                    status=run_info.TRAINED)
    if not cfg.run.evaluate:
        return
    from scaling.evaluate import evaluate_run

    t_eval = time.perf_counter()
    evaluate_run(run_dir, tasks=None if cfg.run.tasks == "default" else
                 cfg.run.tasks.split(","), n=cfg.run.eval_n or None,
                 on_rows=logger.log_eval_rows)
    run_info.update(run_dir, eval_seconds=time.perf_counter() - t_eval,
                    status=run_info.EVALUATED)
    results = load_results(run_dir)
    logger.log_results(results[results.task != VAL_TASK])


def train(cfg: Config) -> Path:
    """Train (or resume) one rung as configured; returns the run directory."""
    with contextlib.ExitStack() as held:  # the run directory's lock, however this ends
        return _train(cfg, held)


def _train(cfg: Config, held: contextlib.ExitStack) -> Path:
    """The run top to bottom: checks and setup, the step loop, the wrap-up."""
    proc = _start_process(cfg)
    run_dir = cfg.run_dir()
    run_name = cfg.run.name or run_dir.name
    teacher = find_teacher(cfg)  # None, or checked before the run directory is made
    if proc.master:
        _claim_run_dir(run_dir, cfg, held)
        record_teacher(run_dir, teacher)  # a resumed run refuses a changed teacher
    corpus = _open_corpus(cfg, proc)
    plan = make_plan(cfg, corpus.manifest["vocab_size"])
    if plan.batch_size % proc.world:
        raise ConfigError(f"batch size {plan.batch_size} is not divisible by {proc.world} "
                          "processes")
    if proc.master:
        _record_start(run_dir, cfg, plan, run_name, corpus)

    model = GPT(plan.model_config, seed=cfg.train.seed).to(proc.device)
    optimizer = make_optimizer(model, plan, cfg)
    resumed = restore_latest(run_dir, model, optimizer, proc.device)
    start = resumed or 0
    train_model = _for_training(model, cfg, proc)
    logger = MetricsLogger(run_dir, cfg.run.wandb, cfg.run.wandb_project, run_name,
                           cfg.to_dict(), enabled=proc.master, device=proc.device.type,
                           bf16=proc.bf16)
    checkpoint = _Checkpointer(cfg, plan, proc, run_dir, run_name, corpus, model, optimizer,
                               logger)

    started = time.perf_counter()
    if resumed is None and 0 in plan.save_steps:
        checkpoint(0)
    save_at = set(plan.save_steps)
    bar = progress_bar(total=plan.total_steps, initial=start, disable=not proc.master,
                       unit="step", desc=f"train {run_name}")
    speed = _Throughput()
    objective = make_objective(cfg, plan, proc.device)
    for step in range(start, plan.total_steps):
        lr = get_lr(step, plan, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = get_batch(corpus.train, step, plan.batch_size, plan.model_config.block_size,
                         rank=proc.rank, world_size=proc.world)
        with proc.autocast:
            loss = objective.loss(train_model, x.to(proc.device), y.to(proc.device), step)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip or 1e9)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        speed.add(plan.tokens_per_step)
        done = step + 1
        if done % cfg.train.log_interval == 0 or done == plan.total_steps:
            _log_step(logger, bar, done, loss, norm, lr, speed, plan, proc.world)
        bar.update(1)
        if done in save_at:
            with speed.paused():  # tokens/s measures training steps only
                checkpoint(done)
            if proc.world > 1:
                dist.barrier()  # keep ranks together while rank 0 writes
    bar.close()

    if proc.master:
        _record_end(run_dir, cfg, logger, time.perf_counter() - started)
    logger.finish()
    if proc.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return run_dir


def build_parser() -> argparse.ArgumentParser:
    """Argument parser for `scaling train`."""
    p = argparse.ArgumentParser(
        prog="scaling train",
        description="Train one rung of the ladder (resumes if run.dir already holds a run).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any setting below can be overridden as --section.key=value (the form wandb "
               "agents pass),\ne.g. --model.size=s4 --train.tokens=2e6 --run.dir=runs/me/s4; "
               "a YAML --config sets them by section.\n\nsettings (default, meaning):\n"
               + settings_help())
    p.add_argument("--config", help="YAML config file (sections model/data/train/run)")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; one-line errors and exit code 2 on bad input."""
    argv = sys.argv[1:] if argv is None else argv
    args, overrides = build_parser().parse_known_args(argv)
    cfg = None
    try:
        cfg = load_config(args.config, overrides)
        train(cfg)
    except (ConfigError, CheckpointError, ShardError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # checkpoints are written whole (temp file + rename)
        where = f" in {cfg.run_dir()}" if cfg is not None else ""
        print(f"\ninterrupted: the checkpoints{where} are whole; the same command resumes "
              "from the last one", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
