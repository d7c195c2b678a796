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

model_args (anything else is a one-line error naming these, as a typo such as `revison=`
would otherwise score the wrong checkpoint):
  checkpoint=PATH   required: a step_*.pt file, or a run directory for its last checkpoint
  revision=stepN    with a run directory: its checkpoint at step N (Pythia's naming)
  batch_size=N|auto rows per forward pass (lm-eval's --batch_size counts when it is not its
                    default 1). auto (or lm-eval's auto:N) picks the largest size up to
                    max_batch_size that fits: on CUDA by trying it and halving on
                    out-of-memory, as lm-eval's HFLM does; on CPU from the memory available
                    (a CPU gains nothing past the default 256, so that is its cap)
  max_batch_size=N  the largest size auto tries (default 256 on CPU, 4096 on CUDA)
  device=cpu|cuda   default cuda when available
  threads=N         torch CPU threads while scoring (default 1; 0 = torch's default)
(`trust_remote_code`, which lm-eval's --trust_remote_code adds, is accepted and unused.)
A progress bar counts the requests of each type as they are scored.

Scoring goes through the native evaluator's functions (scaling/scoring.py): context and
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
    # lm-eval fills its model registry lazily, only while it is empty: registering
    # `scaling` first would hide `hf` and every other built-in model.
    import lm_eval.models  # noqa: F401
except ImportError as exc:  # lm-eval is optional: pip install 'scaling[lmeval]'
    _MISSING: ImportError | None = exc
    LM = object

    def register_model(*_names):
        return lambda cls: cls
else:
    _MISSING = None

from scaling.allocator import keep_freed_memory
from scaling.checkpoint import CheckpointError, list_checkpoints, load_model, read_metadata
from scaling.metrics import cut_at_stops
from scaling.scoring import (
    DEFAULT_BATCH_SIZE, DEFAULT_THREADS, cpu_threads, greedy_generate, score_continuations,
    stop_token_ids)

log = logging.getLogger(__name__)
DEFAULT_MAX_GEN_TOKS = 64  # when a generate_until request gives none
MODEL_ARGS = ("checkpoint", "revision", "batch_size", "max_batch_size", "device", "threads")
IGNORED_ARGS = ("trust_remote_code",)  # set by lm-eval's --trust_remote_code; nothing remote
# What users of lm-eval's `hf` model type by habit, and what the scaling model calls it.
HF_NAMES = {"pretrained": "checkpoint", "step": "revision", "model": "checkpoint"}
AUTO_MAX_BATCH = {"cpu": DEFAULT_BATCH_SIZE, "cuda": 4096}
CHUNK_BATCHES = 8  # batches scored between progress-bar updates


class ModelArgsError(ValueError):
    """model_args the scaling model cannot use, in one line."""


def check_model_args(args: dict) -> None:
    """Refuse unknown keys (naming the valid ones) and a missing checkpoint."""
    import difflib

    for key in args:
        if key in MODEL_ARGS or key in IGNORED_ARGS:
            continue
        guess = HF_NAMES.get(key) or next(iter(difflib.get_close_matches(
            key, MODEL_ARGS, n=1, cutoff=0.6)), None)
        hint = f" (did you mean {guess!r}?)" if guess else ""
        raise ModelArgsError(f"unknown model_args {key!r}{hint}; the scaling model takes "
                             f"{', '.join(MODEL_ARGS)}")
    if not args.get("checkpoint"):
        raise ModelArgsError("the scaling model needs model_args checkpoint=PATH (a "
                             "step_*.pt file or a run directory)")


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


def _positive(name: str, value) -> int:
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise ModelArgsError(f"{name} must be a whole number or auto, got {value!r}") from None
    if size < 1:
        raise ModelArgsError(f"{name} must be >= 1, got {value}")
    return size


def is_auto(value) -> bool:
    """lm-eval's spellings of an automatic batch size: auto, auto:N."""
    return str(value).startswith("auto")


def largest_that_runs(start: int, probe) -> int:
    """The largest of start, start/2, ..., 1 for which `probe(size)` does not run out of
    memory (lm-eval's HFLM, through accelerate's find_executable_batch_size, does the same)."""
    import torch

    size = start
    while True:
        try:
            probe(size)
            return size
        except torch.cuda.OutOfMemoryError:
            if size == 1:
                raise
            size //= 2
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def _available_memory() -> int:
    """Bytes of memory this process can still take (Linux MemAvailable, else free pages)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def row_bytes(cfg) -> int:
    """An upper estimate of one row's peak memory in a forward pass at full block length
    (fp32): logits and their log-softmax, the KV cache of every layer, one layer's
    activations and attention scores."""
    t, d, v = cfg.block_size, cfg.d_model, cfg.vocab_size
    return 4 * t * (2 * v + 2 * cfg.n_layer * d + 8 * d + cfg.n_head * t)


def auto_batch_size(model, device: str, max_batch_size: int | None = None) -> int:
    """batch_size=auto: the largest power of two up to `max_batch_size` that fits."""
    import torch

    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    start = max_batch_size or AUTO_MAX_BATCH[kind]
    start = 1 << (start.bit_length() - 1)  # a power of two, as lm-eval's search uses
    if kind == "cpu":  # out of memory on a CPU is the OOM killer, never an exception
        fits = max(1, _available_memory() // 2 // row_bytes(model.cfg))
        return min(start, 1 << (fits.bit_length() - 1))
    block = model.window  # the block less a soft prompt's positions (scaling/model.py)

    def probe(size: int) -> None:  # the heaviest calls: every position scored, a full cache
        score_continuations(model, [([0], [0] * (block - 1))] * size, size)
        greedy_generate(model, [[0] * (block - 2)] * size, [2] * size, set(), size)
        torch.cuda.synchronize()

    return largest_that_runs(start, probe)


@register_model("scaling")
class ScalingLM(LM):
    """A scaling checkpoint behind lm-eval's LM interface (all three request types batched)."""

    def __init__(self, checkpoint: str | None = None, batch_size=DEFAULT_BATCH_SIZE,
                 max_batch_size=None, device: str | None = None,
                 threads: int = DEFAULT_THREADS, revision: str | None = None, **other):
        super().__init__()
        import torch

        from scaling.data.tokenizer import get_tokenizer

        check_model_args(dict(other, checkpoint=checkpoint))
        if not device or (str(device).startswith("cuda") and not torch.cuda.is_available()):
            device = "cuda" if torch.cuda.is_available() else "cpu"  # lm-eval's default is cuda:0
        limit = None if max_batch_size is None else _positive("max_batch_size", max_batch_size)
        fixed = None if batch_size is None or is_auto(batch_size) else _positive(
            "batch_size", batch_size)
        self.checkpoint = resolve_checkpoint(checkpoint, revision)
        self.model, self.meta = load_model(self.checkpoint, device=device)
        if not self.model.cfg.causal:  # lm-eval asks for continuations of a text
            raise CheckpointError(f"{self.checkpoint}: an MLM encoder has no left-to-right "
                                  "likelihood for lm-eval; score it with `scaling eval` "
                                  "(fills in the answer: scaling/mlm_scoring.py)")
        self.tokenizer = get_tokenizer(self.meta.get("tokenizer", "char"))
        self.batch_size = fixed or auto_batch_size(self.model, device, limit)
        if fixed is None:
            log.info("scaling: batch_size=auto chose %d", self.batch_size)
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
        check_model_args(args)
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

    def _bar(self, total: int, kind: str, disable: bool):
        """A progress bar over `total` requests (plain lines when stderr is a log)."""
        from scaling.progress import progress_bar

        return progress_bar(total=total, desc=f"scaling {kind}", unit="req", disable=disable)

    def _score(self, pairs: list, counts: list[int], bar) -> list:
        """score_continuations over `pairs`, in chunks of a few batches so that `bar`
        moves (by each pair's entry in `counts`). Pairs are taken in order of length, as
        score_continuations would sort them, so chunks pad as little as one call does."""
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        scores: list = [None] * len(pairs)
        step = self.batch_size * CHUNK_BATCHES
        with cpu_threads(self.threads):
            for start in range(0, len(order), step):
                chunk = order[start:start + step]
                for i, s in zip(chunk, score_continuations(
                        self.model, [pairs[i] for i in chunk], self.batch_size)):
                    scores[i] = s
                bar.update(sum(counts[i] for i in chunk))
        return scores

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """(sum log p(continuation | context), continuation is the greedy output)."""
        pairs, index = [], {}  # index: request -> its pair (empty continuations have none)
        for i, req in enumerate(requests):
            context, continuation = req.args[0], req.args[1]
            cont = self._encode(continuation)
            if cont:
                index[i] = len(pairs)
                pairs.append((self._context(context), cont))
        with self._bar(len(requests), "loglikelihood", disable_tqdm) as bar:
            bar.update(len(requests) - len(pairs))  # empty continuations: nothing to score
            scores = self._score(pairs, [1] * len(pairs), bar)
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

        block = self.model.window  # the block less a soft prompt's positions
        pairs, owner, last = [], [], []  # last: 1 for a request's last window (bar counts it)
        for i, req in enumerate(requests):
            tokens = self._encode(req.args[0])
            windows = get_rolling_token_windows(
                token_list=tokens, prefix_token=int(self.tokenizer.eot_id),
                max_seq_len=block - 1, context_len=1)
            first = len(pairs)
            for ctx, cont in map(make_disjoint_window, windows):
                pairs.append((list(ctx), list(cont)))
                owner.append(i)
                last.append(0)
            if len(pairs) > first:
                last[-1] = 1
        with self._bar(len(requests), "loglikelihood_rolling", disable_tqdm) as bar:
            bar.update(len(requests) - sum(last))  # empty texts: no window
            scores = self._score(pairs, last, bar)
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
        step = self.batch_size * CHUNK_BATCHES
        with self._bar(len(requests), "generate_until", disable_tqdm) as bar, \
                cpu_threads(self.threads):
            for until, items in groups.items():
                stops = stop_token_ids(self.tokenizer, until)
                items.sort(key=lambda item: len(item[1]))  # equal lengths share a batch
                for start in range(0, len(items), step):
                    chunk = items[start:start + step]
                    gens = greedy_generate(self.model, [p for _, p, _ in chunk],
                                           [m for _, _, m in chunk], stops, self.batch_size)
                    for (i, _, _), g in zip(chunk, gens):
                        out[i] = cut_at_stops(self.tokenizer.decode(g), until)
                    bar.update(len(chunk))
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


def _model_args(argv: list[str]) -> dict[str, str]:
    """--model_args / -a as lm-eval reads them: `k=v,k2=v2`, or several `k=v` words."""
    words: list[str] = []
    for i, a in enumerate(argv):
        if a in ("--model_args", "-a"):
            words += _words_until_option(argv[i + 1:])
        elif a.startswith("--model_args="):
            words.append(a.split("=", 1)[1])
    return dict(part.split("=", 1) for w in words for part in w.split(",") if "=" in part)


def _words_until_option(rest: list[str]) -> list[str]:
    out = []
    for w in rest:
        if w.startswith("-"):
            break
        out.append(w)
    return out


def _checkpoint_info(argv: list[str]) -> tuple[str, int | None]:
    """(tokenizer, window) of the checkpoint named in --model_args, if any: the window is
    its block size less a soft prompt's positions (the prompts' cut, as the scorer's).

    With `--model scaling`, model_args are checked here (unknown keys, no checkpoint), and
    a checkpoint that is named but missing or unreadable raises CheckpointError, before
    lm-eval starts, rather than as a traceback from inside lm-eval.
    """
    parts = _model_args(argv)
    if _option(argv, "--model") == "scaling":
        check_model_args(parts)
    if "checkpoint" not in parts:
        return "char", None
    from scaling.checkpoint import load_checkpoint

    path = resolve_checkpoint(parts["checkpoint"], parts.get("revision"))
    tokenizer = read_metadata(path).get("tokenizer", "char")
    state, _ = load_checkpoint(path)
    try:
        config = state["model_config"]  # a soft prompt takes positions of the block
        return tokenizer, int(config["block_size"]) - int(config.get("prompt_len", 0))
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
    except (CheckpointError, ModelArgsError) as exc:
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
