"""One checkpoint on the probe tasks: instances in, results-schema rows out.

A task's held-out instances are drawn and tokenized once per tokenizer (`prepare`), scored
with the model-level functions of scaling/scoring.py (`score_task`) and written as one row
per metric (`task_rows`). `CheckpointScorer` does this for a checkpoint and its pending
tasks, keeping the prepared tasks across checkpoints; scaling/evaluate.py runs one in its
own process (`score_here`) and scaling/eval_pool.py one in each worker process.

A prompt longer than the model's window is cut on the left so that the answer and the
decoding budget fit (`scaling.tasks.base.fit_context`): every metric of an instance sees
the same prompt window. The exported lm-eval tasks carry prompts cut the same way, which is
why native and lm-eval scores agree.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from scaling.checkpoint import load_model
from scaling.metrics import aggregate, choice_scores, cut_at_stops, generate_scores
from scaling.results import result_row
from scaling.scoring import (
    DEFAULT_BATCH_SIZE, ForcedAnswer, char_greedy_flags, choice_logprobs, cpu_threads,
    one_token_per_char, stop_token_ids, teacher_force_and_decode)
from scaling.tasks import GENERATE, Task
from scaling.tasks.base import fit_context, room_needed


class EvalError(RuntimeError):
    """A run directory or checkpoint that cannot be evaluated (one-line message)."""


class PendingCheckpoint(NamedTuple):
    """A checkpoint and the tasks it still lacks scores for: one unit of `scaling eval`'s
    work (sent to a worker process as is, so it stays picklable)."""

    path: Path  # the step_*.pt file
    meta: dict  # its metadata JSON, with "step" set
    run: str  # the run name its rows carry
    tasks: list[Task]  # the tasks not yet scored at this checkpoint


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' where available, else 'cpu'; any other device as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@dataclass
class Prepared:
    """A task's instances, tokenized once per tokenizer."""

    task: Task
    examples: list
    contexts: list[list[int]]
    golds: list[list[int]]  # generation: gold answer tokens
    choices: list[list[list[int]]]  # multiple choice: tokens of each option
    gold_index: list[int]


def prepare(task: Task, tokenizer) -> Prepared:
    """Draw a task's instances and tokenize them."""
    examples = task.examples()
    if not examples:
        raise EvalError(f"task {task.id}: the generator produced no held-out instances")
    contexts = tokenizer.encode_batch([task.context(e) for e in examples])
    golds, choices, gold_index = [], [], []
    if task.kind == GENERATE:
        golds = tokenizer.encode_batch([e.answer for e in examples])
    else:
        flat = iter(tokenizer.encode_batch([c for e in examples for c in e.choices]))
        choices = [[next(flat) for _ in e.choices] for e in examples]
        gold_index = [task.gold_index(e) for e in examples]
    return Prepared(task, examples, contexts, golds, choices, gold_index)


def score_task(model, tokenizer, prep: Prepared,
               batch_size: int = DEFAULT_BATCH_SIZE) -> dict[str, tuple[float, float]]:
    """metric -> (mean, stderr) of one task on one model."""
    if not getattr(model.cfg, "causal", True):  # an MLM encoder fills in the answer
        from scaling import mlm_scoring

        return mlm_scoring.score_task(model, tokenizer, prep, batch_size)
    task = prep.task
    block = model.window  # the block less a soft prompt's positions (scaling/model.py)
    if task.kind == GENERATE:
        stop_ids = stop_token_ids(tokenizer, task.stop)
        contexts = [fit_context(c, room_needed(GENERATE, len(g), block), block)
                    for c, g in zip(prep.contexts, prep.golds)]
        tf, outs = teacher_force_and_decode(model, contexts, prep.golds, stop_ids, batch_size)
        if one_token_per_char(tokenizer):  # the teacher-forced argmax is the greedy character
            flags = [s.argmax[: len(g)] == np.asarray(g) for s, g in zip(tf, prep.golds)]
        else:
            flags = char_greedy_flags(model, tokenizer, contexts,
                                      [ex.answer for ex in prep.examples], batch_size,
                                      forced=[ForcedAnswer(g, s)
                                              for g, s in zip(prep.golds, tf)])
        per = []
        for ex, s, out, f in zip(prep.examples, tf, outs, flags):
            pred = cut_at_stops(tokenizer.decode(out), task.stop)
            per.append(generate_scores(pred, ex.answer, s.logprobs, f))
        return aggregate(per)
    contexts = [fit_context(c, room_needed(task.kind, max(map(len, opts)), block), block)
                for c, opts in zip(prep.contexts, prep.choices)]
    lls = choice_logprobs(model, contexts, prep.choices, batch_size)
    return aggregate([choice_scores(ll, gi) for ll, gi in zip(lls, prep.gold_index)])


