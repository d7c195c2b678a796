"""Sweeps: every YAML is a well-formed wandb sweep; the local runner is idempotent."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers import run_scaling, sweep_file
from scaling.results import KEY, load
from scaling.sweep import SweepError, command_line, load_sweep, run_args

REPO = Path(__file__).resolve().parent.parent
SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))

@pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
def test_every_sweep_yaml_is_a_wellformed_wandb_sweep(path):
    doc = yaml.safe_load(path.read_text())
    assert doc["method"] in ("grid", "random", "bayes")
    program = doc["command"][3]  # training, or fine-tuning (sweeps/finetune.yaml)
    assert program in ("scaling.train", "scaling.finetune") and program == doc["program"]
    assert doc["command"][:4] == ["${env}", "${interpreter}", "-m", program]
    assert "${args}" in doc["command"]
    for spec in doc["parameters"].values():
        assert set(spec) & {"value", "values", "distribution", "parameters"}
    sweep = load_sweep(path)  # every run's arguments parse in the program that runs it
    assert sweep.runs
    cmd = command_line(sweep, sweep.runs[0])
    assert cmd[:3] == [sys.executable, "-m", program]
    assert all(a.startswith("--") and "=" in a for a in cmd[3:])


def test_args_are_what_a_wandb_agent_passes(tmp_path):
    path = sweep_file(tmp_path, {"model.size": {"values": ["s1"]},
                                 "run.evaluate": {"value": False},
                                 "data": {"parameters": {"seed": {"value": 3}}}})
    args = run_args(load_sweep(path).runs[0])
    assert "--run.evaluate=False" in args and "--data={'seed': 3}" in args


@pytest.mark.parametrize("change, message", [
    ({"method": "bayes"}, "needs a W&B server"),
    ({"method": "hyperband"}, "unknown method"),
    ({"method": None}, "no method"),
    ({"parameters": {"model.sise": {"value": "s1"}}}, "did you mean 'model.size'"),
    ({"parameters": {"model.size": {"values": ["s1"]}}, "method": "random"}, "run_cap"),
    ({"command": ["${interpreter}", "${whatever}"]}, "unknown command macro"),
    ({"program": None}, "no program"),  # it would run `python ''`
])
def test_bad_sweep_files_are_one_line_errors(tmp_path, change, message):
    doc = {"program": "scaling.train", "method": "grid",
           "parameters": {"model.size": {"values": ["s1"]}}}
    doc.update(change)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SweepError, match=message.replace("(", r"\(")):
        load_sweep(path)
    proc = run_scaling("sweep", str(path))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_random_sweep_is_seeded(tmp_path):
    path = sweep_file(tmp_path, {"train.lr": {"distribution": "log_uniform_values",
                                              "min": 1e-4, "max": 1e-2}}, method="random",
                      run_cap=3)
    a, b, c = load_sweep(path, 0), load_sweep(path, 0), load_sweep(path, 1)
    assert a.runs == b.runs and a.runs != c.runs and len(a.runs) == 3
    assert all(1e-4 <= r["train.lr"] <= 1e-2 for r in a.runs)


def test_tiny_sweep_end_to_end(tmp_path):
    t0 = time.time()
    proc = run_scaling("sweep", str(REPO / "sweeps" / "tiny.yaml"), cwd=tmp_path,
                       env=dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.time() - t0 < 120
    df = load(tmp_path / "runs" / "tiny")
    assert set(df.rung) == {"s1", "s2"}
    assert {"val", "addition_1d", "copy_4"} <= set(df.task)
    assert {"exact_match", "token_accuracy", "edit_similarity", "answer_logprob"} <= set(
        df.metric)
    # Each run's log (stderr through a pipe) holds progress as plain lines, not redraws.
    logs = [p.read_text() for p in (tmp_path / "runs" / "tiny").glob("*.log")]
    assert len(logs) == 2 and not any("\r" in text for text in logs)
    assert all("train " in text and "100%" in text for text in logs)
    again = run_scaling("sweep", str(REPO / "sweeps" / "tiny.yaml"), cwd=tmp_path)
    assert again.returncode == 0 and "2/2 runs finished" in again.stderr


def test_killed_runner_resumes_and_every_run_finishes_once(tmp_path):
    path = sweep_file(tmp_path, {"model.size": {"values": ["s1", "s2", "s1"]},
                                 "train.tokens": {"values": [30000]},
                                 "train.seed": {"values": [0, 1]}})
    sweep = load_sweep(path)
    assert len(sweep.runs) == 6  # two of them identical: one directory, trained once
    proc = subprocess.Popen([sys.executable, "-m", "scaling.cli", "sweep", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    state = tmp_path / "runs" / "s" / "sweep_state.json"
    deadline = time.time() + 300
    while True:  # kill the runner and its child once one run finished and another runs
        assert proc.poll() is None and time.time() < deadline
        runs = json.loads(state.read_text())["runs"] if state.exists() else {}
        statuses = [r["status"] for r in runs.values()]
        if "finished" in statuses and "running" in statuses:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first_finished = {k: v["finished"] for k, v in runs.items() if v["status"] == "finished"}

    again = run_scaling("sweep", str(path))
    assert again.returncode == 0, again.stderr[-2000:]
    runs = json.loads(state.read_text())["runs"]
    assert len(runs) == 4 and all(r["status"] == "finished" for r in runs.values())
    for key, when in first_finished.items():  # not run a second time
        assert runs[key]["finished"] == when
    raw = pd.concat([pd.read_csv(f) for f in (tmp_path / "runs" / "s").rglob("results.csv")])
    assert not raw.duplicated(subset=KEY).any()
    assert len({r for r in raw.run}) == 4


def test_a_failing_run_is_recorded_and_the_others_finish(tmp_path):
    # n_head=5 passes config validation (width comes from the rung) but s1's width 24 is
    # not divisible by 5: that run fails inside the training program.
    path = sweep_file(tmp_path, {"model.size": {"values": ["s1"]},
                                 "model.n_head": {"values": [5, 0]},
                                 "train.tokens": {"value": 5000}})
    proc = run_scaling("sweep", str(path))
    assert proc.returncode == 1
    runs = json.loads((tmp_path / "runs" / "s" / "sweep_state.json").read_text())["runs"]
    failed = [r for r in runs.values() if r["status"] == "failed"]
    assert len(failed) == 1 and "not divisible" in failed[0]["error"]
    assert sum(r["status"] == "finished" for r in runs.values()) == 1
    retry = run_scaling("sweep", str(path))  # the next call retries it (and it fails again)
    assert retry.returncode == 1 and "1 failed" in retry.stderr


def test_with_several_jobs_the_largest_runs_start_first(tmp_path):
    path = sweep_file(tmp_path, {"model.size": {"values": ["s1", "s3", "s2"]},
                                 "train.tokens": {"value": 5000}})
    sizes = {}
    for jobs in (1, 2):
        proc = run_scaling("sweep", str(path), "--dry-run", "--jobs", str(jobs))
        assert proc.returncode == 0, proc.stderr
        sizes[jobs] = [line.split("--model.size=")[1].split()[0]
                       for line in proc.stdout.splitlines()]
    assert sizes[1] == ["s1", "s3", "s2"]  # one job: the sweep's own order
    assert sizes[2] == ["s3", "s2", "s1"]


@pytest.mark.parametrize("how", ["ctrl-c", "sigint-to-runner", "sigterm-to-runner"])
def test_an_interrupted_sweep_stops_its_runs_and_starts_no_other(tmp_path, how):
    # Runs that say they started and sleep: the runner's side of an interrupt, without
    # training.
    script = "import sys, time; print('started', file=sys.stderr); time.sleep(120)"
    path = sweep_file(tmp_path, {"model.size": {"values": ["s1", "s2", "s3"]},
                                 "train.tokens": {"value": 5000}},
                      command=["${interpreter}", "-c", script, "${args}"])
    proc = subprocess.Popen([sys.executable, "-m", "scaling.cli", "sweep", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    state = tmp_path / "runs" / "s" / "sweep_state.json"
    deadline = time.time() + 60
    while not (state.exists() and "running" in state.read_text()):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    logs = tmp_path / "runs" / "s"
    while "started" not in "".join(f.read_text() for f in logs.glob("*.log")):
        assert time.time() < deadline  # a run's log shows its output while it runs
        time.sleep(0.05)
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    else:
        proc.send_signal(signal.SIGINT if how == "sigint-to-runner" else signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("interrupted: ")
    runs = json.loads(state.read_text())["runs"]
    assert [r["status"] for r in runs.values()] == ["interrupted"]  # no other run started
    assert subprocess.run(["pgrep", "-f", r"time\.sleep\(120\)"]).returncode == 1  # none left
