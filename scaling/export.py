"""Export checkpoints as transformers models: `scaling export RUN_DIR [--step N | --all] --out DIR`.

The GPT of scaling/model.py is Pythia's architecture, GPT-NeoX, at a small size, so a
checkpoint becomes a directory that `transformers` reads offline with no code of ours:
`AutoModelForCausalLM.from_pretrained(DIR)`, `pipeline("text-generation", model=DIR)`,
lm-eval's `hf` backend (`--model hf --model_args pretrained=DIR`).

What is written (Pythia's layout; `--all` writes one such directory per checkpoint, named
`stepN` as Pythia names its revisions):
    config.json             GPTNeoXConfig
    model.safetensors       the weights, fp32, mapped as below
    tokenizer.json          a `tokenizers` file giving the same ids as our tokenizer
    tokenizer_config.json   eos = bos = pad = <|endoftext|> (our eot), no tokens added
    special_tokens_map.json
    generation_config.json  eos = pad = eot (greedy unless the caller samples)
    scaling_export.json     provenance: run, rung, step, tokens, FLOPs, parameter counts,
                            the checkpoint's sha256 and the verification's max logit diff

The mapping, exact by construction (our block -> GPTNeoXLayer):
    wte                   -> gpt_neox.embed_in, and the output layer (tie_word_embeddings)
    blocks.i.ln1 / ln2    -> layers.i.input_layernorm / post_attention_layernorm (eps 1e-5)
    blocks.i.attn.qkv     -> attention.query_key_value, rows regrouped: ours are
                             [q of every head; k ...; v ...], NeoX reads them per head as
                             [q_h; k_h; v_h] (`qkv.view(B, T, heads, 3 * hs)`)
    blocks.i.attn.proj    -> attention.dense
    blocks.i.mlp.fc/proj  -> mlp.dense_h_to_4h / dense_4h_to_h (hidden_act "gelu": exact erf)
    ln_f                  -> gpt_neox.final_layer_norm
Our linear layers have no biases; NeoX's have, so they are written as zeros (rather than
`attention_bias=false`, which only recent transformers read: the MLP biases exist anyway).
Blocks are sequential pre-LayerNorm (`use_parallel_residual=false`). Rotary positions cover
the whole head (`rotary_pct=1.0`, base 10000) in NeoX's own half-split layout (pairs
(i, i + hs/2), `rotate_half`), which is ours, so q and k rows need no permutation.
Dropout acts in training only: the export is an inference model, dropouts are 0.

Refused, with a one-line reason and nothing written: learned or sinusoidal absolute positions
(GPT-NeoX has none), a model field or weight this module does not know how to map, a
tokenizer the model's vocabulary cannot hold, a tokenizer file that changed since training.
Every export is then verified (unless --no-verify): transformers loads the written directory,
its tokenizer must give our ids on every probe task's prompts and answers, and its logits must
equal ours within LOGIT_ATOL on them; otherwise the export is refused too. Files are written
into a temporary directory next to DIR and renamed into place at the end.

Needs `transformers` and `safetensors` (`pip install 'scaling[hf]'`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from scaling.checkpoint import (
    CheckpointError, checkpoint_at, list_checkpoints, load_checkpoint, sha256_file)

EOT = "<|endoftext|>"
ROTARY_BASE = 10000.0  # scaling/model.py `_rotary_tables`
LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, which scaling/model.py uses
# Logits of the exported model may differ from ours by float rounding only (the two run the
# same operations in a different order); a mapping error shows as differences of order 1.
LOGIT_ATOL = 1e-4
PROVENANCE = "scaling_export.json"
# Fields of GPTConfig this module maps. A field added to the model later is refused until
# it is taught here: exported silently it could change what the model computes.
MAPPED_FIELDS = {"vocab_size", "n_layer", "d_model", "n_head", "block_size", "pos", "dropout",
                 "mlp_ratio", "causal", "prompt_len"}
# Provenance fields copied from the checkpoint's metadata (the results schema's columns).
META_FIELDS = ("run", "rung", "step", "tokens", "flops", "params", "nonembed_params", "seed",
               "data_hash", "val_loss", "tokenizer")
# Probe instances per task used to verify an export (tokenizer ids and logits).
VERIFY_PER_TASK = 2


class ExportError(RuntimeError):
    """A checkpoint that cannot be exported exactly, or a bad request (one-line message)."""


# ----------------------------------------------------------------------------- choosing


def select_checkpoints(run_dir, step: str | int | None = None,
                       all_steps: bool = False) -> list[tuple[int, Path]]:
    """(step, path) of the checkpoints to export: the last one, the one at `step` (N or
    stepN) or, with all_steps, every finished one."""
    run_dir = Path(run_dir)
    text = str(step)
    digits = text[4:] if text.startswith("step") else text
    if step is not None and not digits.isdigit():
        steps = ", ".join(str(s) for s, _ in list_checkpoints(run_dir)) if run_dir.is_dir() else ""
        raise ExportError(f"--step {text}: expected N or stepN (steps: {steps or 'none'})")
    try:
        last = checkpoint_at(run_dir, None if step is None else int(digits))
    except CheckpointError as exc:
        raise ExportError(str(exc)) from None
    return list_checkpoints(run_dir) if all_steps else [last]


# ----------------------------------------------------------------------------- the model


def check_mappable(model_config: dict):
    """The checkpoint's GPTConfig if GPT-NeoX can represent it exactly; else ExportError."""
    from scaling.model import GPTConfig

    if not model_config.get("causal", True):
        raise ExportError("the model is an MLM encoder (bidirectional attention): GPT-NeoX is a "
                          "causal language model, so it cannot be exported exactly")
    if model_config.get("prompt_len", 0):
        raise ExportError(f"the model carries a soft prompt of {model_config['prompt_len']} "
                          "vectors (scaling finetune --mode prompt), which GPT-NeoX has no place "
                          "for: export the source checkpoint and prompt-tune it with peft "
                          "(docs/hf_recipe.md)")
    unknown = sorted(set(model_config) - MAPPED_FIELDS)
    if unknown:
        raise ExportError(f"model field(s) {', '.join(unknown)} have no GPT-NeoX mapping in "
                          "scaling/export.py yet")
    cfg = GPTConfig(**model_config)
    if cfg.pos != "rotary":
        raise ExportError(f"the model uses {cfg.pos} absolute positions; GPT-NeoX has only "
                          "rotary positions, so it cannot be exported exactly (train with "
                          "--model.pos=rotary)")
    head = cfg.d_model // cfg.n_head
    if cfg.d_model % cfg.n_head or head % 2:
        raise ExportError(f"head size {cfg.d_model}/{cfg.n_head} is not an even integer: "
                          "rotary needs one")
    return cfg


