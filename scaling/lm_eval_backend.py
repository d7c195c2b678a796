"""The `scaling` model for lm-eval 0.4.13, and `scaling lm-eval ...` (lm-eval's CLI with it).

    scaling lm-eval export DIR                       # write the probe tasks as lm-eval tasks
    scaling lm-eval run --model scaling --model_args checkpoint=RUN/checkpoints/step_000512.pt \\
        --tasks scaling_probes                        # every probe task, through lm-eval
    scaling lm-eval run --model scaling --model_args checkpoint=RUN_DIR,batch_size=128 \\
        --tasks probe_addition_3d,hellaswag           # standard tasks work if their data is there

Importing this module registers the model (`@register_model("scaling")`); lm-eval's own
`lm_eval` command cannot see a model registered by another package, so `scaling lm-eval`
registers it and then hands every argument to lm-eval's CLI unchanged, adding
`--include_path` of the exported probe tasks (exported on first use for the checkpoint's
tokenizer and block size, refreshed when the registry changes) unless one is given.

model_args: checkpoint=PATH (a step_*.pt file, or a run directory for its last checkpoint),
revision=stepN (with a run directory: its checkpoint at step N, as Pythia names them),
batch_size=N (rows per forward pass; lm-eval's --batch_size is used when it is not its
default 1; "auto" means 256), device=cpu|cuda, threads=N (torch CPU threads while scoring,
default 1; 0 = torch's default).

Scoring goes through the native evaluator's functions (scaling/evaluate.py): context and
continuation are encoded separately and concatenated; an empty context is the eot token;
decoding is greedy (sampling arguments are ignored), stops at eot or an `until` string and
decodes at most half the block size (`max_gen_toks` is capped there).
"""

from __future__ import annotations

import logging
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError as exc:  # lm-eval is optional: pip install 'scaling[lmeval]'
    _MISSING: ImportError | None = exc
    LM = object

    def register_model(*_names):
        return lambda cls: cls
else:
    _MISSING = None

from scaling.allocator import keep_freed_memory
from scaling.checkpoint import CheckpointError, list_checkpoints, load_model, read_metadata
from scaling.evaluate import (
    DEFAULT_BATCH_SIZE, DEFAULT_THREADS, cpu_threads, greedy_generate, score_continuations,
    stop_token_ids)
from scaling.metrics import cut_at_stops

log = logging.getLogger(__name__)
DEFAULT_MAX_GEN_TOKS = 64  # when a generate_until request gives none


def resolve_checkpoint(path: str | Path, revision: str | int | None = None) -> Path:
    """A checkpoint file, or a run directory's (or its checkpoints/ folder's) checkpoint at
    `revision` (`step512` or `512`, Pythia's naming), its last one by default."""
    p = Path(path)
    if p.is_file() and revision is None:
        return p
    if p.is_dir() or p.is_file():
        run_dir = p.parent.parent if p.is_file() else p.parent if p.name == "checkpoints" else p
        ckpts = dict(list_checkpoints(run_dir))
        if not ckpts:
            raise CheckpointError(f"{p}: no checkpoints in this run directory")
        if revision is None:
            return ckpts[max(ckpts)]
        text = str(revision)
        step = text[4:] if text.startswith("step") else text
        if not step.isdigit():
            raise CheckpointError(f"revision={text}: expected stepN or N (e.g. step512)")
        if int(step) not in ckpts:
            raise CheckpointError(f"{run_dir}: no checkpoint at step {int(step)} (steps: "
                                  f"{', '.join(map(str, sorted(ckpts)))})")
        return ckpts[int(step)]
    raise CheckpointError(f"{p}: no such checkpoint or run directory")


def _batch_size(value) -> int:
    if value is None or str(value).startswith("auto"):
        return DEFAULT_BATCH_SIZE
    size = int(value)
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, got {value}")
    return size


