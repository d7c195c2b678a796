"""`scaling results import-lm-eval RESULTS.json... --out FILE`: scores of any model family.

lm-eval's `--output_path` writes one `results_<date>.json` per run, holding every task's
aggregated metrics ("results"), the per-task sample counts ("n-samples"), the task configs
("configs": ours carry the probe task and shots in their metadata) and the model
("config": "model", "model_args", "model_num_parameters", "model_revision"). This module
turns such files into rows of the results schema (scaling/results.py), so that
`scaling report --results FILE` judges that family like our own ladder:

- run: the model as lm-eval loaded it (`pretrained=` of model_args, a hub name or a
  directory); with a revision that is not a training step (a branch or commit) `@revision`
  is appended, so two versions of one model are two runs.
- rung: the last component of the model's name (`pythia-70m` for EleutherAI/pythia-70m).
- step: N for a revision named `stepN` (Pythia's checkpoints), else empty; tokens:
  step x `--tokens-per-step` when that is given, else empty; flops: empty. The report's
  axes that need them are then `insufficient_data`; revisions of one model are the points
  of its training dynamics.
- a model with a peft adapter (`peft=` in model_args) is a run of its own: `NAME+peft=ADAPTER`.
- intervention: `--intervention TAG` tags every row (empty otherwise).
- params / nonembed_params: a directory written by `scaling export` gives the rung's own
  counts (scaling_export.json); otherwise counted from the model's config.json (read with
  transformers from the directory or the local HF cache, never the network; the model is
  built on the meta device, so counting takes no memory): every parameter tensor once (tied ones
  once); non-embedding = all but the token-embedding and position-embedding tables and an
  untied output projection (Pythia's "non-embedding" count). Without the config,
  lm-eval's own `model_num_parameters` (nonembed empty); `--params N` overrides both.
- task / shots / metric / value / stderr: each probe task's metrics (lm-eval task
  `probe_<task id>`, filter `none`); n: lm-eval's effective sample count (after --limit);
  chance: from the task registry, over the instances lm-eval scored (the first n).

Rows whose key (run, step, task, shots, metric) is already in FILE replace the old ones
(re-importing a run updates it); two input files with different scores for one key are
refused.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from scaling.results import COLUMNS, ResultsError, dedupe, read_file, refuse_conflicts

PREFIX = "probe_"  # scaling.lm_eval_tasks.PREFIX (not imported: that module needs lm-eval)
MIN_FORMAT = 2  # task version of the first export that scores token_accuracy per character
STEP_REVISION = re.compile(r"step(\d+)")
NO_REVISION = ("", "main", "None")


class ImportLmEvalError(ValueError):
    """Input that cannot be imported (one-line message naming the file)."""


@dataclass
class Model:
    """Who produced one lm-eval results file, as the results schema names it."""

    run: str
    rung: str
    step: int | None
    params: int
    nonembed_params: int | None


# --------------------------------------------------------------------------------------------
# reading lm-eval output
# --------------------------------------------------------------------------------------------

def find_results(paths: list[str]) -> list[Path]:
    """The results files named: files as given, directories searched for results_*.json."""
    files: list[Path] = []
    for name in paths:
        p = Path(name)
        if p.is_dir():
            found = sorted(p.rglob("results_*.json"))
            if not found:
                raise ImportLmEvalError(f"{p}: no lm-eval results_*.json below this directory")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise ImportLmEvalError(f"{p}: no such file or directory")
    return files


def read_results(path: Path) -> dict:
    """One lm-eval results JSON, checked to be one ("results" and "config" objects)."""
    hint = "pass the results_*.json that lm-eval's --output_path writes"
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ImportLmEvalError(f"{path}: not lm-eval output (not JSON: {exc}); {hint}") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict) \
            or not isinstance(data.get("config"), dict):
        raise ImportLmEvalError(f"{path}: not lm-eval output (no 'results' and 'config' "
                                f"objects); {hint}")
    return data


def model_args(config: dict) -> dict:
    """lm-eval's model_args as a dict (0.4.13 writes a dict; older versions a string)."""
    args = config.get("model_args") or {}
    if isinstance(args, str):
        args = dict(part.split("=", 1) for part in args.split(",") if "=" in part)
    return {str(k): v for k, v in args.items()}


