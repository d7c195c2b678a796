"""Export every registered probe task as an lm-eval task: `scaling lm-eval export DIR`.

For each task, DIR gets `probe_<id>.yaml` and `probe_<id>.jsonl` (its instances, the same
ones the native evaluator scores). The YAML names its JSONL by absolute path and
`hooks.LocalTask` reads it directly, so the tasks load local files only, whatever the
working directory. Every task carries the tag `scaling_probes` (`--tasks scaling_probes`
runs them all). The hooks live in the installed package (`scaling.lm_eval_tasks.hooks`);
the exported directory holds data and YAML only.

Generation tasks are `ProbeTask`s (a generate_until request, a loglikelihood request for the
gold answer and one single-token generate_until request per gold character, see hooks.py);
multiple-choice tasks use lm-eval's multiple_choice output type with an empty target
delimiter (options follow the prompt directly, as in the corpus). Both compute their
metrics in `process_results` with scaling.metrics, on text only: the tasks score any
backend (the `scaling` model, lm-eval's `hf` with any tokenizer) with the same meaning.
The tokenizer and block size an export is made for only cut prompts to the window the
native evaluator uses and set the decoding budget (gold tokens + 2; with the char
tokenizer, gold characters + 2, enough for any tokenizer whose tokens hold a character or
more: the default for models of other families).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import yaml

from scaling import atomic
from scaling.tasks import GENERATE, Task, get_tasks
from scaling.tasks.base import EXTRA_TOKENS, fit_context, room_needed

TAG = "scaling_probes"
PREFIX = "probe_"
MANIFEST = "MANIFEST.json"
HOOKS = "scaling.lm_eval_tasks.hooks"
# Bumped when the requests or the JSONL fields change, so an older export is rewritten.
# 2: token_accuracy per gold character (text), answer log-probability in one request.
FORMAT = 2


def lm_eval_name(task: Task) -> str:
    """The lm-eval task name of a probe task: `probe_<id>`."""
    return PREFIX + task.id


def default_dir() -> Path:
    """Where `scaling lm-eval` exports tasks when no --include_path is given.

    $SCALING_LM_EVAL_TASKS, else ~/.cache/scaling/lm_eval_tasks.
    """
    env = os.environ.get("SCALING_LM_EVAL_TASKS")
    return Path(env) if env else Path.home() / ".cache" / "scaling" / "lm_eval_tasks"


def _docs(task: Task, tokenizer, block_size: int | None) -> list[dict]:
    docs = []
    for i, ex in enumerate(task.examples()):
        context = task.context(ex)
        if task.kind == GENERATE:
            answer = len(tokenizer.encode(ex.answer))
        else:
            answer = max(len(tokenizer.encode(c)) for c in ex.choices)
        if block_size:  # the prompt window the native evaluator uses for this block size
            tokens = tokenizer.encode(context)
            cut = fit_context(tokens, room_needed(task.kind, answer, block_size), block_size)
            if len(cut) < len(tokens):
                context = tokenizer.decode(cut)
        doc = {"id": i, "task": task.name, "shots": task.shots_column,
               "context": context, "answer": ex.answer}
        if task.kind == GENERATE:
            doc.update(stop=list(task.stop), max_gen_toks=answer + EXTRA_TOKENS)
        else:
            doc.update(choices=list(ex.choices), gold=task.gold_index(ex))
        docs.append(doc)
    return docs


def _metric_list(names: Iterable[str]) -> list[dict]:
    return [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in names]


def task_yaml(task: Task, data_file: Path) -> dict:
    """The lm-eval config of one probe task (function references as `!function` tags)."""
    cfg = {
        "task": lm_eval_name(task),
        "tag": [TAG],
        "dataset_kwargs": {"data_file": str(data_file.resolve())},
        "test_split": "test",
        "num_fewshot": 0,
        "doc_to_text": "context",
        "target_delimiter": "",
        "metadata": {"version": FORMAT, "task": task.name, "shots": task.shots_column},
    }
    if task.kind == GENERATE:
        cfg.update({
            "class": _Function(f"{HOOKS}.ProbeTask"),
            "output_type": "generate_until",
            "doc_to_target": "answer",
            "generation_kwargs": {"until": list(task.stop), "do_sample": False},
            "process_results": _Function(f"{HOOKS}.process_generate"),
            "metric_list": _metric_list(task.metrics),
        })
    else:
        cfg.update({
            "class": _Function(f"{HOOKS}.LocalTask"),
            "output_type": "multiple_choice",
            "doc_to_choice": "choices",
            "doc_to_target": "gold",
            "process_results": _Function(f"{HOOKS}.process_choice"),
            "metric_list": _metric_list(task.metrics),
        })
    return cfg


class _Function(str):
    """A string written as a YAML `!function` tag."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Function, lambda d, v: d.represent_scalar("!function", str(v)))


def fingerprint(tasks: list[Task], tokenizer_name: str, block_size: int | None) -> str:
    """Hash of what an export depends on: task definitions, tokenizer and block size."""
    from scaling.data.corpus import DATA_VERSION

    # The metric names are part of it: the YAML's metric_list must name every metric the
    # hooks return (lm-eval fails on one it cannot aggregate), so a metric added to
    # scaling.metrics refreshes an old export.
    payload = [repr(t) + type(t).__qualname__ + ",".join(t.metrics) for t in tasks]
    text = json.dumps([payload, tokenizer_name, block_size, DATA_VERSION, PREFIX, FORMAT])
    return hashlib.sha256(text.encode()).hexdigest()


def export(out_dir, tasks=None, tokenizer: str = "char", block_size: int | None = None,
           force: bool = True) -> list[str]:
    """Write YAML + JSONL for each task into `out_dir`; returns the lm-eval task names.

    tasks: as scaling.tasks.get_tasks (None = every registered task). tokenizer: the one
    prompts are cut with and the decoding budget counted in (use the checkpoints'
    tokenizer; `char` for models of other families). block_size: the models' context;
    prompts are cut to the window the native evaluator uses, so that scores agree (None:
    prompts kept whole, which only matters for prompts longer than the block). With
    force=False an export whose MANIFEST matches is left as it is.
    """
    from scaling.data.tokenizer import get_tokenizer

    out = Path(out_dir)
    task_list = get_tasks(tasks)
    fp = fingerprint(task_list, tokenizer, block_size)
    names = [lm_eval_name(t) for t in task_list]
    manifest_path = out / MANIFEST
    old: dict = {}
    if manifest_path.is_file():
        try:
            old = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            old = {}
    if not force and old.get("fingerprint") == fp:
        return names
    tok = get_tokenizer(tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    for task, name in zip(task_list, names):
        data_file = out / f"{name}.jsonl"
        atomic.write_text(data_file,
                          "".join(json.dumps(d) + "\n" for d in _docs(task, tok, block_size)))
        text = yaml.dump(task_yaml(task, data_file), Dumper=_Dumper, sort_keys=False)
        (out / f"{name}.yaml").write_text(text)
    for stale in set(old.get("tasks", [])) - set(names):  # tasks since removed
        for suffix in (".yaml", ".jsonl"):
            (out / f"{stale}{suffix}").unlink(missing_ok=True)
    manifest = {"fingerprint": fp, "tokenizer": tokenizer, "block_size": block_size,
                "tag": TAG, "tasks": names}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return names
