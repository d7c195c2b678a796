"""Build a corpus once into uint16 token shards with a manifest, verify them, batch them.

Layout of a built corpus, `root/<spec_hash[:12]>/`:
- `train.bin`, `val.bin`: flat np.uint16 token streams;
- `manifest.json`: the spec, tokenizer, vocab size, token counts, sha256 of each .bin,
  spec hash, format version.

Every rung reads the same train.bin through `get_batch`, which consumes the stream
sequentially: the global batch at `step` starts at token `step * batch_size * block_size`,
so two steps of batch 4 see exactly the tokens of one step of batch 8, in the same order.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .corpus import DATA_VERSION, SYNTHETIC, CorpusSpec, generate_text, source_files
from .tokenizer import check_uint16_vocab, get_tokenizer

if TYPE_CHECKING:
    import torch

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "val")
DTYPE = np.uint16


class ShardError(RuntimeError):
    """A shard or manifest that is missing, truncated, or does not match its recorded hash."""


def spec_hash(spec: CorpusSpec) -> str:
    """sha256 hex of the spec's canonical JSON (sorted keys, normalised types, data version)."""
    payload = {"data_version": DATA_VERSION, **spec.to_dict()}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 hex of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _source_fingerprint(spec: CorpusSpec) -> str | None:
    # The spec names a user source by path only; hashing its files lets a reuse notice that
    # the files changed under the same spec (which would silently change the data).
    if spec.source == SYNTHETIC:
        return None
    h = hashlib.sha256()
    for f in source_files(spec.source):
        h.update(str(f).encode("utf-8") + b"\0" + file_sha256(f).encode("ascii"))
    return h.hexdigest()


def _synthetic_tokens(spec: CorpusSpec, tok, split: str, n: int) -> np.ndarray:
    if tok.name == "char":
        return tok.encode_array(generate_text(spec, split, n))
    # Other tokenizers: characters per token is unknown, so ask for more text until enough
    # tokens come out. The text stream only grows, so the result does not depend on guesses.
    # The text is cut at its last line break so no word is split by the cut (a split word
    # would tokenize differently from the same word in a longer text).
    chars = n * 2
    while True:
        text = generate_text(spec, split, chars)
        ids = tok.encode_array(text[: text.rindex("\n")])
        if len(ids) >= n:
            return ids[:n]
        chars *= 2


def _user_tokens(spec: CorpusSpec, tok) -> dict[str, np.ndarray]:
    files = source_files(spec.source)
    if spec.source.endswith(".bin"):
        ids = np.fromfile(files[0], dtype=DTYPE)
        if ids.size and int(ids.max()) >= tok.vocab_size:
            raise ValueError(f"{files[0]} has token id {int(ids.max())} >= vocab_size "
                             f"{tok.vocab_size} of tokenizer {spec.tokenizer!r}")
    else:
        pieces = []
        for f in files:  # one eot after each file: documents do not run into each other
            pieces.append(np.asarray(tok.encode_array(f.read_text(encoding="utf-8")), np.int64))
            pieces.append(np.array([tok.eot_id], dtype=np.int64))
        ids = np.concatenate(pieces)
    need = spec.train_tokens + spec.val_tokens
    if len(ids) < need:
        raise ValueError(f"corpus source {spec.source} has {len(ids)} tokens; the spec needs "
                         f"{need} ({spec.train_tokens} train + {spec.val_tokens} val)")
    # val = the last slice, train = the first train_tokens of what precedes it.
    return {"train": ids[: spec.train_tokens], "val": ids[len(ids) - spec.val_tokens :]}


def _read_manifest(corpus_dir: Path) -> dict:
    path = corpus_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ShardError(f"{path}: manifest missing") from None
    except (OSError, ValueError) as e:
        raise ShardError(f"{path}: unreadable manifest ({e})") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ShardError(f"{path}: format_version {manifest.get('format_version')!r}, "
                         f"expected {FORMAT_VERSION}")
    return manifest


def _check_sizes(corpus_dir: Path, manifest: dict) -> None:
    for split in SPLITS:
        path = corpus_dir / manifest["files"][split]
        want = manifest["tokens"][split] * np.dtype(DTYPE).itemsize
        if not path.is_file():
            raise ShardError(f"{path}: shard missing")
        if path.stat().st_size != want:
            raise ShardError(f"{path}: {path.stat().st_size} bytes, manifest says {want} "
                             "(truncated or wrong file)")


def _existing(corpus_dir: Path, spec: CorpusSpec, digest: str) -> Path:
    manifest = _read_manifest(corpus_dir)
    if manifest.get("spec_hash") != digest:
        raise ShardError(f"{corpus_dir / MANIFEST}: spec_hash does not match the requested spec")
    _check_sizes(corpus_dir, manifest)
    if manifest.get("source_fingerprint") != _source_fingerprint(spec):
        raise ShardError(f"{corpus_dir}: source files of {spec.source} changed since this corpus "
                         "was built; delete the directory to rebuild")
    return corpus_dir


