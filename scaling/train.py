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

import torch
import torch.distributed as dist
import yaml

from scaling import atomic, cpu_attention, ladder
from scaling.allocator import keep_freed_memory
from scaling.checkpoint import (
    CheckpointError, checkpoint_steps, list_checkpoints, load_checkpoint, save_checkpoint)
from scaling.config import Config, ConfigError, load_config, settings_help
from scaling.data.shards import ShardError, build_corpus, data_hash, get_batch, open_shard
from scaling.locks import run_lock
from scaling.logger import MetricsLogger
from scaling.model import GPT
from scaling.progress import progress_bar
from scaling.provenance import code_fingerprint, stale_code_message
from scaling.results import append_rows
from scaling.results import load as load_results

# Fields that may change between the first start of a run and its resumption without
# changing what is trained (where it runs, how it logs, what is evaluated afterwards).
_RESUMABLE_CHANGES = {("run", k) for k in ("threads", "wandb", "wandb_project", "evaluate",
                                             "tasks", "eval_n", "data_root", "dir", "root")}
_RESUMABLE_CHANGES |= {("train", k) for k in ("device", "compile", "log_interval")}


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

    On CPU the default Python wrapper around the generated kernels costs a few ms a step,
    as much as the fused kernels save on the small rungs; with the C++ wrapper a step is
    7-12% faster than eager (s1 +7%, s2 +10%, s3 +9%, s6 +12%, steps alternated in one
    process; bench/train_throughput.py --compile). The first step compiles for about 20 s;
    a rung's later runs reuse Inductor's cache.
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
    # fused=True: one kernel for all tensors; measured 20-30% faster steps on 2 CPU cores.
    return torch.optim.AdamW(groups, lr=plan.lr, betas=(cfg.train.beta1, cfg.train.beta2),
                             fused=True)


@torch.no_grad()
def validation_loss(model: GPT, val_shard, n_tokens: int, batch_size: int, device,
                    autocast) -> float:
    """Mean next-token loss over the first `n_tokens` of the validation shard."""
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
            _, loss = model(x.to(device), y.to(device))
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


def _check_same_run(run_dir: Path, cfg: Config) -> None:
    """Refuse to resume a run directory that was started with a different config."""
    saved_path = run_dir / "config.yaml"
    if not saved_path.exists():
        return
    saved = yaml.safe_load(saved_path.read_text())
    now = cfg.to_dict()
    for section, values in now.items():
        for key, value in values.items():
            old = saved.get(section, {}).get(key)
            if (section, key) not in _RESUMABLE_CHANGES and old != value:
                raise ConfigError(
                    f"{run_dir} holds a run started with {section}.{key}={old!r}, not {value!r}; "
                    "use another run.dir or the original config")


def train(cfg: Config) -> Path:
    """Train (or resume) one rung as configured; returns the run directory."""
    with contextlib.ExitStack() as held:  # the run directory's lock, however this ends
        return _train(cfg, held)


