"""Tokenizers: a fixed character alphabet (the default) and a wrapper for HuggingFace BPE files.

`CharTokenizer` ids: 0 = end-of-text, 1 = "\\n", 2..96 = printable ASCII 32..126 (in order).
`vocab_size` is padded to 128 so embedding tables are a round size; ids 97..127 are never
produced by `encode`.

`BPETokenizer` wraps a `tokenizers` JSON file that must contain the token "<|endoftext|>".
To train one on your own text (byte-level, so every string round-trips exactly)::

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=4096,                       # must stay <= 65535 (uint16 shards)
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train(["my_text.txt"], trainer)         # or tok.train_from_iterator(lines, trainer)
    tok.save("my_bpe.json")

then use `tokenizer: my_bpe.json` in the corpus spec.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

EOT_TOKEN = "<|endoftext|>"
# Shards store tokens as uint16, so no tokenizer may have more ids than this.
MAX_UINT16_VOCAB = 65535

_CHAR_ALPHABET = "\n" + "".join(chr(c) for c in range(32, 127))
_INVALID = 255  # marker in the byte -> id lookup table for bytes outside the alphabet
_REPLACEMENT = "\ufffd"  # decode() output for padding ids: never equals an ASCII gold answer


def check_uint16_vocab(vocab_size: int, what: str = "tokenizer") -> None:
    """Raise ValueError if `vocab_size` ids cannot be stored in a uint16 shard."""
    if vocab_size > MAX_UINT16_VOCAB:
        raise ValueError(
            f"{what} has vocab_size {vocab_size} > {MAX_UINT16_VOCAB}: uint16 shards cannot hold it"
        )


class CharTokenizer:
    """Fixed character-level tokenizer: eot, newline and printable ASCII; vocab padded to 128."""

    name = "char"
    eot_id = 0
    vocab_size = 128
    alphabet = _CHAR_ALPHABET

    def __init__(self) -> None:
        # Byte -> id lookup table; bytes outside the alphabet map to _INVALID so a whole
        # corpus can be encoded with one numpy gather instead of a Python loop.
        self._enc = np.full(256, _INVALID, dtype=np.uint8)
        for i, ch in enumerate(_CHAR_ALPHABET, start=1):
            self._enc[ord(ch)] = i
        # Id -> byte table for the fast decode path (eot and padding handled separately).
        self._dec = np.zeros(self.vocab_size, dtype=np.uint8)
        for i, ch in enumerate(_CHAR_ALPHABET, start=1):
            self._dec[i] = ord(ch)
        self._n_used = len(_CHAR_ALPHABET) + 1  # ids >= this are padding

    def _bad_char_error(self, text: str) -> ValueError:
        for pos, ch in enumerate(text):
            if ch not in _CHAR_ALPHABET:
                return ValueError(
                    f"character {ch!r} (U+{ord(ch):04X}) at position {pos} is not in the char "
                    "tokenizer's alphabet (newline + printable ASCII); use a BPE tokenizer"
                )
        return ValueError("text is not encodable by the char tokenizer")  # unreachable

    def encode_array(self, text: str) -> np.ndarray:
        """Encode `text` to a uint16 numpy array (fast path used for whole corpora)."""
        try:
            raw = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
        except UnicodeEncodeError:
            raise self._bad_char_error(text) from None
        ids = self._enc[raw]
        if ids.size and (ids == _INVALID).any():
            raise self._bad_char_error(text)
        return ids.astype(np.uint16)

    def encode(self, text: str) -> list[int]:
        """Encode `text` to ids; ValueError names the first character outside the alphabet."""
        return self.encode_array(text).tolist()

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` of each text, in one numpy pass over all of them (an evaluation
        tokenizes tens of thousands of short prompts: one call each took a measurable share
        of it; measured: docs/LOG.md)."""
        try:
            ids = self.encode_array("".join(texts)).tolist()
        except ValueError:
            for text in texts:  # the error names the text and position
                self.encode(text)
            raise
        out, start = [], 0
        for text in texts:  # ASCII: one id per character
            out.append(ids[start:start + len(text)])
            start += len(text)
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Decode ids to text; eot decodes to "" and unused padding ids to U+FFFD."""
        arr = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
            bad = int(arr[(arr < 0) | (arr >= self.vocab_size)][0])
            raise ValueError(
                f"token id {bad} is outside the char vocabulary [0, {self.vocab_size})")
        if arr.size and arr.max() >= self._n_used:
            # Rare path (an untrained model sampling padding ids): keep their positions visible.
            return "".join(
                "" if i == 0 else (_REPLACEMENT if i >= self._n_used else chr(self._dec[i]))
                for i in arr.tolist()
            )
        return self._dec[arr[arr != self.eot_id]].tobytes().decode("ascii")


class BPETokenizer:
    """A HuggingFace `tokenizers` JSON file; eot is its "<|endoftext|>" token."""

    def __init__(self, path: str | Path) -> None:
        try:
            from tokenizers import Tokenizer  # lazy: only BPE users need the package
        except ImportError:
            raise ValueError(
                "BPE tokenizers need the 'tokenizers' package: pip install 'scaling[bpe]'"
            ) from None
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"tokenizer file {path} does not exist")
        self.path = path
        self.name = str(path)
        self._tok = Tokenizer.from_file(str(path))
        eot = self._tok.token_to_id(EOT_TOKEN)
        if eot is None:
            raise ValueError(f"tokenizer file {path} has no {EOT_TOKEN!r} token")
        self.eot_id = int(eot)
        self.vocab_size = int(self._tok.get_vocab_size(with_added_tokens=True))

    def encode_array(self, text: str) -> np.ndarray:
        """Encode `text` to a numpy array of ids (int64; shards convert to uint16)."""
        return np.asarray(self.encode(text), dtype=np.int64)

    def encode(self, text: str) -> list[int]:
        """Encode `text` to ids (no special tokens added)."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` of each text, batched by `tokenizers`."""
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        """Decode ids to text; eot (a special token) decodes to ""."""
        ids = [int(i) for i in (ids.tolist() if isinstance(ids, np.ndarray) else ids)]
        return self._tok.decode([i for i in ids if i != self.eot_id], skip_special_tokens=False)


def get_tokenizer(name: str) -> CharTokenizer | BPETokenizer:
    """Return the tokenizer named `name`: "char", or a path to a `tokenizers` .json file."""
    if name == "char":
        return CharTokenizer()
    if str(name).endswith(".json"):
        return BPETokenizer(name)
    raise ValueError(
        f"unknown tokenizer {name!r}: use 'char' or a path to a HuggingFace tokenizers .json file"
    )