def task_rows(meta: dict, run: str, prep: Prepared,
              scores: dict[str, tuple[float, float]]) -> list[dict]:
    """Results-schema rows (one per metric) for one task at one checkpoint."""
    task = prep.task
    base = dict(
        run=run, rung=meta.get("rung", ""), params=int(meta.get("params", 0)),
        nonembed_params=int(meta.get("nonembed_params", 0)), step=int(meta["step"]),
        tokens=int(meta.get("tokens", 0)), flops=float(meta.get("flops", 0.0)),
        task=task.name, shots=task.shots_column, n=len(prep.examples),
        seed=meta.get("seed"), data_hash=meta.get("data_hash"),
        intervention=meta.get("intervention"))
    rows = []
    for metric in task.metrics:
        value, stderr = scores[metric]
        row = dict(result_row(**base, metric=metric, value=value), stderr=stderr)
        chance = task.chance_of(metric, prep.examples)
        if chance is not None:  # after stderr: the column order of stored results files
            row["chance"] = chance
        rows.append(row)
    return rows


class CheckpointScorer:
    """Scores checkpoints on tasks, each task's instances drawn and tokenized once."""

    def __init__(self, batch_size: int, device: str):
        self.batch_size, self.device = batch_size, device
        self.prepared: dict[tuple[Task, str], Prepared] = {}  # by (task, tokenizer name)
        self.tokenizers: dict[str, object] = {}

    def rows(self, checkpoint: PendingCheckpoint, bar=None) -> list[dict]:
        """Result rows of one checkpoint on its pending tasks; `bar` (a progress bar), when
        given, names each task as it starts and counts it when done."""
        model, meta_loaded = load_model(checkpoint.path, device=self.device)
        meta = dict(meta_loaded, step=checkpoint.meta["step"])
        tok_name = meta.get("tokenizer", "char")
        if tok_name not in self.tokenizers:
            from scaling.data.tokenizer import get_tokenizer

            self.tokenizers[tok_name] = get_tokenizer(tok_name)
        tok = self.tokenizers[tok_name]
        rows = []
        for task in checkpoint.tasks:
            if bar is not None:
                bar.set_postfix_str(f"step {meta['step']} {task.id}", refresh=False)
            key = (task, tok_name)
            if key not in self.prepared:
                self.prepared[key] = prepare(task, tok)
            scores = score_task(model, tok, self.prepared[key], self.batch_size)
            rows += task_rows(meta, checkpoint.run, self.prepared[key], scores)
            if bar is not None:
                bar.update(1)
        return rows


def score_here(plan: list[PendingCheckpoint], threads: int, batch_size: int, device: str,
               bar) -> Iterator[list[dict]]:
    """Rows of each checkpoint of `plan`, scored in this process (a generator: the caller
    writes each checkpoint's rows before the next is scored); the in-process counterpart of
    `scaling.eval_pool.score_in_pool`."""
    scorer = CheckpointScorer(batch_size, device)
    for checkpoint in plan:
        with cpu_threads(threads if device == "cpu" else 0):
            rows = scorer.rows(checkpoint, bar)
        yield rows
