"""Progress bars that suit where they go: a live bar on a terminal, plain lines in a log.

tqdm redraws its bar with a carriage return several times a second. On a terminal that is
a live bar; in a sweep's run log (`runs/<sweep>/<run>.log`) it was one 270 KB line of
redraws. When stderr is not a terminal, or the sweep runner says so through
`SCALING_PROGRESS=lines`, the bar instead writes one ordinary line every
`LOG_INTERVAL_S` seconds (and at the end). `SCALING_PROGRESS=live` keeps the live bar even
through a pipe: the sweep runner sets it when it echoes a single run to a terminal.
"""

from __future__ import annotations

import os
import sys

from tqdm import tqdm

ENV = "SCALING_PROGRESS"  # "live" | "lines"; unset: live on a terminal, lines elsewhere
LOG_INTERVAL_S = 30.0
LOG_WIDTH = 100


class _OneLinePerRefresh:
    """A stream wrapper that turns tqdm's in-place redraws into newline-ended lines."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        """Write each redraw as its own line; drop tqdm's blank padding and empty writes."""
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        """Flush the wrapped stream."""
        self.stream.flush()


def live(stream=None) -> bool:
    """Whether bars on `stream` (default stderr) redraw in place."""
    mode = os.environ.get(ENV, "")
    if mode in ("live", "lines"):
        return mode == "live"
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def progress_bar(*, file=None, **kwargs) -> tqdm:
    """`tqdm(**kwargs)` on `file` (default stderr), as plain periodic lines unless `live`."""
    file = file or sys.stderr
    if live(file):
        return tqdm(file=file, dynamic_ncols=True, **kwargs)
    return tqdm(file=_OneLinePerRefresh(file), mininterval=LOG_INTERVAL_S, ncols=LOG_WIDTH,
                ascii=True, **kwargs)