# --------------------------------------------------------------------------------------------
# the model: name, revision, parameter counts
# --------------------------------------------------------------------------------------------

def parameter_counts(model) -> tuple[int, int]:
    """(all parameters, non-embedding parameters) of a torch module.

    Each tensor once (tied weights share one). Non-embedding excludes every nn.Embedding
    table (tokens; learned positions) and the output projection when it is a tensor of its
    own (untied, as Pythia's embed_out): Kaplan et al.'s N, as Pythia counts it, and as
    scaling/model.py counts ours (its output layer is tied to the token table).
    """
    import torch

    unique = {id(p): p for p in model.parameters()}
    embedding = {}
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            embedding.update({id(p): p for p in module.parameters(recurse=False)})
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if out is not None and getattr(out, "weight", None) is not None:
        embedding[id(out.weight)] = out.weight
    total = sum(p.numel() for p in unique.values())
    return total, total - sum(p.numel() for p in embedding.values())


def count_from_config(pretrained: str, revision: str | None,
                      trust_remote_code: bool = False) -> tuple[int, int] | None:
    """Parameter counts of a transformers causal LM from its config alone, or None when
    the config is not available offline (a hub model not in the local cache)."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM
    except ImportError:
        return None
    try:
        config = AutoConfig.from_pretrained(pretrained, revision=revision,
                                            local_files_only=True,
                                            trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return None
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return parameter_counts(model)


def _flag(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes")


def exported_counts(name: str) -> tuple[int, int] | None:
    """(params, nonembed_params) recorded by `scaling export` in a local model directory:
    the rung's own counts, which the config's count would exceed by the zero biases that the
    transformers class carries and our GPT does not."""
    from scaling.export import PROVENANCE

    path = Path(name) / PROVENANCE
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
        return int(info["params"]), int(info["nonembed_params"])
    except (ValueError, KeyError, TypeError):
        return None


def identify(data: dict, source: Path, params: int | None = None,
             nonembed_params: int | None = None) -> Model:
    """The run, rung, step and parameter counts of the model that one file scored."""
    config = data["config"]
    kind = str(config.get("model", ""))
    args = model_args(config)
    if kind == "scaling":
        raise ImportLmEvalError(
            f"{source}: model 'scaling' is one of our own checkpoints: `scaling eval RUN_DIR` "
            "writes its rows (with training tokens and FLOPs), and the report reads them")
    name = str(args.get("pretrained") or args.get("model") or data.get("model_name")
               # simple_evaluate(model=<an LM object>) records the model's own name there
               or (kind if not args else "") or "")
    if not name:
        raise ImportLmEvalError(f"{source}: no model name (model_args has no pretrained=)")
    revision = str(args.get("revision") or config.get("model_revision") or "")
    revision = "" if revision in NO_REVISION else revision
    match = STEP_REVISION.fullmatch(revision)
    step = int(match.group(1)) if match else None
    run = name if match or not revision else f"{name}@{revision}"
    if args.get("peft"):  # an adapter on the model is another model: a run of its own
        run = f"{run}+peft={args['peft']}"
    rung = name.rstrip("/").rsplit("/", 1)[-1]
    if params is not None:
        return Model(run, rung, step, int(params), nonembed_params)
    exported = exported_counts(name)
    if exported is not None:
        return Model(run, rung, step, *exported)
    counts = count_from_config(name, revision or None, _flag(args.get("trust_remote_code")))
    if counts is not None:
        return Model(run, rung, step, *counts)
    listed = config.get("model_num_parameters")
    if isinstance(listed, int) and listed > 0:
        return Model(run, rung, step, listed, None)
    raise ImportLmEvalError(f"{source}: cannot count the parameters of {name} (no config.json "
                            "here or in the local HF cache); pass --params N")


# --------------------------------------------------------------------------------------------
# rows
# --------------------------------------------------------------------------------------------

def probe_task(lm_eval_task: str, data: dict, source: Path):
    """The registry's Task behind an exported lm-eval task, checked for how it was run."""
    from scaling.tasks import UnknownTaskError, get_tasks

    if not lm_eval_task.startswith(PREFIX):
        raise ImportLmEvalError(
            f"{source}: task {lm_eval_task!r} is not a probe task (probe_<task id>, "
            "e.g. probe_addition_3d); import reads the probe tasks only")
    try:
        (task,) = get_tasks(lm_eval_task[len(PREFIX):])
    except (UnknownTaskError, ValueError):
        raise ImportLmEvalError(f"{source}: unknown probe task {lm_eval_task!r} (not in the task "
                                "registry, scaling/tasks/)") from None
    version = (data.get("versions") or {}).get(lm_eval_task)
    try:
        old = version is not None and float(version) < MIN_FORMAT
    except (TypeError, ValueError):
        old = False
    if old:
        raise ImportLmEvalError(f"{source}: {lm_eval_task} was exported before token_accuracy "
                                "was defined per character (task version "
                                f"{version}); re-run lm-eval with the current probe tasks")
    shots = (data.get("n-shot") or {}).get(lm_eval_task, 0)
    if shots not in (0, "0", None):
        raise ImportLmEvalError(f"{source}: {lm_eval_task} was run with --num_fewshot {shots}; "
                                "probe prompts hold their own shots, run them with 0")
    return task