def expected_keys(n_layer: int) -> set[str]:
    """Our state-dict keys (what `neox_weights` maps, every one of them)."""
    per_block = ["ln1.weight", "ln1.bias", "attn.qkv.weight", "attn.proj.weight",
                 "ln2.weight", "ln2.bias", "mlp.fc.weight", "mlp.proj.weight"]
    keys = {"wte.weight", "ln_f.weight", "ln_f.bias"}
    keys.update(f"blocks.{i}.{k}" for i in range(n_layer) for k in per_block)
    return keys


def neox_weights(state: dict[str, torch.Tensor], cfg) -> dict[str, torch.Tensor]:
    """Our state dict renamed and regrouped into GPTNeoXForCausalLM's (the head is tied)."""
    want = expected_keys(cfg.n_layer)
    have = set(state)
    if have != want:
        extra, missing = sorted(have - want), sorted(want - have)
        raise ExportError("weights do not match the GPT-NeoX mapping"
                          + (f"; unmapped: {', '.join(extra[:5])}" if extra else "")
                          + (f"; missing: {', '.join(missing[:5])}" if missing else ""))
    C, nh = cfg.d_model, cfg.n_head
    hs = C // nh

    def zeros(n: int) -> torch.Tensor:
        return torch.zeros(n, dtype=state["wte.weight"].dtype)

    out = {"gpt_neox.embed_in.weight": state["wte.weight"],
           "gpt_neox.final_layer_norm.weight": state["ln_f.weight"],
           "gpt_neox.final_layer_norm.bias": state["ln_f.bias"]}
    for i in range(cfg.n_layer):
        ours, theirs = f"blocks.{i}.", f"gpt_neox.layers.{i}."
        qkv = state[ours + "attn.qkv.weight"]  # (3C, C): rows [q heads; k heads; v heads]
        # -> rows [q_0; k_0; v_0; q_1; ...]: (3, nh, hs, C) -> (nh, 3, hs, C)
        qkv = qkv.view(3, nh, hs, C).transpose(0, 1).reshape(3 * C, C)
        hidden = state[ours + "mlp.fc.weight"].size(0)
        out.update({
            theirs + "input_layernorm.weight": state[ours + "ln1.weight"],
            theirs + "input_layernorm.bias": state[ours + "ln1.bias"],
            theirs + "post_attention_layernorm.weight": state[ours + "ln2.weight"],
            theirs + "post_attention_layernorm.bias": state[ours + "ln2.bias"],
            theirs + "attention.query_key_value.weight": qkv,
            theirs + "attention.query_key_value.bias": zeros(3 * C),
            theirs + "attention.dense.weight": state[ours + "attn.proj.weight"],
            theirs + "attention.dense.bias": zeros(C),
            theirs + "mlp.dense_h_to_4h.weight": state[ours + "mlp.fc.weight"],
            theirs + "mlp.dense_h_to_4h.bias": zeros(hidden),
            theirs + "mlp.dense_4h_to_h.weight": state[ours + "mlp.proj.weight"],
            theirs + "mlp.dense_4h_to_h.bias": zeros(C),
        })
    # safetensors wants contiguous tensors that own no shared storage
    return {k: v.detach().contiguous().clone() for k, v in out.items()}