@register_model("scaling")
class ScalingLM(LM):
    """A scaling checkpoint behind lm-eval's LM interface (all three request types batched)."""

    def __init__(self, checkpoint: str, batch_size=DEFAULT_BATCH_SIZE, max_batch_size=None,
                 device: str | None = None, threads: int = DEFAULT_THREADS,
                 revision: str | None = None, **_ignored):
        super().__init__()
        import torch

        from scaling.data.tokenizer import get_tokenizer

        if not device or (str(device).startswith("cuda") and not torch.cuda.is_available()):
            device = "cuda" if torch.cuda.is_available() else "cpu"  # lm-eval's default is cuda:0
        self.checkpoint = resolve_checkpoint(checkpoint, revision)
        self.model, self.meta = load_model(self.checkpoint, device=device)
        self.tokenizer = get_tokenizer(self.meta.get("tokenizer", "char"))
        self.batch_size = _batch_size(batch_size)
        self.threads = int(threads) if str(device).startswith("cpu") else 0
        self._device = device
        self._warned_chars = False

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        """`checkpoint=PATH,batch_size=N` plus lm-eval's batch_size/device (see module doc)."""
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None):
        """model_args win; lm-eval's default --batch_size of 1 does not override ours."""
        args = dict(arg_dict)
        for key, value in (additional_config or {}).items():
            if value is None or key in args:
                continue
            if key == "batch_size" and str(value) == "1":
                continue
            args[key] = value
        if "checkpoint" not in args:
            raise ValueError("the scaling model needs model_args checkpoint=PATH "
                             "(a step_*.pt file or a run directory)")
        return cls(**args)

    # ------------------------------------------------------------------ tokenization

    def _encode(self, text: str) -> list[int]:
        try:
            return self.tokenizer.encode(text)
        except ValueError:
            if getattr(self.tokenizer, "name", "") != "char":
                raise
            # Text outside the char alphabet (non-ASCII in standard tasks): map each such
            # character to "?" so the task still runs; warn once.
            if not self._warned_chars:
                log.warning("scaling: characters outside the char tokenizer's alphabet are "
                            "scored as '?'")
                self._warned_chars = True
            alphabet = set(self.tokenizer.alphabet)
            return self.tokenizer.encode("".join(c if c in alphabet else "?" for c in text))

    def _context(self, text: str) -> list[int]:
        return self._encode(text) or [int(self.tokenizer.eot_id)]

    # ------------------------------------------------------------------ requests

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """(sum log p(continuation | context), continuation is the greedy output)."""
        pairs, index = [], {}  # index: request -> its pair (empty continuations have none)
        for i, req in enumerate(requests):
            context, continuation = req.args[0], req.args[1]
            cont = self._encode(continuation)
            if cont:
                index[i] = len(pairs)
                pairs.append((self._context(context), cont))
        with cpu_threads(self.threads):
            scores = score_continuations(self.model, pairs, self.batch_size)
        out = []
        for i, req in enumerate(requests):
            result = (0.0, True)  # an empty continuation is certain
            if i in index:
                cont, s = pairs[index[i]][1], scores[index[i]]
                result = (float(s.logprobs.sum()),
                          bool(np.array_equal(s.argmax[: len(cont)], cont)))
            self.cache_hook.add_partial("loglikelihood", req.args, result)
            out.append(result)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of whole texts, in disjoint windows that fit the block size."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        block = self.model.cfg.block_size
        pairs, owner = [], []
        for i, req in enumerate(requests):
            tokens = self._encode(req.args[0])
            windows = get_rolling_token_windows(
                token_list=tokens, prefix_token=int(self.tokenizer.eot_id),
                max_seq_len=block - 1, context_len=1)
            for ctx, cont in map(make_disjoint_window, windows):
                pairs.append((list(ctx), list(cont)))
                owner.append(i)
        with cpu_threads(self.threads):
            scores = score_continuations(self.model, pairs, self.batch_size)
        totals = [0.0] * len(requests)
        for i, s in zip(owner, scores):
            totals[i] += float(s.logprobs.sum())
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy continuations, cut at the first `until` string; batched by stop set."""
        groups = defaultdict(list)  # stop strings -> [(index, prompt tokens, max new)]
        for i, req in enumerate(requests):
            context, gen_kwargs = req.args[0], dict(req.args[1] or {})
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(gen_kwargs.get("max_gen_toks") or DEFAULT_MAX_GEN_TOKS)
            groups[tuple(until)].append((i, self._context(context), max_new))
        out: list = [None] * len(requests)
        with cpu_threads(self.threads):
            for until, items in groups.items():
                gens = greedy_generate(self.model, [p for _, p, _ in items],
                                       [m for _, _, m in items],
                                       stop_token_ids(self.tokenizer, until), self.batch_size)
                for (i, _, _), g in zip(items, gens):
                    out[i] = cut_at_stops(self.tokenizer.decode(g), until)
        for req, text in zip(requests, out):
            self.cache_hook.add_partial("generate_until", req.args, text)
        return out


# ---------------------------------------------------------------------- CLI


def _option(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def _checkpoint_info(argv: list[str]) -> tuple[str, int | None]:
    """(tokenizer, block size) of the checkpoint named in --model_args, if any.

    A checkpoint that is named but missing or unreadable raises CheckpointError here,
    before lm-eval starts, rather than as a traceback from inside lm-eval.
    """
    args = _option(argv, "--model_args") or _option(argv, "-a") or ""
    parts = dict(part.split("=", 1) for part in args.replace(" ", ",").split(",")
                 if "=" in part)
    if "checkpoint" not in parts:
        return "char", None
    from scaling.checkpoint import load_checkpoint

    path = resolve_checkpoint(parts["checkpoint"], parts.get("revision"))
    tokenizer = read_metadata(path).get("tokenizer", "char")
    state, _ = load_checkpoint(path)
    try:
        return tokenizer, int(state["model_config"]["block_size"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path}: no model_config.block_size in the checkpoint") from None


def export_main(argv: list[str]) -> int:
    """`scaling lm-eval export DIR [--tasks a,b] [--tokenizer char]`."""
    import argparse

    from scaling.lm_eval_tasks import TAG, export
    from scaling.tasks import UnknownTaskError

    p = argparse.ArgumentParser(prog="scaling lm-eval export",
                                description="Write every probe task as an lm-eval task "
                                            "(YAML + JSONL) into DIR.")
    p.add_argument("dir", help="output directory (pass it to lm-eval as --include_path)")
    p.add_argument("--tasks", default="default", help="comma-separated task names or ids")
    p.add_argument("--tokenizer", default="char", help="tokenizer of the checkpoints to score")
    p.add_argument("--block-size", type=int, default=None,
                   help="context length of the checkpoints: prompts are cut to the window "
                        "the native evaluator uses (needed for equal scores on prompts "
                        "longer than the block)")
    args = p.parse_args(argv)
    try:
        names = export(args.dir, tasks=args.tasks, tokenizer=args.tokenizer,
                       block_size=args.block_size)
    except (UnknownTaskError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {len(names)} tasks to {args.dir} (tag {TAG}; use --include_path "
          f"{Path(args.dir).resolve()})")
    return 0


def cli_main(argv: list[str] | None = None) -> int:
    """`scaling lm-eval ARGS...`: lm-eval's CLI with the scaling model and probe tasks.

    `export DIR` writes the probe tasks; anything else goes to lm-eval unchanged, plus
    `--include_path` of the (auto-exported) probe tasks when ARGS give none.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "export":
        return export_main(argv[1:])
    if _MISSING is not None:
        print(f"error: lm-eval is not installed ({_MISSING}); pip install 'scaling[lmeval]'",
              file=sys.stderr)
        return 2
    wants_help = not argv or any(a in ("-h", "--help") for a in argv)
    keep_freed_memory()
    try:  # a bad checkpoint raises CheckpointError here or from the backend inside lm-eval
        if not wants_help and _option(argv, "--include_path") is None:
            from scaling.lm_eval_tasks import default_dir, export

            tokenizer, block = _checkpoint_info(argv)
            name = "char" if tokenizer == "char" else Path(tokenizer).stem
            folder = default_dir() / (f"{name}-block{block}" if block else name)
            export(folder, tokenizer=tokenizer, block_size=block, force=False)
            argv += ["--include_path", str(folder)]
        return _run_lm_eval_cli(argv)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        if not str(exc).startswith("Tasks not found"):  # lm-eval 0.4.13's wording
            raise
        from scaling.lm_eval_tasks import TAG

        print(f"error: lm-eval: {exc}; the probe tasks are named probe_<task id> (e.g. "
              f"probe_addition_3d, probe_icl_4shot) and all of them form the group "
              f"{TAG}", file=sys.stderr)
        return 2


def _run_lm_eval_cli(argv: list[str]) -> int:
    """lm-eval's own CLI entry point on `argv`; its exit status."""
    from lm_eval.__main__ import cli_evaluate

    saved = sys.argv
    sys.argv = ["lm-eval", *argv]
    try:
        cli_evaluate()
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