def sample_count(data: dict, lm_eval_task: str, source: Path) -> int:
    """Instances lm-eval scored for a task (its effective n-samples, after --limit)."""
    samples = (data.get("n-samples") or {}).get(lm_eval_task) or {}
    n = samples.get("effective", data["results"][lm_eval_task].get("sample_len"))
    if not isinstance(n, int) or n < 1:
        raise ImportLmEvalError(f"{source}: no sample count for {lm_eval_task} (n-samples)")
    return n


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def rows_of(data: dict, source: Path, model: Model, tokens_per_step: int | None,
            intervention: str | None = None) -> list[dict]:
    """Results-schema rows of one lm-eval results file (its probe tasks' metrics)."""
    base = {"run": model.run, "rung": model.rung, "params": model.params,
            "nonembed_params": model.nonembed_params, "step": model.step,
            "tokens": model.step * tokens_per_step
            if model.step is not None and tokens_per_step else None,
            "flops": None}
    rows = []
    for name, scores in data["results"].items():
        task = probe_task(name, data, source)
        n = sample_count(data, name, source)
        examples = task.examples()[:n]  # lm-eval scores the first n documents
        for metric in task.metrics:
            value = _number(scores.get(f"{metric},none"))
            if value is None:
                continue
            row = dict(base, task=task.name, shots=task.shots_column, metric=metric,
                       value=value, n=n, stderr=_number(scores.get(f"{metric}_stderr,none")),
                       chance=task.chance_of(metric, examples))
            if intervention:
                row["intervention"] = intervention
            rows.append(row)
    if not rows:
        raise ImportLmEvalError(f"{source}: no probe-task scores in this file")
    return rows


def import_files(paths: list[str], out: str | os.PathLike, params: int | None = None,
                 nonembed_params: int | None = None,
                 tokens_per_step: int | None = None,
                 intervention: str | None = None) -> pd.DataFrame:
    """Import lm-eval results files into the results file `out`; returns the new rows.

    `intervention` tags every row (the schema's optional column, e.g. `finetune:full:TASK`).

    `out` (CSV, or Parquet by its suffix) keeps its rows except those the import replaces
    (same key). The new rows are checked against the schema before anything is written.
    """
    if Path(out).is_dir():
        raise ImportLmEvalError(f"--out {out} is a directory; name a results file "
                                "(e.g. pythia.csv)")
    files = find_results(paths)
    frames, where = [], []
    for path in files:
        data = read_results(path)
        model = identify(data, path, params, nonembed_params)
        rows = rows_of(data, path, model, tokens_per_step, intervention)
        frames.append(pd.DataFrame(rows))
        where += [f"{path} ({r['task']}, {r['metric']})" for r in rows]
    if params is not None and len({f.run.iloc[0] for f in frames}) > 1:
        raise ImportLmEvalError("--params gives one model's size, but these files hold "
                                f"{len({f.run.iloc[0] for f in frames})} models; import them "
                                "one model at a time")
    new = pd.concat(frames, ignore_index=True)
    columns = COLUMNS + ["stderr", "chance"] + (["intervention"] if intervention else [])
    new = new[columns]
    refuse_conflicts(new, where)
    new = dedupe(new)
    _write(new, Path(out))
    return new