def neox_config(cfg, eot_id: int, dtype: str = "float32") -> dict:
    """config.json of the GPTNeoXForCausalLM equal to our GPT `cfg`.

    The rotary settings are written both as transformers 5's `rope_parameters` and as the
    `rotary_pct` / `rotary_emb_base` keys older readers (transformers 4, vLLM) take; a
    reader that missed them would default to rotary_pct 0.25, a different model.
    """
    return {
        "architectures": ["GPTNeoXForCausalLM"],
        "model_type": "gpt_neox",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "intermediate_size": cfg.mlp_ratio * cfg.d_model,
        "hidden_act": "gelu",  # F.gelu's default: the exact (erf) form
        "max_position_embeddings": cfg.block_size,
        "layer_norm_eps": LAYER_NORM_EPS,
        "use_parallel_residual": False,  # x + attn(ln1(x)), then + mlp(ln2(.))
        "rotary_pct": 1.0,
        "rotary_emb_base": ROTARY_BASE,
        "rope_parameters": {"rope_type": "default", "rope_theta": ROTARY_BASE,
                            "partial_rotary_factor": 1.0},
        "attention_bias": True,  # zeros: see the module docstring
        "attention_dropout": 0.0,
        "hidden_dropout": 0.0,
        "tie_word_embeddings": True,
        "bos_token_id": eot_id,
        "eos_token_id": eot_id,
        "pad_token_id": eot_id,
        "initializer_range": 0.02,
        "use_cache": True,
        "dtype": dtype,
    }


# ----------------------------------------------------------------------------- tokenizer