def build_corpus(spec: CorpusSpec, root: Path) -> Path:
    """Build `spec` into `root/<spec_hash12>/` once (reused if present); return that dir.

    Builds in a temporary sibling directory and renames it into place, so a crash never
    leaves a half-written corpus and concurrent builders of the same spec agree on one.
    """
    spec.validate()
    root = Path(root)
    digest = spec_hash(spec)
    final = root / digest[:12]
    if final.exists():
        return _existing(final, spec, digest)
    tok = get_tokenizer(spec.tokenizer)
    check_uint16_vocab(tok.vocab_size, f"tokenizer {spec.tokenizer!r}")
    t0 = time.perf_counter()
    if spec.source == SYNTHETIC:
        tokens = {s: _synthetic_tokens(spec, tok, s, n)
                  for s, n in (("train", spec.train_tokens), ("val", spec.val_tokens))}
    else:
        tokens = _user_tokens(spec, tok)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{digest[:12]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        manifest = {
            "format_version": FORMAT_VERSION,
            "data_version": DATA_VERSION,
            "spec_hash": digest,
            "spec": spec.to_dict(),
            "tokenizer": tok.name,
            "tokenizer_sha256": None if tok.name == "char" else file_sha256(Path(spec.tokenizer)),
            "vocab_size": tok.vocab_size,
            "eot_id": tok.eot_id,
            "dtype": "uint16",
            "files": {s: f"{s}.bin" for s in SPLITS},
            "tokens": {},
            "sha256": {},
            "source_fingerprint": _source_fingerprint(spec),
        }
        for split in SPLITS:
            path = tmp / f"{split}.bin"
            np.asarray(tokens[split], dtype=DTYPE).tofile(path)
            manifest["tokens"][split] = len(tokens[split])
            manifest["sha256"][split] = file_sha256(path)
        manifest["build_seconds"] = round(time.perf_counter() - t0, 3)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise
            # Another process built the same spec first: use theirs.
            shutil.rmtree(tmp, ignore_errors=True)
            return _existing(final, spec, digest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def read_manifest(corpus_dir: Path | str) -> dict:
    """The manifest of a built corpus; ShardError if missing or unreadable."""
    return _read_manifest(Path(corpus_dir))


def open_shard(corpus_dir: Path | str, split: str, verify: bool = True) -> np.memmap:
    """Memory-map a split's tokens; with `verify`, check its sha256 against the manifest.

    Raises ShardError (one line naming the file) if the shard is missing, truncated, or
    its hash does not match.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    corpus_dir = Path(corpus_dir)
    manifest = _read_manifest(corpus_dir)
    path = corpus_dir / manifest["files"][split]
    want = manifest["tokens"][split] * np.dtype(DTYPE).itemsize
    if not path.is_file():
        raise ShardError(f"{path}: shard missing")
    size = path.stat().st_size
    if size != want:
        raise ShardError(f"{path}: {size} bytes, manifest says {want} (truncated or wrong file)")
    if verify and file_sha256(path) != manifest["sha256"][split]:
        raise ShardError(f"{path}: sha256 does not match the manifest (corrupted shard)")
    return np.memmap(path, dtype=DTYPE, mode="r")


def data_hash(corpus_dir: Path | str) -> str:
    """The train shard's sha256 (from the manifest): the identity every run records."""
    return _read_manifest(Path(corpus_dir))["sha256"]["train"]


def get_batch(
    shard: np.ndarray,
    step: int,
    batch_size: int,
    block_size: int,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) LongTensors for this rank's rows of the global batch at `step`.

    The global batch covers tokens from offset `step * batch_size * block_size`; row r is
    tokens [off + r*block_size, off + (r+1)*block_size + 1) (wrapping modulo the shard
    length), x = row[:-1], y = row[1:]. Rank `rank` takes rows r with r % world_size == rank.
    """
    import torch  # imported here so that building data does not pay torch's import time

    n = len(shard)
    if batch_size <= 0 or block_size <= 0:
        raise ValueError(f"batch_size and block_size must be > 0, got {batch_size}, {block_size}")
    if not 0 <= rank < world_size or batch_size % world_size:
        raise ValueError(f"rank {rank} / world_size {world_size} must split batch_size "
                         f"{batch_size} into equal parts")
    if n < block_size + 1:
        raise ValueError(f"shard has {n} tokens, fewer than block_size + 1 = {block_size + 1}")
    off = (step * batch_size * block_size) % n  # Python ints: no overflow at large steps
    rows = np.arange(rank, batch_size, world_size, dtype=np.int64)
    starts = (off + rows * block_size) % n
    idx = (starts[:, None] + np.arange(block_size + 1, dtype=np.int64)) % n
    buf = torch.from_numpy(np.asarray(shard[idx], dtype=np.int64))
    return buf[:, :-1].contiguous(), buf[:, 1:].contiguous()

