"""Atomic file writes: the new content goes to a temp file beside the target, then one
rename replaces the target. A crash leaves the old file or the new one, never half of one,
and a reader never sees a partial file (os.replace is atomic on POSIX file systems)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO


def _temp(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def write_bytes(path: str | os.PathLike, write: Callable[[IO[bytes]], object],
                fsync: bool = False) -> None:
    """Replace `path` with what `write(f)` writes to a binary file; `fsync` forces it to
    disk before the rename (checkpoints: the data must survive a power loss, not only a
    killed process)."""
    path = Path(path)
    tmp = _temp(path)
    with open(tmp, "wb") as f:
        write(f)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Replace `path` with `text`."""
    path = Path(path)
    tmp = _temp(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: str | os.PathLike, data) -> None:
    """Replace `path` with `data` as indented, key-sorted JSON."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True))