def char_tokenizer_json(tok) -> str:
    """A `tokenizers` file with exactly CharTokenizer's ids.

    A BPE model with no merges over the single characters maps each character to its id
    (no pre-tokenizer: every character is its own token anyway); eot is an added special
    token. Characters outside the alphabet become "?", as the `scaling` lm-eval backend
    scores them (our own encoder refuses them). Ids the vocabulary pads with (never
    produced) are named <|unusedN|> and decode to U+FFFD, as ours do.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers

    vocab = {EOT: tok.eot_id}
    vocab.update({ch: i for i, ch in enumerate(tok.alphabet, start=1)})
    vocab.update({f"<|unused{i}|>": i for i in range(len(vocab), tok.vocab_size)})
    hf = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    hf.normalizer = normalizers.Replace(Regex(r"[^\n\x20-\x7e]"), "?")
    hf.decoder = decoders.Sequence([decoders.Replace(Regex(r"<\|unused\d+\|>"), "\ufffd"),
                                    decoders.Fuse()])
    hf.add_special_tokens([AddedToken(EOT, special=True, normalized=False)])
    return hf.to_str(pretty=True)


def bpe_tokenizer_json(path: Path) -> str:
    """The run's own `tokenizers` file, without what would add tokens our encoder does not.

    Ours encodes with add_special_tokens=False, transformers with True: a post-processor
    (e.g. one adding a BOS) is dropped so both give the same ids; padding and truncation
    settings are dropped too (the caller chooses them).
    """
    data = json.loads(Path(path).read_text())
    data.update(post_processor=None, padding=None, truncation=None)
    return json.dumps(data, ensure_ascii=False, indent=2)


def tokenizer_files(tok, block_size: int) -> dict[str, str]:
    """Every tokenizer file of the export, name -> text."""
    text = char_tokenizer_json(tok) if tok.name == "char" else bpe_tokenizer_json(tok.path)
    # No unk token: the char file maps unknown characters to "?", byte-level BPE has none.
    special = {"eos_token": EOT, "bos_token": EOT, "pad_token": EOT}
    config = {
        # the generic class: a model-specific one (GPTNeoXTokenizer) would rebuild its own
        # byte-level pipeline instead of reading tokenizer.json as it is
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,  # would turn "a ." into "a." when decoding
        "model_max_length": block_size,
    }
    if tok.name == "char":
        config.pop("add_prefix_space")
    return {"tokenizer.json": text,
            "tokenizer_config.json": json.dumps(config, indent=2) + "\n",
            "special_tokens_map.json": json.dumps(special, indent=2) + "\n"}


def _resolve_tokenizer(meta: dict, override: str | None):
    """Our tokenizer for a checkpoint: its recorded one (or `override`), checked against
    the sha256 the corpus manifest recorded when available."""
    from scaling.data.tokenizer import get_tokenizer

    name = override or meta.get("tokenizer", "char")
    if name != "char" and not Path(name).is_file():
        where = "" if override else " (recorded in the checkpoint's metadata)"
        raise ExportError(f"tokenizer file {name}{where} not found; pass --tokenizer PATH")
    try:
        tok = get_tokenizer(name)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    if name != "char":
        recorded = _recorded_tokenizer_sha(meta)
        if recorded and sha256_file(Path(name)) != recorded:
            raise ExportError(f"tokenizer file {name} differs from the one the corpus was "
                              "tokenized with (sha256 in its manifest)")
    return tok


def _recorded_tokenizer_sha(meta: dict) -> str | None:
    manifest = Path(meta.get("corpus_dir", "")) / "manifest.json"
    if not meta.get("corpus_dir") or not manifest.is_file():
        return None
    try:
        return json.loads(manifest.read_text()).get("tokenizer_sha256")
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- writing


def _need_transformers():
    try:
        import safetensors.torch  # noqa: F401
        import transformers
    except ImportError:
        raise ExportError("export needs transformers and safetensors: pip install "
                          "'scaling[hf]'") from None
    return transformers


def write_model_dir(out: Path, state: dict, cfg, tok) -> None:
    """Write every file of one exported checkpoint into the (new) directory `out`."""
    from safetensors.torch import save_file

    transformers = _need_transformers()
    if tok.vocab_size > cfg.vocab_size:
        raise ExportError(f"tokenizer has {tok.vocab_size} ids but the model only "
                          f"{cfg.vocab_size} embeddings")
    weights = neox_weights(state, cfg)
    dtypes = {str(v.dtype).removeprefix("torch.") for v in weights.values()}
    if len(dtypes) != 1:
        raise ExportError(f"mixed weight dtypes {sorted(dtypes)}")
    out.mkdir(parents=True)
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    (out / "model.safetensors").chmod(0o644)  # safetensors writes it private (0600)
    config = neox_config(cfg, tok.eot_id, dtypes.pop())
    config["transformers_version"] = transformers.__version__
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    generation = {"bos_token_id": tok.eot_id, "eos_token_id": tok.eot_id,
                  "pad_token_id": tok.eot_id, "transformers_version": transformers.__version__}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    for name, text in tokenizer_files(tok, cfg.block_size).items():
        (out / name).write_text(text)


def _provenance(meta: dict, path: Path, tok_name: str, verified: dict | None) -> dict:
    import transformers

    from scaling import __version__

    info = {k: meta[k] for k in META_FIELDS if meta.get(k) is not None}
    info.update(tokenizer=tok_name, checkpoint=str(Path(path).resolve()),
                checkpoint_sha256=meta.get("sha256"), scaling_version=__version__,
                transformers_version=transformers.__version__,
                verified=verified is not None)
    if verified:
        info.update(verified)
    return info


# ----------------------------------------------------------------------------- verifying


def probe_texts(per_task: int = VERIFY_PER_TASK) -> list[str]:
    """Prompt + gold answer (or gold option) of a few instances of every probe task, and
    two texts that exercise every character of the alphabet."""
    from scaling.tasks import GENERATE, get_tasks

    texts = []
    for task in get_tasks():
        for ex in dataclasses.replace(task, n=per_task).examples()[:per_task]:
            answer = ex.answer if task.kind == GENERATE else ex.choices[task.gold_index(ex)]
            texts.append(task.context(ex) + answer)
    printable = "".join(chr(c) for c in range(32, 127))
    texts += [printable + "\n" + printable[::-1], "the old dog\n\nsees a  red house.\n"]
    return texts


@contextlib.contextmanager
def _quiet_transformers():
    """No "Loading weights" progress bar while verifying (one per checkpoint with --all)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


