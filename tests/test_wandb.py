"""W&B as a sweep sees it: on under a wandb agent, off elsewhere, never a login.

A run started by `wandb agent` (simulated by the environment the agent sets) writes an
offline wandb run whose history holds val/loss, the training series and one series per
probe metric with tokens and FLOPs on every point; `scaling eval RUN_DIR` adds to the same
wandb run; without the agent's environment nothing is written.
"""

import json
import struct

import pytest

from scaling import evaluate, logger
from scaling.checkpoint import list_checkpoints
from scaling.config import Config, load_config
from scaling.sweep import run_args
from scaling.train import train

TINY = ["--model.size=s1", "--model.block_size=32", "--train.batch_size=8",
        "--train.tokens=5120", "--train.ckpt_interval=10", "--train.val_tokens=512",
        "--train.log_interval=5", "--data.train_tokens=40000", "--data.val_tokens=3000",
        "--run.threads=1", "--run.evaluate=true", "--run.tasks=copy_4", "--run.eval_n=8"]
AGENT = {"WANDB_SWEEP_ID": "sweep123", "WANDB_RUN_ID": "agentrun1"}
WANDB_ENV = ("WANDB_SWEEP_ID", "WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH", "WANDB_MODE",
             "WANDB_DISABLED", "WANDB_API_KEY", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_DIR")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No wandb variables from the caller's shell, no .netrc with a key, and wandb's
    per-process state reset before and after (as in the fresh process an agent starts:
    wandb reads the environment once per process)."""
    import wandb

    for name in WANDB_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    wandb.teardown()
    yield monkeypatch
    wandb.teardown()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("corpora")


def read_wandb_records(path):
    """Records of a `.wandb` file (wandb's transaction log: a 7-byte header, then
    32 KiB blocks of chunks, each `crc32 u32, length u16, type u8` + a piece of a
    protobuf `Record`). wandb has no public Python reader for it, only `wandb sync`."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    pos, pending, block = 7, b"", 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def history(run_dir):
    """Every history row of every offline wandb run in `run_dir`, by run id."""
    out: dict[str, list[dict]] = {}
    for path in sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb")):
        run_id = path.stem.removeprefix("run-")
        for r in read_wandb_records(path):
            if r.WhichOneof("record_type") == "history":
                out.setdefault(run_id, []).append(
                    {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                     for item in r.history.item})
    return out


def step_metrics(run_dir):
    """{metric name or glob: its step_metric} from the define_metric records."""
    out = {}
    for path in (run_dir / "wandb").glob("offline-run-*/run-*.wandb"):
        for r in read_wandb_records(path):
            if r.WhichOneof("record_type") == "metric":
                out[r.metric.name or r.metric.glob_name] = r.metric.step_metric
    return out


def test_agent_run_logs_every_series_and_eval_adds_to_it(clean_env, tmp_path, data_root):
    clean_env.setenv("WANDB_MODE", "offline")
    for name, value in AGENT.items():
        clean_env.setenv(name, value)
    cfg = load_config(None, TINY + [f"--run.dir={tmp_path / 'run'}",
                                    f"--run.data_root={data_root}"])
    assert cfg.run.wandb == "auto"
    run = train(cfg)
    rows = history(run)
    assert list(rows) == ["agentrun1"]  # the agent's run id, not one of ours
    points = rows["agentrun1"]
    val = [p for p in points if "val/loss" in p]
    assert [p["step"] for p in val] == [step for step, _ in list_checkpoints(run)]
    assert all(p["tokens"] == p["step"] * 256 and p["flops"] > 0 for p in val[1:])
    trainpts = [p for p in points if "train/loss" in p]
    assert trainpts and all({"lr", "perf/mfu", "tokens", "flops"} <= set(p) for p in trainpts)
    assert all(0 < p["perf/mfu"] < 5 for p in trainpts)
    series = "eval/copy_4/0shot/exact_match"
    evals = [p for p in points if series in p]
    assert [p["step"] for p in evals] == [p["step"] for p in val]  # one point per checkpoint
    assert all({"tokens", "flops", "eval/copy_4/0shot/token_accuracy"} <= set(p) for p in evals)
    axes = step_metrics(run)
    assert {axes[k] for k in ("train/*", "val/*", "eval/*", "lr")} == {"tokens"}
    assert {"tokens", "flops", "step"} <= set(axes)
    info = json.loads((run / "run.json").read_text())
    assert info["wandb"]["id"] == "agentrun1" and info["wandb"]["mode"] == "offline"
    assert info["wandb"]["sweep"] == "sweep123"

    # `scaling eval RUN_DIR` later, outside the agent: the same wandb run gets the new task.
    for name in AGENT:
        clean_env.delenv(name)
    assert evaluate.main([str(run), "--tasks", "addition_1d", "--checkpoints", "last",
                          "--no-progress", "--workers", "1"]) == 0
    after = history(run)
    assert list(after) == ["agentrun1"]  # resumed: the same wandb run, nothing lost
    added = [p for p in after["agentrun1"] if "eval/addition_1d/0shot/exact_match" in p]
    assert [p["step"] for p in added] == [20]
    assert len([p for p in after["agentrun1"] if "val/loss" in p]) == len(val)


def test_no_agent_means_no_wandb(clean_env, tmp_path, data_root):
    clean_env.setenv("WANDB_MODE", "offline")  # set in the shell, but no agent started us
    run = train(load_config(None, TINY + [f"--run.dir={tmp_path / 'run'}",
                                          f"--run.data_root={data_root}"]))
    assert not (run / "wandb").exists()
    assert "wandb" not in json.loads((run / "run.json").read_text())
    assert evaluate.main([str(run), "--tasks", "addition_1d", "--checkpoints", "last",
                          "--no-progress", "--workers", "1"]) == 0
    assert not (run / "wandb").exists()
    assert (run / "train_log.jsonl").exists()  # the local log is always written


@pytest.mark.parametrize("setting, env, expected", [
    ("auto", {}, "disabled"),
    ("auto", {"WANDB_MODE": "offline"}, "disabled"),  # no agent: off whatever the shell says
    ("auto", AGENT, "offline"),  # no API key anywhere: offline, never a login prompt
    ("auto", {**AGENT, "WANDB_API_KEY": "k" * 40}, "online"),
    ("auto", {**AGENT, "WANDB_MODE": "offline", "WANDB_API_KEY": "k" * 40}, "offline"),
    ("auto", {**AGENT, "WANDB_MODE": "disabled"}, "disabled"),
    ("auto", {**AGENT, "WANDB_DISABLED": "true"}, "disabled"),
    ("auto", {**AGENT, "WANDB_MODE": "dryrun"}, "offline"),
    ("offline", {}, "offline"),
    ("online", {}, "online"),  # asked for explicitly: the user's login
    ("online", {"WANDB_MODE": "offline"}, "offline"),
    ("offline", {"WANDB_MODE": "disabled"}, "disabled"),
    ("disabled", {**AGENT, "WANDB_MODE": "online"}, "disabled"),
])
def test_resolve_mode(setting, env, expected, tmp_path):
    env = {"NETRC": str(tmp_path / "none"), **env}
    assert logger.resolve_mode(setting, env) == expected


def test_credentials_from_netrc(tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    assert logger.has_credentials({"NETRC": str(netrc)})
    assert not logger.has_credentials({"NETRC": str(netrc),
                                       "WANDB_BASE_URL": "https://wandb.example.com"})
    assert logger.resume_mode("online", {"NETRC": str(tmp_path / "none")}) == "offline"
    assert logger.resume_mode("online", {"NETRC": str(netrc)}) == "online"


def test_config_default_and_validation():
    assert Config().run.wandb == "auto"
    with pytest.raises(ValueError, match="auto, disabled, offline or online"):
        load_config(None, ["--run.wandb=cloud"])


def test_run_args_match_the_agent():
    """Our formatting of a run's arguments is what the wandb agent passes (its function is
    not public API, so the check runs only while the installed wandb has it)."""
    utils = pytest.importorskip("wandb.sdk.launch.sweeps.utils")
    run = {"model.size": "s3", "run.evaluate": False, "train.lr": 0.001,
           "data": {"seed": 3, "train_tokens": 1000}, "model.n_layer": 2}
    theirs = utils.create_sweep_command_args({"args": {k: {"value": v}
                                                       for k, v in run.items()}})["args"]
    assert run_args(run) == theirs


def test_report_logs_figures_and_an_artifact(clean_env, tmp_path, capsys):
    from analysis.report import main as report_main
    from helpers import make_results

    clean_env.setenv("WANDB_MODE", "offline")
    clean_env.setenv("WANDB_DIR", str(tmp_path))
    results = tmp_path / "results.csv"
    make_results(n_rungs=4, steps=[0, 64, 512, 2000]).to_csv(results, index=False)
    out = tmp_path / "report"
    assert report_main(["--results", str(results), "--out", str(out), "--bootstrap", "0",
                        "--wandb", "myproject"]) == 0
    assert "logged the report to wandb" in capsys.readouterr().out
    (path,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    records = list(read_wandb_records(path))
    logged = {i.key or "/".join(i.nested_key): i.value_json for r in records
              if r.WhichOneof("record_type") == "history" for i in r.history.item}
    figures = list((out / "figures").glob("*.png"))
    assert figures and all(logged[f"report/{p.stem}/_type"] == '"image-file"' for p in figures)
    (artifact,) = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    assert artifact.type == "report"
    names = {e.path for e in artifact.manifest.contents}
    assert {"report.md", "report.html", "emergence.csv", "results.csv"} <= names
    assert {f"figures/{p.name}" for p in (out / "figures").glob("*.png")} <= names
    assert not (out / "wandb").exists()  # the committed report directory stays clean