def _save(df: pd.DataFrame, path: Path) -> None:
    if path.suffix != ".parquet":
        df.to_csv(path, index=False)
        return
    try:
        df.to_parquet(path, index=False)
    except ImportError as exc:  # pandas names the missing engine (pyarrow)
        raise ImportLmEvalError(f"writing Parquet: {exc}; or write a .csv") from None


def _write(new: pd.DataFrame, out: Path) -> None:
    """Merge `new` into `out` (new rows win per key), checked, written atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.importing{out.suffix}")
    try:
        _save(new, tmp)
        try:  # the schema's own checks (scaling/results.py), on the rows as written
            merged = read_file(tmp)
        except ResultsError as exc:
            raise ResultsError(str(exc).replace(str(tmp), f"{out} (imported rows)")) from None
        if out.exists():
            merged = dedupe(pd.concat([read_file(out), merged], ignore_index=True))
            _save(merged, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

EPILOG = """\
examples:
  # score Pythia checkpoints in your HF cache (offline) on the probe tasks, then import
  HF_HUB_OFFLINE=1 scaling lm-eval run --model hf \\
      --model_args pretrained=EleutherAI/pythia-70m,revision=step3000 \\
      --tasks scaling_probes --device cpu --batch_size 16 --output_path lm_eval_out/
  scaling results import-lm-eval lm_eval_out/ --tokens-per-step 2097152 --out pythia.csv
  scaling report --results pythia.csv --out reports/pythia

  # a local transformers directory (any causal LM) of a size lm-eval cannot count
  scaling results import-lm-eval out/my_model/results_*.json --params 125000000 --out mine.csv

Each results file becomes one run (the model's name; with a `stepN` revision, its step N)
with one row per (probe task, metric). Parameter counts come from the model's config.json
(local directory or HF cache; non-embedding = all but the embedding tables and an untied
output projection). Tokens and FLOPs stay empty unless --tokens-per-step is given (then
tokens = step x it), so the report judges the `params` axis and calls the others
insufficient_data.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scaling results import-lm-eval",
        description="Turn lm-eval output (results_*.json of the probe tasks, any model family "
                    "scored through lm-eval) into rows of the results schema.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", metavar="RESULTS",
                   help="lm-eval results_*.json files, or directories to search for them")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="results file to write (.csv, or .parquet); existing rows are kept "
                        "unless an imported row has the same key")
    p.add_argument("--params", type=int, default=None, metavar="N",
                   help="the model's parameter count (instead of counting from its config)")
    p.add_argument("--nonembed-params", type=int, default=None, metavar="N",
                   help="its non-embedding parameter count, with --params (else empty)")
    p.add_argument("--tokens-per-step", type=int, default=None, metavar="N",
                   help="training tokens per optimizer step, to fill `tokens` from stepN "
                        "revisions (Pythia: 2097152 = 1024 x 2048)")
    p.add_argument("--intervention", default=None, metavar="TAG",
                   help="tag every row with this intervention (e.g. finetune:full:addition_3d,"
                        " prompt:4:addition_3d); the report compares it with the base ladder")
    return p


def main(argv: list[str] | None = None) -> int:
    """`scaling results import-lm-eval ...`; exit 0, or 2 with a one-line error."""
    args = build_parser().parse_args(argv)
    if args.nonembed_params is not None and args.params is None:
        print("error: --nonembed-params needs --params", file=sys.stderr)
        return 2
    for flag in ("params", "nonembed_params", "tokens_per_step"):
        value = getattr(args, flag)
        if value is not None and value < (0 if flag == "nonembed_params" else 1):
            print(f"error: --{flag.replace('_', '-')} must be a positive integer, got {value}",
                  file=sys.stderr)
            return 2
    try:
        rows = import_files(args.results, args.out, params=args.params,
                            nonembed_params=args.nonembed_params,
                            tokens_per_step=args.tokens_per_step,
                            intervention=args.intervention)
    except (ImportLmEvalError, ResultsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    runs = rows.drop_duplicates(["run", "step"])
    print(f"imported {len(rows)} rows ({len(runs)} model checkpoint(s), "
          f"{rows.task.nunique()} tasks) into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
