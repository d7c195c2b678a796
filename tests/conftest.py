"""Fixtures shared by several test modules."""

import shutil

import pytest


@pytest.fixture(scope="session")
def _briefly_trained_run(tmp_path_factory):
    """A few dozen training steps of s1 on the corpus, trained once per test session."""
    from scaling.config import load_config
    from scaling.train import train

    root = tmp_path_factory.mktemp("trained")
    cfg = load_config(None, ["--model.size=s1", "--train.tokens=160000",
                             f"--run.dir={root / 'run'}", f"--run.data_root={root / 'data'}",
                             "--data.train_tokens=170000", "--data.val_tokens=8000",
                             "--train.val_tokens=2048", "--run.threads=1"])
    return train(cfg)


@pytest.fixture(scope="module")
def briefly_trained_run(_briefly_trained_run, tmp_path_factory):
    """A private copy of that run directory per test module (tests append results to it)."""
    copy = tmp_path_factory.mktemp("trained_copy") / "run"
    shutil.copytree(_briefly_trained_run, copy)
    return copy