@torch.inference_mode()
def verify(out: Path, model, tok) -> dict:
    """Load `out` with transformers and compare it with our model on probe texts.

    Raises ExportError if the tokenizer gives other ids or the logits differ by more than
    LOGIT_ATOL; returns {"max_abs_logit_diff", "verified_tokens"}.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _quiet_transformers():
        hf_tok = AutoTokenizer.from_pretrained(out)
        hf_model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    texts = probe_texts()
    rows = []
    for text in texts:
        # verbose=False: texts longer than the block are compared whole, then cut
        ours, theirs = tok.encode(text), hf_tok(text, verbose=False)["input_ids"]
        if ours != theirs:
            raise ExportError(f"exported tokenizer gives other ids than ours on {text!r}")
        rows.append(ours[: model.cfg.block_size])
    width = max(map(len, rows))
    # Right padding with eot: causal attention, so padding never changes a row's real
    # positions, and both models see the same padded inputs anyway.
    x = torch.full((len(rows), width), tok.eot_id, dtype=torch.long)
    for i, r in enumerate(rows):
        x[i, : len(r)] = torch.tensor(r)
    ours = model(x)[0].float()
    theirs = hf_model(input_ids=x).logits.float()
    diff = float((ours - theirs).abs().max())
    if not diff <= LOGIT_ATOL:  # also catches NaN
        raise ExportError(f"exported model's logits differ from ours by {diff:.3g} "
                          f"(> {LOGIT_ATOL}): the GPT-NeoX mapping does not hold")
    return {"max_abs_logit_diff": diff, "verified_tokens": int(sum(map(len, rows)))}


# ----------------------------------------------------------------------------- a run


def export_checkpoint(path: Path, out: Path, tokenizer: str | None = None,
                      check: bool = True) -> dict:
    """Export one checkpoint file into the new directory `out`; returns its provenance."""
    from scaling.model import GPT

    state, meta = load_checkpoint(path)
    if "model_config" not in state or "model" not in state:
        raise ExportError(f"{path}: not a model checkpoint (no model or model_config)")
    cfg = check_mappable(state["model_config"])
    tok = _resolve_tokenizer(meta, tokenizer)
    write_model_dir(out, state["model"], cfg, tok)
    verified = None
    if check:
        model = GPT(cfg)
        model.load_state_dict(state["model"])
        verified = verify(out, model.eval(), tok)
    info = _provenance(meta, path, tokenizer or meta.get("tokenizer", "char"), verified)
    (out / PROVENANCE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info


def _previous_export(dest: Path) -> dict | None:
    """The provenance of an earlier export at `dest`, None if nothing is there; refuses to
    touch a directory that is not one of ours."""
    if not dest.exists():
        return None
    info = dest / PROVENANCE
    if dest.is_dir() and info.is_file():
        try:
            return json.loads(info.read_text())
        except ValueError:
            pass
    if dest.is_dir() and not any(dest.iterdir()):
        return {}
    raise ExportError(f"{dest} exists and is not a `scaling export` directory; choose "
                      "another --out")


def export_run(run_dir, out, step: str | int | None = None, all_steps: bool = False,
               tokenizer: str | None = None, check: bool = True, force: bool = False,
               log=print) -> list[Path]:
    """Export checkpoints of `run_dir`: the last (default) or `step` into `out` itself, or
    with all_steps every checkpoint into `out/stepN`. Returns the directories written.

    A destination that already holds the export of the same checkpoint (same sha256) is
    skipped unless `force`. Everything is written and verified in a temporary directory
    next to `out` first, and moved into place only when every checkpoint succeeded: a
    refusal leaves `out` as it was.
    """
    out = Path(out)
    chosen = select_checkpoints(run_dir, step, all_steps)
    _need_transformers()
    if all_steps and (out / PROVENANCE).is_file():
        raise ExportError(f"{out} holds the export of one checkpoint; --all writes a folder "
                          "of stepN exports: choose another --out")
    plan = []  # (step, checkpoint, destination)
    for s, path in chosen:
        dest = out / f"step{s}" if all_steps else out
        previous = _previous_export(dest)
        if (not force and previous
                and previous.get("checkpoint_sha256") == _sha_of(path)):
            log(f"step {s}: {dest} is already this checkpoint's export (skipped)")
            continue
        plan.append((s, path, dest))
    if not plan:
        return []
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    try:
        for i, (s, path, dest) in enumerate(plan):
            start = time.perf_counter()
            info = export_checkpoint(path, staging / str(i), tokenizer, check)
            note = (f"max |logit diff| {info['max_abs_logit_diff']:.2g}" if check
                    else "not verified")
            log(f"step {s}: {dest} ({note}, {time.perf_counter() - start:.1f} s)")
        for i, (_, _, dest) in enumerate(plan):  # all succeeded: move them into place
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists():
                dest.rename(staging / f"old-{i}")
            (staging / str(i)).rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [dest for _, _, dest in plan]


def _sha_of(path: Path) -> str | None:
    """The sha256 recorded in a checkpoint's metadata (hashing is for loading)."""
    try:
        return json.loads(Path(path).with_suffix(".json").read_text()).get("sha256")
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- CLI