def _train(cfg: Config, held: contextlib.ExitStack) -> Path:
    rank, local_rank, world = _distributed()
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and cfg.train.device != "cpu" else "gloo"
        dist.init_process_group(backend)
    master = rank == 0
    threads = cfg.run.threads or (max(1, (os.cpu_count() or 1) // world) if world > 1 else 0)
    if threads:
        torch.set_num_threads(threads)
    # Attention keeps each step's probabilities (scaling/cpu_attention.py): several MB a
    # layer that glibc would otherwise hand back and fault in again every step (s3: 12%).
    keep_freed_memory()
    device = _device(cfg, local_rank)
    use_bf16 = cfg.train.dtype == "bf16" or (cfg.train.dtype == "auto" and device.type == "cuda")
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext())

    run_dir = cfg.run_dir()
    run_name = cfg.run.name or run_dir.name
    if master:
        run_dir.mkdir(parents=True, exist_ok=True)
        held.enter_context(run_lock(run_dir))  # one process per run (scaling/locks.py)
        _check_same_run(run_dir, cfg)
        corpus_dir = build_corpus(cfg.data, Path(cfg.run.data_root))
    if world > 1:
        dist.barrier()  # rank 0 built the corpus; the others only find it
    if not master:
        corpus_dir = build_corpus(cfg.data, Path(cfg.run.data_root))
    manifest = json.loads((corpus_dir / "manifest.json").read_text())
    # The shard's sha256 is checked against its manifest before any training step.
    train_shard = open_shard(corpus_dir, "train", verify=True)
    val_shard = open_shard(corpus_dir, "val", verify=True)
    dhash = data_hash(corpus_dir)

    plan = make_plan(cfg, manifest["vocab_size"])
    if plan.batch_size % world:
        raise ConfigError(f"batch size {plan.batch_size} is not divisible by {world} processes")
    if master:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        info_path = run_dir / "run.json"
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        for key, now in (("lr", plan.lr), ("batch_size", plan.batch_size),
                         ("total_steps", plan.total_steps)):
            if info.get(key, now) != now:  # a ladder rule changed since this run began
                raise ConfigError(f"{run_dir} was trained with {key}={info[key]}, but the "
                                  f"config now gives {now}; use another run.dir")
        if info.get("data_hash", dhash) != dhash:
            raise ConfigError(f"{run_dir} was trained on corpus {info['data_hash'][:12]}, "
                              f"but the corpus now hashes to {dhash[:12]}")
        stale = stale_code_message(run_dir, info)
        if stale:  # resuming: the first steps and the rest come from different code
            print(stale, file=sys.stderr)
        info.setdefault("code", code_fingerprint())
        info.update(run=run_name, rung=cfg.model.size, params=plan.params,
                    nonembed_params=plan.nonembed_params, data_hash=dhash,
                    corpus_dir=str(corpus_dir), total_steps=plan.total_steps,
                    batch_size=plan.batch_size, lr=plan.lr, status="training")
        atomic.write_json(info_path, info)

    model = GPT(plan.model_config, seed=cfg.train.seed).to(device)
    optimizer = make_optimizer(model, plan, cfg)
    start = 0
    existing = list_checkpoints(run_dir)
    if existing:
        state, _ = load_checkpoint(existing[-1][1], map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        start = state["step"]
    train_model = model
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[local_rank] if device.type == "cuda" else None)
    if cfg.train.compile:
        train_model = compile_for_training(train_model, device)

    logger = MetricsLogger(run_dir, cfg.run.wandb, cfg.run.wandb_project, run_name,
                           cfg.to_dict(), enabled=master, device=device.type, bf16=use_bf16)
    meta_common = dict(run=run_name, rung=cfg.model.size, params=plan.params,
                       nonembed_params=plan.nonembed_params, data_hash=dhash,
                       seed=cfg.train.seed, tokenizer=manifest.get("tokenizer", "char"),
                       corpus_dir=str(corpus_dir))

    def checkpoint(step: int) -> None:
        if not master:
            return
        tokens = step * plan.tokens_per_step
        val = validation_loss(model, val_shard, cfg.train.val_tokens, plan.batch_size,
                              device, autocast)
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "model_config": dataclasses.asdict(plan.model_config),
                 "rng": torch.get_rng_state(), "step": step, "tokens": tokens,
                 "config": cfg.to_dict()}
        flops = plan.flops_per_token * tokens
        append_rows(run_dir, [dict(run=run_name, rung=cfg.model.size, params=plan.params,
                                   nonembed_params=plan.nonembed_params, step=step,
                                   tokens=tokens, flops=flops, task="val", shots=0,
                                   metric="loss", value=val, n=cfg.train.val_tokens,
                                   seed=cfg.train.seed, data_hash=dhash)])
        # The row goes first: killed in between, the resumed run recomputes this step and
        # rewrites the same row (rows are keyed), so no checkpoint is ever without its row.
        save_checkpoint(run_dir, step, state,
                        dict(meta_common, tokens=tokens, flops=flops, val_loss=val))
        logger.log({"val/loss": val, "tokens": tokens, "flops": flops}, step)

    started = time.perf_counter()
    if start == 0 and 0 in plan.save_steps and not existing:
        checkpoint(0)
    save_at = set(plan.save_steps)
    bar = progress_bar(total=plan.total_steps, initial=start, disable=not master, unit="step",
                       desc=f"train {run_name}")
    t0, tokens_since = time.perf_counter(), 0
    for step in range(start, plan.total_steps):
        lr = get_lr(step, plan, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = get_batch(train_shard, step, plan.batch_size, plan.model_config.block_size,
                         rank=rank, world_size=world)
        with autocast:
            _, loss = train_model(x.to(device), y.to(device))
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip or 1e9)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens_since += plan.tokens_per_step
        done = step + 1
        if done % cfg.train.log_interval == 0 or done == plan.total_steps:
            loss_val = loss.detach()
            if world > 1:
                dist.all_reduce(loss_val)  # gloo has no AVG: sum, then divide
                loss_val /= world
            elapsed = time.perf_counter() - t0
            tps = tokens_since / elapsed
            logger.log({"train/loss": loss_val.item(), "lr": lr, "train/grad_norm": norm.item(),
                        "perf/tokens_per_s": tps, "perf/flops_per_s": tps * plan.flops_per_token,
                        "tokens": done * plan.tokens_per_step,
                        "flops": done * plan.tokens_per_step * plan.flops_per_token}, done)
            bar.set_postfix(loss=f"{loss_val.item():.3f}", tok_s=f"{tps:,.0f}", refresh=False)
            t0, tokens_since = time.perf_counter(), 0
        bar.update(1)
        if done in save_at:
            paused = time.perf_counter()
            checkpoint(done)
            t0 += time.perf_counter() - paused  # tokens/s measures training steps only
        if world > 1 and done in save_at:
            dist.barrier()  # keep ranks together while rank 0 writes
    bar.close()
    if master:
        info = json.loads((run_dir / "run.json").read_text())
        info["train_seconds"] = info.get("train_seconds", 0.0) + time.perf_counter() - started
        info["status"] = "trained"
        atomic.write_json(run_dir / "run.json", info)
        if cfg.run.evaluate:
            from scaling.evaluate import evaluate_run

            t_eval = time.perf_counter()
            evaluate_run(run_dir, tasks=None if cfg.run.tasks == "default" else
                         cfg.run.tasks.split(","), n=cfg.run.eval_n or None,
                         on_rows=logger.log_eval_rows)
            info["eval_seconds"] = time.perf_counter() - t_eval
            info["status"] = "evaluated"
            atomic.write_json(run_dir / "run.json", info)
            logger.log_results(load_results(run_dir).query("task != 'val'"))
    logger.finish()
    if world > 1:
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
