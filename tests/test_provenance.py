"""Which code trained a run: the fingerprint, and the warning for runs of other code."""

import json

from helpers import run_scaling, sweep_file
from scaling.provenance import code_fingerprint, fingerprint_of, stale_code_message

SRC = '''"""Module docstring."""


def f(x):
    """Doc."""
    return x * 2  # a comment
'''


def test_fingerprint_ignores_comments_and_docstrings_but_not_code():
    base = fingerprint_of([SRC])
    assert fingerprint_of([SRC.replace("a comment", "another").replace("Doc.", "New.")]) == base
    assert fingerprint_of([SRC.replace('"""Module docstring."""\n', "")]) == base
    assert fingerprint_of([SRC.replace("x * 2", "x * 3")]) != base
    # a compiled kernel's source counts too (scaling/kernels/*.cpp)
    assert fingerprint_of([SRC], (b"int f() { return 1; }",)) != base
    assert len(code_fingerprint()) == 12


def test_a_finished_run_of_other_code_is_kept_with_a_warning(tmp_path):
    path = sweep_file(tmp_path, {"model.size": {"values": ["s1"]},
                                 "train.tokens": {"value": 5000}})
    assert run_scaling("sweep", str(path)).returncode == 0
    info_path = next((tmp_path / "runs" / "s").glob("*/run.json"))
    info = json.loads(info_path.read_text())
    assert info["code"] == code_fingerprint()
    assert stale_code_message(info_path.parent, info) is None
    info["code"] = "000000000000"  # as if an older version of the code had trained it
    info_path.write_text(json.dumps(info))
    again = run_scaling("sweep", str(path))
    assert again.returncode == 0
    assert "was trained by other code (fingerprint 000000000000" in again.stderr
    assert json.loads(info_path.read_text())["code"] == "000000000000"  # kept, not retrained
