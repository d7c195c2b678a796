"""Progress bars: live redraws on a terminal, plain lines in logs (scaling/progress.py)."""

import io

import pytest

from scaling import progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _run(stream, steps=500):
    with progress.progress_bar(file=stream, total=steps, desc="train s1", unit="step") as bar:
        for i in range(steps):
            bar.set_postfix(loss=f"{1 / (i + 1):.3f}", refresh=False)
            bar.update(1)
    return stream.getvalue()


def test_a_log_gets_a_few_plain_lines(monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)
    text = _run(io.StringIO())
    lines = text.splitlines()
    assert "\r" not in text and text.endswith("\n")
    # the start and the end (updates within LOG_INTERVAL_S of each other write nothing)
    assert 2 <= len(lines) <= 3, lines
    assert lines[0].startswith("train s1:   0%") and "500/500" in lines[-1]
    assert "loss=0.002" in lines[-1] and all(len(x) <= progress.LOG_WIDTH for x in lines)


@pytest.mark.parametrize("mode, stream, redraws", [
    ("", _Terminal, True),            # a terminal: the live bar
    ("lines", _Terminal, False),      # the sweep runner asks for lines
    ("live", io.StringIO, True),      # ... or for the live bar through its pipe
])
def test_the_environment_or_the_stream_decide(monkeypatch, mode, stream, redraws):
    monkeypatch.setenv(progress.ENV, mode)
    assert progress.live(stream()) is redraws
    assert ("\r" in _run(stream())) is redraws
