"""Checkpoints stamped with the step: atomic writes, verified loads, Pythia's log spacing.

Layout inside a run directory:
    checkpoints/step_000128.pt    model + optimizer + RNG + data position + config
    checkpoints/step_000128.json  metadata (step, tokens, flops, val loss, sha256 of the .pt)
The .pt is written to a temp file and renamed; the JSON is written last, the same way, so a
checkpoint without its JSON is an unfinished write and is ignored. Loading checks the
sha256 first and refuses a corrupted file by name; tensors are read with weights_only=True.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch

from scaling import atomic

CKPT_DIR = "checkpoints"
_NAME = re.compile(r"^step_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unfinished or corrupted (message names the file)."""


def checkpoint_steps(total_steps: int, interval: int) -> list[int]:
    """Steps to save: 0, 1, 2, 4, ... below `interval`, then every `interval`, and the last.

    Pythia saves at 0, 1, 2, 4, ..., 512 and then every 1000 steps; the same shape, scaled.
    """
    steps = {0, total_steps}
    k = 1
    while k < min(interval, total_steps):
        steps.add(k)
        k *= 2
    steps.update(range(interval, total_steps, interval))
    return sorted(steps)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()



def checkpoint_path(run_dir: Path, step: int) -> Path:
    """Where the checkpoint of `step` lives."""
    return Path(run_dir) / CKPT_DIR / f"step_{step:06d}.pt"


def save_checkpoint(run_dir: Path, step: int, state: dict, metadata: dict) -> Path:
    """Write `state` (tensors and plain types) and its metadata JSON atomically."""
    path = checkpoint_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(path, lambda f: torch.save(state, f), fsync=True)
    meta = dict(metadata, step=step, sha256=sha256_file(path), file=path.name)
    text = json.dumps(meta, indent=2, sort_keys=True).encode()
    atomic.write_bytes(path.with_suffix(".json"), lambda f: f.write(text), fsync=True)
    return path


def _step_files(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every step_*.pt in the run's checkpoint folder, finished or not."""
    folder = Path(run_dir) / CKPT_DIR
    if not folder.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name)))


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Finished checkpoints (those with a metadata JSON), sorted by step."""
    return [(s, p) for s, p in _step_files(run_dir) if p.with_suffix(".json").exists()]


def unfinished_checkpoints(run_dir: Path) -> list[Path]:
    """step_*.pt files without their metadata JSON (a write interrupted or in progress)."""
    return [p for _, p in _step_files(run_dir) if not p.with_suffix(".json").exists()]


def read_metadata(path: Path) -> dict:
    """The metadata JSON next to a checkpoint."""
    meta_path = Path(path).with_suffix(".json")
    try:
        return json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{meta_path}: unreadable checkpoint metadata ({exc})") from None


def load_checkpoint(path: Path, map_location="cpu") -> tuple[dict, dict]:
    """Verify and load a checkpoint; returns (state, metadata).

    Raises CheckpointError naming the file if it is missing, unfinished or its bytes do
    not match the sha256 recorded when it was written.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    meta = read_metadata(path)
    if sha256_file(path) != meta.get("sha256"):
        raise CheckpointError(f"{path}: corrupted checkpoint (sha256 does not match its metadata)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for damaged zip archives
        raise CheckpointError(f"{path}: corrupted checkpoint ({type(exc).__name__})") from None
    return state, meta


def load_model(path: Path, device: str = "cpu"):
    """Rebuild the GPT stored in a checkpoint, in eval mode; returns (model, metadata)."""
    from scaling.model import GPT, GPTConfig

    state, meta = load_checkpoint(path, map_location=device)
    model = GPT(GPTConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), meta


def checkpoint_at(run_dir, step: int | None = None) -> tuple[int, Path]:
    """(step, path) of `run_dir`'s finished checkpoint at `step`, or of its last one when
    `step` is None; CheckpointError (naming the steps there are) otherwise."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise CheckpointError(f"{run_dir}: no checkpoints (expected {run_dir / 'checkpoints'}/"
                              "step_*.pt with its .json)")
    if step is None:
        return ckpts[-1]
    for found, path in ckpts:
        if found == step:
            return found, path
    steps = ", ".join(str(s) for s, _ in ckpts)
    raise CheckpointError(f"{run_dir}: no checkpoint at step {step} (steps: {steps})")


def restore_latest(run_dir, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   device) -> int | None:
    """Load the run's last checkpoint into model, optimizer and torch's RNG (resuming a run:
    training or fine-tuning); its step, or None when the run has no checkpoint yet."""
    existing = list_checkpoints(run_dir)
    if not existing:
        return None
    state, _ = load_checkpoint(existing[-1][1], map_location=device)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    return int(state["step"])