DESCRIPTION = """\
Write a checkpoint as a transformers GPT-NeoX directory, Pythia's format (config.json,
model.safetensors, tokenizer files, generation_config.json), that AutoModelForCausalLM,
pipeline() and lm-eval's hf backend load offline with none of our code. Each export is
loaded back with transformers and checked against our model (same token ids, logits within
1e-4) before it is kept."""

EPILOG = """\
examples:
  scaling export runs/default/s3 --out hf/s3                # last checkpoint -> hf/s3
  scaling export runs/default/s3 --step 512 --out hf/s3-512
  scaling export runs/default/s3 --all --out hf/s3-all      # hf/s3-all/step0, step1, ...

then, with no code of ours (offline):
  python -c "from transformers import pipeline; print(pipeline('text-generation', \\
      model='hf/s3')('\\nA 12+34=', do_sample=False, max_new_tokens=4))"
  scaling lm-eval export tasks/ --block-size 128           # the probe tasks, once
  lm-eval run --model hf --model_args pretrained=hf/s3-all/step512,dtype=float32 \\
      --device cpu --include_path tasks/ --tasks scaling_probes

Only rotary-position models export (GPT-NeoX has no absolute positions); any other model,
or an export whose logits differ from ours by more than 1e-4, is refused with the reason and
nothing is written.
"""


def build_parser() -> argparse.ArgumentParser:
    """Argument parser for `scaling export`."""
    p = argparse.ArgumentParser(
        prog="scaling export", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="run directory (holds checkpoints/)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--step", help="export the checkpoint at this step (N or stepN; "
                                      "default: the last checkpoint)")
    which.add_argument("--all", action="store_true",
                       help="export every checkpoint, each into OUT/stepN (Pythia's names)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--tokenizer", help="tokenizer file to use instead of the one recorded in "
                                       "the checkpoint (a run moved from another machine)")
    p.add_argument("--force", action="store_true",
                   help="re-export checkpoints whose export is already in OUT")
    p.add_argument("--no-verify", action="store_true",
                   help="skip loading the export with transformers and comparing logits")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; one-line `error: ...` on stderr and exit code 2 on a refusal."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        written = export_run(args.run_dir, args.out, step=args.step, all_steps=args.all,
                             tokenizer=args.tokenizer, check=not args.no_verify,
                             force=args.force)
    except (ExportError, CheckpointError, OSError) as exc:  # OSError: e.g. --out not writable
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {len(written)} checkpoint(s) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["ExportError", "check_mappable", "export_checkpoint", "export_run", "neox_config",
           "neox_weights", "select_checkpoints", "tokenizer_files", "verify"]
