"""Fine-tuning and prompt tuning as interventions: `scaling finetune RUN_DIR[@stepN] --task T
--mode full|top_k|prompt`.

The question they answer: is an ability the ladder lacks (flat exact match on a probe) out of
reach of a model of that size, or latent, a little training on the task away? A fine-tuned
model is a run like any other, tagged in the results (`intervention`), so the report can put
it next to the base ladder at the source model's size.

What is trained on. A probe task's held-out instances are the slice of its corpus generator
whose text hashes below HELDOUT_FRACTION (scaling/data/skills/base.py); the fine-tuning
examples are the rest of that generator: `sample_train` draws of the same skill at the same
difficulty (hence the same shots), seeded by --seed. No fine-tuning example is a probe
instance of any task, by construction, and `prove_disjoint` checks it again before the first
step on what is trained on: no example is in the held-out split, and no held-out instance of
any probe task of that skill is a line of the fine-tuning tokens (the whole-line match of
scaling/data/contamination.py). A task whose instances do not come from a corpus skill (a
Task with its own `examples()`), or whose skill cannot produce an example outside the
held-out split, has no training split and is refused (`training_split`).

How an example is shown: exactly as the probe shows it, one example per sequence, from
position 0 (after the soft prompt, in prompt mode): the task's context (LINE_START + prompt,
shots included), cut on the left as the scorer cuts it (`scaling.tasks.base.fit_context`
with the window the scorer uses), the answer, each encoded apart as the scorer encodes them,
then the line break that ends every line of the corpus. The loss is the mean cross-entropy
of the answer's tokens and of that line break, nothing else (the context and the padding are
not scored): the break is where greedy decoding stops (the probe's stop), so exact match
needs the model to emit it after the answer.

Modes (`trainable`):
- full: every parameter.
- top_k: the last k blocks, the final LayerNorm and the output head; everything else has
  requires_grad False and stays bit-identical. The head is tied to the token embedding
  (scaling/model.py), so that table trains too, as input embedding as much as head.
- prompt: a soft prompt (Lester et al. 2021): P vectors prepended to the input embeddings of
  every sequence, the network frozen. They start as the embeddings of P tokens drawn from
  those the task's text uses (their "sampled vocabulary" initialisation). The prompt is part
  of the checkpoint (model_config.prompt_len), so `scaling eval` and lm-eval score every
  probe with it prepended, in a window of block_size - P tokens (scaling/model.py).
Settings that train nothing of the network (k < 1, k above the depth: that is --mode full,
a prompt of P < 1 vectors) are one-line errors before anything is written.

Budget and schedule. --tokens counts the tokens of the examples (context, answer and line
break; padding excluded); the run takes the fewest batches of --batch-size examples that
reach it. AdamW with the ladder's settings (scaling/config.py TrainConfig: warmup 5%, cosine
to 10%, gradient clip 1, weight decay 0.1 on matrices, none on a soft prompt), through
scaling/train.py's `make_optimizer` and `get_lr`. Default peak rates in DEFAULT_LR.

The output is a run directory like a ladder run (default `runs/finetune/<source run>-<mode>-
<task>` next to the source's sweep directory; settings other than the defaults add a hash of
them): checkpoints at the ladder's log-spaced steps (step 0 is the source model, with the
initial soft prompt in prompt mode), run.json, train_log.jsonl, results.csv with a
validation-loss row per checkpoint (full and top_k, when the source's corpus is at hand;
prompt tuning leaves the network as it was) and, with --evaluate (the default), every probe's
rows. Rows carry the source model's rung, params and nonembed_params (a soft prompt is not
counted), `tokens` = the source's training tokens + the fine-tuning tokens so far, `flops`
= the source's FLOPs + those tokens x GPT.estimate_flops() (the training formula: an upper
bound for top_k and prompt, whose backward skips frozen weights), `seed` = the source's
initialisation seed, and `intervention` `finetune:full:TASK`, `finetune:top<k>:TASK` or
`prompt:<P>:TASK`.

A killed run resumes from its last checkpoint (the same command again): the examples, the
batches and the learning rate are functions of the step, and the optimizer and RNG states
are in every checkpoint, so on CPU it ends bit-identical to a run never interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from scaling import run_info
from scaling.checkpoint import (
    CheckpointError, checkpoint_at, checkpoint_steps, list_checkpoints, load_checkpoint,
    restore_latest, save_checkpoint)
from scaling.config import Config
from scaling.locks import run_lock
from scaling.results import LOSS_METRIC, VAL_TASK, append_rows, result_row
from scaling.tasks import GENERATE, LINE_START, Task, UnknownTaskError, all_tasks, get_tasks
from scaling.tasks.base import fit_context, room_needed

MODES = ("full", "top_k", "prompt")
DEFAULT_TOKENS = 200_000  # fine-tuning tokens: 7% of a default-ladder rung's 3M
DEFAULT_BATCH_SIZE = 32  # examples per step (a few hundred steps at the default budget)
DEFAULT_K = 1  # top_k: the last block
DEFAULT_PROMPT_LEN = 16  # prompt: soft-prompt vectors (the block keeps 112 of 128 positions)
# Peak learning rates, each the best answer log-probability of a rate sweep (3e-4 to 3e-1)
# on one s3 checkpoint, 200k tokens of addition_3d (the figures belong in docs/LOG.md). The
# fewer parameters train, the larger the rate they take; a soft prompt scored the same from
# 1e-2 to 3e-1, and 1e-2 changed the other probes least.
DEFAULT_LR = {"full": 1e-3, "top_k": 3e-3, "prompt": 1e-2}
IGNORE = -100  # targets cross-entropy skips: context and padding
# Training sequences are padded to a multiple of this (soft prompt included) where the
# window allows: the CPU attention kernel serves such lengths (scaling/cpu_attention.py).
PAD_MULTIPLE = 8
FINETUNE_ROOT = "finetune"  # default output: <source's sweep dir>/../finetune/<name>


class FinetuneError(ValueError):
    """A fine-tuning request that cannot run, in one line."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """One fine-tuning run as asked for (the command line's options)."""

    source: str  # RUN_DIR or RUN_DIR@stepN (N or stepN)
    task: str  # a probe task id: the one task trained and tagged
    mode: str  # full | top_k | prompt
    k: int = DEFAULT_K  # top_k: blocks trained from the top
    prompt_len: int = DEFAULT_PROMPT_LEN  # prompt: soft-prompt vectors
    tokens: int = DEFAULT_TOKENS  # fine-tuning tokens (examples' tokens, no padding)
    lr: float = 0.0  # peak learning rate (0 = DEFAULT_LR of the mode)
    batch_size: int = DEFAULT_BATCH_SIZE  # examples per optimizer step
    seed: int = 0  # order of the fine-tuning examples and the soft prompt's start

    def check(self) -> Settings:
        """Refuse impossible values and frozen-everything settings (one-line FinetuneError)."""
        if self.mode not in MODES:
            raise FinetuneError(f"--mode {self.mode!r}: must be one of {', '.join(MODES)}")
        if self.mode == "top_k" and self.k < 1:
            raise FinetuneError(f"--k={self.k}: top_k trains the last k blocks, so k must be "
                                "at least 1 (k=0 would leave the network frozen)")
        if self.mode == "prompt" and self.prompt_len < 1:
            raise FinetuneError(f"--prompt-len={self.prompt_len}: a soft prompt needs at least "
                                "one vector (0 would train nothing)")
        if self.tokens < 1:
            raise FinetuneError(f"--tokens={self.tokens}: must be positive")
        if self.batch_size < 1:
            raise FinetuneError(f"--batch-size={self.batch_size}: must be positive")
        if self.lr < 0:
            raise FinetuneError(f"--lr={self.lr}: must not be negative")
        return self

    @property
    def peak_lr(self) -> float:
        """The peak learning rate: --lr, else the mode's default."""
        return self.lr or DEFAULT_LR[self.mode]

    @property
    def mode_tag(self) -> str:
        """The mode with its size: full, top<k>, prompt<P> (in directory names)."""
        return {"full": "full", "top_k": f"top{self.k}",
                "prompt": f"prompt{self.prompt_len}"}[self.mode]

    def intervention(self, task_id: str) -> str:
        """The results schema's `intervention` tag of this run."""
        if self.mode == "prompt":
            return f"prompt:{self.prompt_len}:{task_id}"
        return f"finetune:{'full' if self.mode == 'full' else f'top{self.k}'}:{task_id}"

    def trained(self) -> dict:
        """What decides the weights besides the source and the task: the mode with its own
        size, the budget, the rate, the batch and the seed (a resumed run must match)."""
        out = {"mode": self.mode, "tokens": self.tokens, "lr": self.peak_lr,
               "batch_size": self.batch_size, "seed": self.seed}
        if self.mode == "top_k":
            out["k"] = self.k
        if self.mode == "prompt":
            out["prompt_len"] = self.prompt_len
        return out


# ----------------------------------------------------------------------------- the source


@dataclasses.dataclass
class Source:
    """The checkpoint fine-tuned: where it is, and what it holds."""

    run_dir: Path
    step: int
    path: Path  # its step_*.pt
    state: dict
    meta: dict


def parse_source(text: str) -> tuple[Path, int | None]:
    """RUN_DIR or RUN_DIR@N / RUN_DIR@stepN -> (run directory, step or None)."""
    try:
        return run_info.parse_checkpoint_spec(text)
    except ValueError as exc:
        raise FinetuneError(str(exc)) from None


def load_source(text: str) -> Source:
    """The checkpoint named by RUN_DIR[@stepN], loaded and verified (its sha256)."""
    run_dir, step = parse_source(text)
    try:
        chosen = checkpoint_at(run_dir, step)
    except CheckpointError as exc:
        raise FinetuneError(str(exc)) from None
    state, meta = load_checkpoint(chosen[1])
    config = state.get("model_config", {})
    if config.get("prompt_len"):
        raise FinetuneError(f"{chosen[1]}: the model has a soft prompt already; fine-tune the "
                            "checkpoint it was tuned from")
    if config.get("causal") is False:
        raise FinetuneError(f"{chosen[1]}: an encoder (causal=False) is not scored on the "
                            "probes by decoding; fine-tune a decoder")
    return Source(run_dir, chosen[0], chosen[1], state, meta)


# ----------------------------------------------------------------------------- the task


def resolve_task(name: str) -> Task:
    """The one probe task named (a name with a single task, or an id such as icl_4shot)."""
    try:
        tasks = get_tasks([name])
    except UnknownTaskError as exc:
        raise FinetuneError(str(exc)) from None
    if len(tasks) != 1:
        ids = ", ".join(t.id for t in tasks)
        raise FinetuneError(f"--task {name} names {len(tasks)} probe tasks ({ids}); name one")
    return tasks[0]


def training_split(task: Task):
    """The skill generator whose examples outside the held-out split train `task`; a
    FinetuneError when the task has none."""
    from scaling.data.skills import UnknownSkillError, get_skill, sample_train

    if type(task).examples is not Task.examples:
        raise FinetuneError(f"task {task.id} has no training split: its instances do not come "
                            "from a corpus skill generator (it defines its own examples())")
    try:
        skill = get_skill(task.skill)
        sample_train(skill, random.Random(0), task.difficulty)
    except UnknownSkillError as exc:
        raise FinetuneError(f"task {task.id} has no training split: {exc}") from None
    except RuntimeError:
        raise FinetuneError(f"task {task.id} has no training split: every example its "
                            f"generator ({task.skill}, difficulty {task.difficulty}) draws "
                            "is held out") from None
    return skill


@dataclasses.dataclass
class Row:
    """One training sequence: context + answer + line break, and where the answer starts."""

    example: object  # the skill's Example
    tokens: list[int]
    answer_start: int  # index of the answer's first token (the first scored one)


class Stream:
    """The fine-tuning examples in training order, drawn and rendered batch by batch (a
    function of the seed alone, so a resumed run sees the same ones)."""

    def __init__(self, task: Task, skill, tokenizer, window: int, seed: int):
        self.task, self.skill, self.tokenizer, self.window = task, skill, tokenizer, window
        self.rng = random.Random(f"finetune:{seed}:{task.skill}:{task.difficulty}")
        self.end = tokenizer.encode(LINE_START)  # the line break after every corpus line

    def draw(self, n: int) -> list[Row]:
        """The next n rows."""
        from scaling.data.skills import sample_train

        examples = [sample_train(self.skill, self.rng, self.task.difficulty) for _ in range(n)]
        contexts = self.tokenizer.encode_batch([self.task.context(e) for e in examples])
        answers = self.tokenizer.encode_batch([e.answer for e in examples])
        rows = []
        for ex, ctx, ans in zip(examples, contexts, answers):
            # The scorer's cut (scaling/scorer.py: the answer and its decoding budget, or the
            # longest option), with room for the line break too.
            scored = len(ans) if self.task.kind == GENERATE else max(
                map(len, self.tokenizer.encode_batch(list(ex.choices))))
            need = max(room_needed(self.task.kind, scored, self.window),
                       len(ans) + len(self.end))
            try:
                ctx = fit_context(ctx, need, self.window)
            except ValueError as exc:
                raise FinetuneError(f"task {self.task.id}: {exc} (less the soft prompt)") from None
            rows.append(Row(ex, list(ctx) + list(ans) + list(self.end), len(ctx)))
        return rows


@dataclasses.dataclass
class Plan:
    """The fine-tuning run's shape, fixed before the first step."""

    lr: float  # peak learning rate (scaling.train.get_lr reads lr and total_steps)
    total_steps: int
    batch_size: int
    save_steps: list[int]
    rows: list[Row]  # every step's examples: rows[s * batch_size:(s + 1) * batch_size]
    tokens: list[int]  # fine-tuning tokens after s steps, s = 0..total_steps

    def batch(self, step: int) -> list[Row]:
        """The examples of step `step`."""
        return self.rows[step * self.batch_size:(step + 1) * self.batch_size]


def make_plan(settings: Settings, stream: Stream) -> Plan:
    """Draw batches until their tokens reach the budget; checkpoint steps as training's
    (0, 1, 2, 4, ... then every total/8: scaling/checkpoint.py)."""
    rows, tokens = [], [0]
    while tokens[-1] < settings.tokens:
        batch = stream.draw(settings.batch_size)
        rows += batch
        tokens.append(tokens[-1] + sum(len(r.tokens) for r in batch))
    total = len(tokens) - 1
    return Plan(settings.peak_lr, total, settings.batch_size,
                checkpoint_steps(total, max(1, total // 8)), rows, tokens)


def prove_disjoint(task: Task, rows: list[Row], tokenizer) -> None:
    """Refuse (FinetuneError) fine-tuning rows that hold a held-out probe instance: an
    example in the held-out split, or any probe instance of the task's skill (every probe
    task of it, at its default n) as a whole line of the tokens trained on."""
    from scaling.data.contamination import check_contamination
    from scaling.data.skills import is_heldout

    held = {r.example.text: r.example for r in rows if is_heldout(r.example)}
    probes = [ex for t in all_tasks() if t.skill == task.skill
              and type(t).examples is Task.examples for ex in t.examples()]
    flat = np.concatenate([np.asarray(r.tokens, dtype=np.int64) for r in rows])
    held.update((ex.text, ex) for ex in check_contamination(flat, probes, tokenizer))
    held = list(held.values())
    if held:
        raise FinetuneError(f"{len(held)} fine-tuning example(s) of {task.id} are held-out "
                            f"probe instances (e.g. {held[0].text!r}); refusing to train on "
                            "them")


# ----------------------------------------------------------------------------- the model


def trainable(model, mode: str, k: int = 0) -> list[str]:
    """Set requires_grad by mode; returns the names of the parameters that train.

    full: all. top_k: the last k blocks, ln_f and the head (the tied token embedding).
    prompt: the soft prompt only.
    """
    depth = len(model.blocks)
    if mode == "top_k" and k > depth:
        raise FinetuneError(f"--k={k} is more than the model's {depth} block(s); --mode full "
                            "trains them all")
    top = tuple(f"blocks.{i}." for i in range(depth - k, depth))
    names = []
    for name, p in model.named_parameters():
        train = (mode == "full" or (mode == "prompt" and name == "soft_prompt")
                 or (mode == "top_k" and (name.startswith(top + ("ln_f.",))
                                          or name == "wte.weight")))
        p.requires_grad_(train)
        if train:
            names.append(name)
    if not names:
        raise FinetuneError(f"--mode {mode} trains no parameter of this model")
    return names


def build_model(source: Source, settings: Settings, stream_rows: list[Row], device):
    """The source network, with a soft prompt in prompt mode (drawn from the embeddings of
    tokens the task's text uses, seeded), parameters frozen by mode."""
    from scaling.model import GPT, GPTConfig

    cfg = GPTConfig(**source.state["model_config"])
    if settings.mode == "prompt":  # `prepare` checked that the block has room for it
        cfg = dataclasses.replace(cfg, prompt_len=settings.prompt_len)
    model = GPT(cfg)
    missing, unexpected = model.load_state_dict(source.state["model"], strict=False)
    if unexpected or set(missing) - {"soft_prompt"}:
        raise FinetuneError(f"{source.path}: weights do not fit its model_config "
                            f"(missing {missing}, unexpected {unexpected})")
    if model.soft_prompt is not None:
        used = sorted({t for r in stream_rows[:1000] for t in r.tokens})
        gen = torch.Generator().manual_seed(settings.seed)
        pick = torch.tensor(used)[torch.randint(len(used), (cfg.prompt_len,), generator=gen)]
        with torch.no_grad():
            model.soft_prompt.copy_(model.wte.weight[pick])
    trainable(model, settings.mode, settings.k)
    return model.to(device)


def make_batch(rows: list[Row], lead: int, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of a step: inputs (B, W) right-padded with 0, targets the next tokens over the
    answer and its line break, IGNORE elsewhere (context, padding)."""
    longest = max(len(r.tokens) for r in rows) - 1  # the last token is a target only
    width = min(window, -(-(lead + longest) // PAD_MULTIPLE) * PAD_MULTIPLE - lead)
    x = np.zeros((len(rows), width), dtype=np.int64)
    y = np.full((len(rows), width), IGNORE, dtype=np.int64)
    for i, r in enumerate(rows):
        n = len(r.tokens) - 1
        x[i, :n] = r.tokens[:-1]
        y[i, r.answer_start - 1:n] = r.tokens[r.answer_start:]  # position j predicts j + 1
    return torch.from_numpy(x), torch.from_numpy(y)


# ----------------------------------------------------------------------------- the run


def default_out(source_text: str, settings: Settings, task_id: str) -> Path:
    """runs/<sweep>/<run>[@step] -> runs/finetune/<run>[-stepN]-<mode>-<task>[-<hash>]: next
    to the source's sweep directory; settings other than the defaults add a hash of them."""
    run_dir, step = parse_source(source_text)
    name = run_dir.resolve().name if run_dir.name in ("", ".", "..") else run_dir.name
    name += (f"-step{step}" if step is not None else "") + f"-{settings.mode_tag}-{task_id}"
    defaults = Settings(settings.source, settings.task, settings.mode, settings.k,
                        settings.prompt_len).trained()
    if settings.trained() != defaults:
        text = json.dumps(settings.trained(), sort_keys=True)
        name += "-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return Path(os.path.normpath(run_dir / ".." / ".." / FINETUNE_ROOT / name))


@dataclasses.dataclass
class _Run:
    """Everything a fine-tuning run needs, resolved and checked before anything is written."""

    settings: Settings
    source: Source
    task: Task
    tokenizer: object
    plan: Plan
    model: object
    out: Path
    record: dict  # run.json's `finetune`: what a resumed run must match (the source by
    # its step and sha256, so another spelling of its path resumes too)


def prepare(settings: Settings, out: str | Path | None = None, device="cpu") -> _Run:
    """Resolve and check a request: the source checkpoint, the task and its training split,
    the examples (proved disjoint from the probes), the model. Writes nothing."""
    settings.check()
    task = resolve_task(settings.task)
    skill = training_split(task)
    source = load_source(settings.source)
    from scaling.data.tokenizer import get_tokenizer

    tokenizer = get_tokenizer(source.meta.get("tokenizer", "char"))
    config = source.state["model_config"]
    lead = settings.prompt_len if settings.mode == "prompt" else 0
    window = int(config["block_size"]) - lead
    if window < 2:
        raise FinetuneError(f"--prompt-len={settings.prompt_len} leaves no room in the block "
                            f"of {config['block_size']}")
    plan = make_plan(settings, Stream(task, skill, tokenizer, window, settings.seed))
    prove_disjoint(task, plan.rows, tokenizer)
    model = build_model(source, settings, plan.rows, device)
    out = Path(out) if out else default_out(settings.source, settings, task.id)
    record = dict(settings.trained(), task=task.id, source_step=source.step,
                  source_sha256=source.meta.get("sha256"),
                  intervention=settings.intervention(task.id))
    return _Run(settings, source, task, tokenizer, plan, model, out, record)


def _open_val(source: Source):
    """The source corpus's validation shard and the tokens to score, or None when it is not
    at hand (then no validation rows are written)."""
    from scaling.data.shards import ShardError, open_shard

    corpus = source.meta.get("corpus_dir")
    if not corpus:
        return None
    try:
        shard = open_shard(corpus, "val", verify=True)
    except (ShardError, OSError, KeyError, ValueError):
        print(f"note: {corpus}: the source's corpus is not readable here; no validation-loss "
              "rows", file=sys.stderr)
        return None
    tokens = int(source.state.get("config", {}).get("train", {}).get("val_tokens", 65_536))
    return shard, tokens


class _Checkpointer:
    """Writes a checkpoint (and its validation row) after `step` steps."""

    def __init__(self, run: _Run, optimizer, device, logger):
        self.run, self.optimizer, self.device, self.logger = run, optimizer, device, logger
        source = run.source
        counts = run.model.num_scaling_params()
        self.params = int(source.meta.get("params") or counts["total"])
        self.nonembed = int(source.meta.get("nonembed_params") or counts["nonembed"])
        self.flops_per_token = run.model.estimate_flops()
        self.val = _open_val(source) if run.settings.mode != "prompt" else None

    def tokens_flops(self, step: int) -> tuple[int, float]:
        """Training tokens and FLOPs after `step` fine-tuning steps, the source's included."""
        ft = self.run.plan.tokens[step]
        meta = self.run.source.meta
        return (int(meta.get("tokens", 0)) + ft,
                float(meta.get("flops", 0.0)) + ft * self.flops_per_token)

    def __call__(self, step: int) -> None:
        from scaling.train import validation_loss

        run, meta = self.run, self.run.source.meta
        tokens, flops = self.tokens_flops(step)
        tag = run.settings.intervention(run.task.id)
        common = dict(run=run.out.name, rung=meta.get("rung", ""), params=self.params,
                      nonembed_params=self.nonembed, data_hash=meta.get("data_hash"),
                      seed=meta.get("seed"))
        extra = {}
        if self.val is not None:
            shard, n = self.val
            val = validation_loss(run.model, shard, n, run.plan.batch_size, self.device,
                                  contextlib.nullcontext())
            append_rows(run.out, [result_row(**common, step=step, tokens=tokens, flops=flops,
                                             task=VAL_TASK, shots=0, metric=LOSS_METRIC,
                                             value=val, n=n, intervention=tag)])
            extra["val_loss"] = val
            self.logger.log({"val/loss": val, "tokens": tokens, "flops": flops}, step)
        state = {"model": run.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "model_config": run.model.cfg.to_dict(), "rng": torch.get_rng_state(),
                 "step": step, "tokens": tokens, "finetune": run.record}
        save_checkpoint(run.out, step, state, dict(
            common, tokenizer=meta.get("tokenizer", "char"), corpus_dir=meta.get("corpus_dir"),
            tokens=tokens, flops=flops, intervention=tag, source=str(run.source.path),
            finetune_tokens=run.plan.tokens[step], **extra))


def _claim(run: _Run, held: contextlib.ExitStack) -> None:
    """Make the output directory, hold its lock, and refuse one that holds another run."""
    run.out.mkdir(parents=True, exist_ok=True)
    held.enter_context(run_lock(run.out))
    info = run_info.read(run.out)
    before = info.get("finetune")
    if before is None and list_checkpoints(run.out):
        raise FinetuneError(f"{run.out} holds a run that is not a fine-tune; use another --out")
    if before is not None and before != run.record:
        key = min(k for k in set(before) | set(run.record)
                  if before.get(k) != run.record.get(k))
        raise FinetuneError(f"{run.out} holds a fine-tune with {key}={before.get(key)!r}, not "
                            f"{run.record.get(key)!r}; use another --out")


def _record_start(run: _Run) -> None:
    """run.json as a ladder run has it (status TRAINING unless the run is finished), plus
    the source checkpoint, the trainable parameter count and the `finetune` record."""
    from scaling.provenance import code_fingerprint

    info = run_info.read(run.out)
    info.setdefault("code", code_fingerprint())
    meta = run.source.meta
    counts = run.model.num_scaling_params()
    finished = info.get("status") in (run_info.TRAINED, run_info.EVALUATED)
    info.update(run=run.out.name, rung=meta.get("rung", ""),
                params=int(meta.get("params") or counts["total"]),
                nonembed_params=int(meta.get("nonembed_params") or counts["nonembed"]),
                data_hash=meta.get("data_hash"), corpus_dir=meta.get("corpus_dir"),
                total_steps=run.plan.total_steps, batch_size=run.plan.batch_size,
                lr=run.plan.lr, intervention=run.record["intervention"],
                trainable=sum(p.numel() for p in run.model.parameters() if p.requires_grad),
                source=str(run.source.path), finetune=run.record,
                status=info["status"] if finished else run_info.TRAINING)
    run_info.write(run.out, info)


def finetune(settings: Settings, out: str | Path | None = None, evaluate: bool = True,
             eval_tasks: str = "default", eval_n: int = 0, device: str = "cpu",
             threads: int = 0, progress: bool = True, wandb: str = "auto") -> Path:
    """Fine-tune (or resume fine-tuning) as asked; returns the output run directory.

    Every check (settings, source checkpoint, task, training split, disjointness from the
    probes, evaluation tasks) runs before the output directory is made."""
    from scaling.progress import progress_bar
    from scaling.train import get_lr, make_optimizer

    if threads:
        torch.set_num_threads(threads)
    scored = _eval_tasks(eval_tasks) if evaluate else None
    dev = torch.device(device)
    run = prepare(settings, out, dev)
    optim_cfg = Config()
    if settings.mode == "prompt":
        optim_cfg.train.weight_decay = 0.0  # a soft prompt is not pulled towards zero
    with contextlib.ExitStack() as held:
        _claim(run, held)
        _record_start(run)
        model, plan = run.model, run.plan
        optimizer = make_optimizer(model, plan, optim_cfg)
        from scaling.logger import MetricsLogger

        logger = MetricsLogger(run.out, wandb, "scaling", run.out.name, run.record)
        checkpoint = _Checkpointer(run, optimizer, dev, logger)
        start = restore_latest(run.out, model, optimizer, dev)
        if start is None:
            start = 0
            checkpoint(0)
        save_at = set(plan.save_steps)
        lead = model.prompt_len
        params = [p for p in model.parameters() if p.requires_grad]
        bar = progress_bar(total=plan.total_steps, initial=start, disable=not progress,
                           unit="step", desc=f"finetune {run.out.name}")
        started = time.perf_counter()
        model.train()
        for step in range(start, plan.total_steps):
            lr = get_lr(step, plan, optim_cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = make_batch(plan.batch(step), lead, model.window)
            _, loss = model(x.to(dev), y.to(dev))
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(params, optim_cfg.train.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            done = step + 1
            if done % 10 == 0 or done == plan.total_steps:
                tokens, flops = checkpoint.tokens_flops(done)
                logger.log({"train/loss": loss.item(), "lr": lr, "train/grad_norm": norm.item(),
                            "tokens": tokens, "flops": flops}, done)
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            bar.update(1)
            if done in save_at:
                checkpoint(done)
        bar.close()
        info = run_info.read(run.out)
        if info.get("status") == run_info.TRAINING:
            run_info.update(run.out, status=run_info.TRAINED, train_seconds=info.get(
                "train_seconds", 0.0) + time.perf_counter() - started)
        if evaluate and run_info.read(run.out).get("status") != run_info.EVALUATED:
            from scaling.evaluate import evaluate_run

            t0 = time.perf_counter()
            evaluate_run(run.out, tasks=scored, n=eval_n or None, progress=progress,
                         device=device, on_rows=logger.log_eval_rows)
            run_info.update(run.out, status=run_info.EVALUATED,
                            eval_seconds=time.perf_counter() - t0)
        logger.finish()
    return run.out


def _eval_tasks(names: str) -> list[str] | None:
    """--eval-tasks as evaluate_run takes it (None: every registered task), checked."""
    if names in ("", "default", "all"):
        return None
    try:
        get_tasks(names.split(","))
    except UnknownTaskError as exc:
        raise FinetuneError(f"--eval-tasks: {exc}") from None
    return names.split(",")


# ----------------------------------------------------------------------------- sweeps


def sweep_target(args: list[str]):
    """One sweep run's arguments -> scaling.sweep.Target (what `scaling sweep` needs to
    know), without loading the source: a sweep may name checkpoints still to be trained."""
    from scaling.sweep import Target

    ns = build_parser().parse_args(args)
    settings = _settings(ns)
    task = resolve_task(settings.task)
    training_split(task)
    if ns.evaluate:
        _eval_tasks(ns.eval_tasks)
    out = Path(ns.out) if ns.out else default_out(settings.source, settings, task.id)

    def flops() -> float:  # the source's FLOPs per token x the budget (0 if not trained yet)
        try:
            run_dir, step = parse_source(settings.source)
            ckpts = list_checkpoints(run_dir)
            meta = json.loads(ckpts[-1][1].with_suffix(".json").read_text())
            return float(meta["flops"]) / float(meta["tokens"]) * settings.tokens
        except (IndexError, KeyError, OSError, ValueError, ZeroDivisionError):
            return 0.0

    return Target(out, out.parent, bool(ns.evaluate), flops)


# ----------------------------------------------------------------------------- CLI


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as FinetuneError (one line: `main` prints it)."""

    def error(self, message):
        raise FinetuneError(message)


EPILOG = """\
examples:
  scaling finetune runs/ladder/s4-1a2b3c4d --task addition_3d --mode full
  scaling finetune runs/ladder/s4-1a2b3c4d@step512 --task chain_2hop --mode top_k --k 2
  scaling finetune runs/ladder/s4-1a2b3c4d --task addition_3d --mode prompt --prompt-len 16
  scaling eval runs/finetune/s4-1a2b3c4d-full-addition_3d      # re-score, other tasks, ...
  scaling sweep sweeps/finetune.yaml    # every rung of the default ladder, each mode

what is trained: examples of the task's own generator outside its held-out split (never a
probe instance: checked before the first step), each shown exactly as the probe shows it
(context with its shots, then the answer and the line break that ends it), the loss on the
answer and that line break only.

modes:
  full     every parameter
  top_k    the last --k blocks, the final norm and the head (tied to the token embedding,
           which trains with it); the rest frozen and unchanged
  prompt   a soft prompt of --prompt-len vectors ahead of every sequence (Lester et al.
           2021), the model frozen; it is saved with the model, so every probe is scored
           with it, in a window of block_size - P tokens

the result is a run directory like a ladder run (checkpoints at log-spaced steps, run.json,
results.csv): its rows carry the source's rung and parameter counts, tokens = the source's
plus the fine-tuning tokens, and intervention finetune:full:TASK, finetune:top<k>:TASK or
prompt:<P>:TASK. The same command again resumes a killed run (bit-identical on CPU).
Options with a dash also take an underscore (--prompt_len=16), the form sweeps pass.
"""


def build_parser() -> argparse.ArgumentParser:
    """Argument parser for `scaling finetune`."""
    p = _Parser(prog="scaling finetune", formatter_class=argparse.RawDescriptionHelpFormatter,
                description="Fine-tune a checkpoint on one probe task's training split (full,\n"
                            "top_k) or tune a soft prompt for it (prompt); the result is a run\n"
                            "like a ladder run, tagged as an intervention in the results.",
                epilog=EPILOG)
    p.add_argument("source", nargs="?", metavar="RUN_DIR[@stepN]",
                   help="the run whose last checkpoint (or the one at step N) is fine-tuned")
    p.add_argument("--source", dest="source_opt", metavar="RUN_DIR[@stepN]",
                   help="the same, as an option (what a sweep passes)")
    p.add_argument("--task", required=True,
                   help="the probe task trained on (a task name or id: addition_3d, icl_4shot)")
    p.add_argument("--mode", required=True, choices=MODES, help="what trains (see below)")
    p.add_argument("--k", type=int, default=DEFAULT_K, metavar="K",
                   help=f"top_k: blocks trained from the top (default {DEFAULT_K})")
    p.add_argument("--prompt-len", "--prompt_len", type=int, default=DEFAULT_PROMPT_LEN,
                   metavar="P",
                   help=f"prompt: soft-prompt vectors (default {DEFAULT_PROMPT_LEN})")
    p.add_argument("--tokens", type=float, default=DEFAULT_TOKENS, metavar="N",
                   help=f"fine-tuning tokens, padding excluded (default {DEFAULT_TOKENS:,}; "
                        "2e5 is read too)")
    p.add_argument("--lr", type=float, default=0.0,
                   help="peak learning rate (default: " + ", ".join(
                       f"{m} {v:g}" for m, v in DEFAULT_LR.items()) + ")")
    p.add_argument("--batch-size", "--batch_size", type=int, default=DEFAULT_BATCH_SIZE,
                   metavar="N",
                   help=f"examples per step (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--seed", type=int, default=0,
                   help="order of the examples and the soft prompt's start (default 0)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output run directory (default: runs/finetune/<source run>-<mode>-"
                        "<task> next to the source's sweep directory)")
    p.add_argument("--evaluate", action=argparse.BooleanOptionalAction, default=True,
                   help="score every checkpoint on the probe tasks afterwards (default on)")
    p.add_argument("--eval-tasks", "--eval_tasks", default="default", metavar="TASKS",
                   help="probe tasks scored (default: every registered task)")
    p.add_argument("--eval-n", "--eval_n", type=int, default=0, metavar="N",
                   help="instances per probe task (default 0: each task's own, 500)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (default 0: torch's default)")
    p.add_argument("--wandb", default="auto",
                   help="auto (on under a wandb agent) | disabled | offline | online")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _settings(ns) -> Settings:
    """The Settings of parsed arguments (checked)."""
    if (ns.source is None) == (ns.source_opt is None):
        raise FinetuneError("give the source checkpoint once: RUN_DIR[@stepN] or "
                            "--source=RUN_DIR[@stepN]")
    if ns.tokens != int(ns.tokens):
        raise FinetuneError(f"--tokens={ns.tokens:g}: expected a whole number")
    return Settings(ns.source or ns.source_opt, ns.task, ns.mode, ns.k, ns.prompt_len,
                    int(ns.tokens), ns.lr, ns.batch_size, ns.seed).check()


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; one-line `error: ...` and exit code 2 on bad input."""
    argv = sys.argv[1:] if argv is None else argv
    from scaling.data.shards import ShardError

    out = None
    try:
        ns = build_parser().parse_args(argv)
        settings = _settings(ns)
        device = ns.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        out = finetune(settings, ns.out, evaluate=ns.evaluate, eval_tasks=ns.eval_tasks,
                       eval_n=ns.eval_n, device=device, threads=ns.threads,
                       progress=not ns.no_progress, wandb=ns.wandb)
    except (CheckpointError, ShardError, ValueError, OSError) as exc:  # FinetuneError,
        # ConfigError, UnknownTaskError, RunLockedError are ValueErrors
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: the checkpoints are whole; the same command resumes from the "
              "last one", file=sys.stderr)
        return 130
    print(f"fine-tuned into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
