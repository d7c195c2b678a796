"""File locks that keep concurrent processes from losing each other's work (POSIX flock).

- One training process per run directory (`run_lock`). Two processes training the
  same run directory (the same command started twice, or a run left going by a sweep
  runner that was killed, and started again by the next one) would overwrite each other's
  checkpoints. The training process holds an exclusive lock on `RUN_DIR/.lock` while it
  runs; a second one stops with a one-line error before it touches anything.
- One writer of a results file at a time (`exclusive`). Appending rows reads the file,
  adds the rows and replaces it; a training process (its validation rows) and a
  `scaling eval` of the same run (its probe rows) doing that at once would each write a
  file without the other's rows.

The operating system drops a lock when its process ends, however it ends, so a killed
process never leaves a stale lock behind. Where there is no `fcntl` (Windows), or the file
system refuses locks, nothing is locked, as before.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_FILE = ".lock"


class RunLockedError(ValueError):
    """The run directory is being trained by another process (a one-line message)."""


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Hold `run_dir` for this process inside the block; raise RunLockedError naming the
    process that holds it."""
    if fcntl is None:
        yield
        return
    with open(Path(run_dir) / LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid = handle.read().strip() or "?"
            raise RunLockedError(f"{run_dir} is being trained by another process (pid {pid}); "
                                 "wait for it to finish, or stop it and run again") from None
        except OSError as exc:  # a file system without locks: train as before
            print(f"warning: cannot lock {run_dir} ({exc.strerror}); nothing stops a second "
                  "process from training it at the same time", file=sys.stderr)
            yield
            return
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield


@contextlib.contextmanager
def exclusive(lock_path: Path):
    """Hold an exclusive lock on `lock_path` (created if missing) inside the block, waiting
    for any other process that holds it."""
    if fcntl is None:
        yield
        return
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:  # a file system without locks: one writer is the common case
            pass
        yield
