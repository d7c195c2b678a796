"""One training process per run directory.

Two processes training the same run directory (the same command started twice, or a run
left going by a sweep runner that was killed, and started again by the next one) would
both append to its results and overwrite each other's checkpoints. The training process
holds an exclusive lock on `RUN_DIR/.lock` while it runs; a second one stops with a
one-line error before it touches anything. The operating system drops the lock when the
process ends, however it ends, so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

from scaling.config import ConfigError

LOCK_FILE = ".lock"


class RunLockedError(ConfigError):
    """The run directory is being trained by another process."""


def hold_run_lock(run_dir: Path) -> IO | None:
    """Lock `run_dir` for this process (the lock lasts while the returned file is open);
    raise RunLockedError naming the process that holds it. None where there is no `fcntl`
    (Windows): no lock, as before."""
    try:
        import fcntl
    except ImportError:
        return None
    handle = open(Path(run_dir) / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        pid = handle.read().strip() or "?"
        handle.close()
        raise RunLockedError(f"{run_dir} is being trained by another process (pid {pid}); "
                             "wait for it to finish, or stop it and run again") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle
