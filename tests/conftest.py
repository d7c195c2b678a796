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


@pytest.fixture
def run_report(tmp_path):
    """`run_report(df, name=..., extra=[...])`: `scaling report` on a results frame.

    Writes `df` to `tmp_path/name`, reports into `tmp_path/out` with 30 bootstrap draws (plus
    `extra` arguments) and returns `(exit code, out dir)`.
    """
    from analysis.report import main

    def run(df, name="results.csv", extra=()):
        src = tmp_path / name
        df.to_csv(src, index=False)
        out = tmp_path / "out"
        return main(["--results", str(src), "--out", str(out), "--bootstrap", "30", *extra]), out

    return run
