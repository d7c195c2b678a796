"""File locks: held while in use, and a file system without locks does not stop the work."""

import errno

import pytest

from scaling import locks


def test_a_held_run_is_refused_and_free_again_after(tmp_path):
    with locks.run_lock(tmp_path):
        with pytest.raises(locks.RunLockedError, match="being trained by another process"):
            with locks.run_lock(tmp_path):
                pass
    with locks.run_lock(tmp_path):
        pass


@pytest.mark.skipif(locks.fcntl is None, reason="no fcntl")
def test_without_file_locks_work_goes_on_unlocked(tmp_path, monkeypatch, capsys):
    def refuse(handle, how):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(locks.fcntl, "flock", refuse)
    with locks.run_lock(tmp_path):
        pass
    assert "cannot lock" in capsys.readouterr().err
    with locks.exclusive(tmp_path / ".results.lock"):
        pass
