"""Knowledge distillation (scaling/distill.py): the loss is Hinton et al.'s formula, alpha 0
is plain training bit for bit, resuming is bit-exact, the teacher's identity is recorded and
held to, bad teachers and settings are one-line errors before anything is written, rows are
tagged, and sweeps/distill.yaml distils from the default ladder's s6 run."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from scaling import run_info
from scaling.checkpoint import list_checkpoints, load_checkpoint, load_model, save_checkpoint
from scaling.config import (INTERVENTION_FIELDS, RESUMABLE_FIELDS, Config, ConfigError,
                            load_config)
from scaling.data.shards import get_batch, open_shard
from scaling.distill import Distillation, kd_loss
from scaling.model import GPT
from scaling.train import main, make_plan, train

TINY = ["--model.size=s1", "--model.block_size=32", "--train.batch_size=8",
        "--train.tokens=10240", "--train.ckpt_interval=10", "--train.val_tokens=1024",
        "--data.train_tokens=60000", "--data.val_tokens=4000", "--run.threads=1"]


def _args(run_dir, data_root, *extra):
    return TINY + [f"--run.dir={run_dir}", f"--run.data_root={data_root}", *extra]


def _values(run_dir):
    """The `value` column of a run's results.csv, as written."""
    return [r.split(",")[10] for r in (run_dir / "results.csv").read_text().splitlines()]


def _final_weights(run_dir):
    state, _ = load_checkpoint(list_checkpoints(run_dir)[-1][1])
    return state["model"], state["step"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("corpora")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, data_root):
    """A tiny s1 teacher: 10 steps of 8 x 32 tokens (2,560 tokens), checkpoints 0..10."""
    root = tmp_path_factory.mktemp("teacher")
    return train(load_config(None, _args(root / "s1", data_root, "--train.tokens=2560")))


@pytest.fixture(scope="module")
def student(tmp_path_factory, data_root, teacher):
    """An uninterrupted distilled s1 student (alpha 0.5, T 2): the reference of several
    tests."""
    root = tmp_path_factory.mktemp("student")
    return train(load_config(None, _args(root / "run", data_root,
                                         f"--train.teacher={teacher}")))


def test_loss_is_the_formula_computed_by_hand(teacher, data_root):
    """On one batch, the objective's loss equals a * T^2 * KL(p_t || p_s) + (1 - a) * CE,
    computed here independently in float64 from the two models' logits."""
    alpha, temp = 0.3, 2.5
    cfg = load_config(None, _args(data_root / "unused", data_root, f"--train.teacher={teacher}",
                                  f"--train.kd_alpha={alpha}", f"--train.kd_temperature={temp}"))
    plan = make_plan(cfg, vocab_size=128)
    objective = Distillation.from_config(cfg, torch.device("cpu"))
    student = GPT(plan.model_config, seed=3)
    corpus = next(p for p in data_root.iterdir() if (p / "manifest.json").exists())
    x, y = get_batch(open_shard(corpus, "train"), 5, 8, 32)
    loss = objective.loss(student, x, y, step=5)

    with torch.no_grad():
        s = student(x)[0].double().reshape(-1, 128)  # (B*T, V)
        t = load_model(teacher / "checkpoints" / "step_000010.pt")[0](x)[0].double()
        t = t.reshape(-1, 128)
    p_t = torch.exp(t / temp) / torch.exp(t / temp).sum(-1, keepdim=True)
    p_s = torch.exp(s / temp) / torch.exp(s / temp).sum(-1, keepdim=True)
    kl = (p_t * (p_t.log() - p_s.log())).sum(-1).mean()  # mean over the B*T positions
    q = torch.exp(s) / torch.exp(s).sum(-1, keepdim=True)
    ce = -q.log().gather(1, y.reshape(-1, 1)).mean()
    want = alpha * temp ** 2 * kl + (1 - alpha) * ce
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)


def test_the_soft_term_gradient_is_t_times_the_probability_gap():
    """d/ds T^2 KL(softmax(t/T) || softmax(s/T)) = T (softmax(s/T) - softmax(t/T)) / N for
    N positions (Hinton et al. 2015, eq. 2, times T^2): autograd against the closed form."""
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(2, 3, 11, generator=gen, requires_grad=True)
    t = torch.randn(2, 3, 11, generator=gen)
    temp = 3.0
    kd_loss(s, t, temp).backward()
    want = temp * (torch.softmax(s.detach() / temp, -1) - torch.softmax(t / temp, -1)) / 6
    torch.testing.assert_close(s.grad, want, rtol=1e-5, atol=1e-7)


def test_alpha_zero_is_plain_training_bit_for_bit(tmp_path, data_root, teacher):
    plain = train(load_config(None, _args(tmp_path / "plain", data_root)))
    zero = train(load_config(None, _args(tmp_path / "zero", data_root,
                                         f"--train.teacher={teacher}", "--train.kd_alpha=0")))
    (w_plain, step), (w_zero, step_zero) = _final_weights(plain), _final_weights(zero)
    assert step == step_zero == 40
    for name, tensor in w_plain.items():
        assert torch.equal(tensor, w_zero[name]), name
    assert _values(plain) == _values(zero)  # every validation loss, to the last digit


def test_kill_and_resume_is_bit_exact(tmp_path, data_root, teacher, student):
    run = tmp_path / "killed"
    args = _args(run, data_root, f"--train.teacher={teacher}")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "scaling.train", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while not (run / "checkpoints" / "step_000010.json").exists():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list_checkpoints(run)[-1][0] < 40  # killed mid-run
    assert train(load_config(None, args)) == run
    (ref, ref_step), (weights, step) = _final_weights(student), _final_weights(run)
    assert step == ref_step == 40
    for name, tensor in ref.items():
        assert torch.equal(tensor, weights[name]), name


def test_teacher_identity_is_recorded_and_rows_are_tagged(student, teacher):
    path = teacher / "checkpoints" / "step_000010.pt"
    meta = json.loads(path.with_suffix(".json").read_text())
    recorded = run_info.read(student)["teacher"]
    assert recorded == {"run_dir": str(teacher.resolve()), "step": 10, "sha256": meta["sha256"],
                        "rung": "s1", "data_hash": meta["data_hash"]}
    rows = (student / "results.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert "intervention" in header
    assert {r.split(",")[header.index("intervention")] for r in rows[1:]} == {"distill:s1"}
    assert load_checkpoint(list_checkpoints(student)[-1][1])[1]["intervention"] == "distill:s1"
    # the scorer copies the tag into every probe row
    from scaling.evaluate import evaluate_run
    from scaling.results import load

    evaluate_run(student, tasks=["addition_1d"], checkpoints="last", n=4, progress=False)
    probes = load(student)
    assert set(probes[probes.task == "addition_1d"].intervention) == {"distill:s1"}


def test_a_changed_teacher_is_refused_on_resume(tmp_path, data_root, teacher, capsys):
    own = tmp_path / "teacher"
    shutil.copytree(teacher, own)
    args = _args(tmp_path / "run", data_root, f"--train.teacher={own}", "--train.tokens=2560")
    run = train(load_config(None, args))
    assert train(load_config(None, args)) == run  # the same teacher: accepted, nothing to do
    before = (run / "run.json").read_text()

    # 1) the same step, other weights (a checkpoint rewritten with its own valid sha256)
    path = own / "checkpoints" / "step_000010.pt"
    original = path.read_bytes(), path.with_suffix(".json").read_text()
    state, meta = load_checkpoint(path)
    state["model"]["wte.weight"][0, 0] += 1.0
    save_checkpoint(own, 10, state, meta)
    capsys.readouterr()  # the training runs' progress bars
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "was distilled from" in err and "@step10" in err, err
    # 2) the same file at another step: the teacher's last checkpoint is now step 8
    path.write_bytes(original[0])
    path.with_suffix(".json").unlink()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "now gives" in err and "@step8" in err, err
    assert (run / "run.json").read_text() == before  # nothing recorded, no step taken
    assert _final_weights(run)[1] == 10


def _bpe(path):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(["12+34=46", "a b c"], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(path))
    return path


@pytest.mark.parametrize("case", ["missing", "not_a_run", "no_step", "bad_step", "vocab",
                                  "block", "tokenizer", "still_training", "alpha_high",
                                  "alpha_low", "temperature_zero", "temperature_negative",
                                  "kd_without_teacher", "own_teacher", "mlm", "encoder"])
def test_bad_teachers_and_settings_stop_before_anything_is_written(case, tmp_path, data_root,
                                                                   teacher, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    training = tmp_path / "training"
    if case == "still_training":
        shutil.copytree(teacher, training)
        run_info.update(training, status=run_info.TRAINING)
    encoder = tmp_path / "encoder"
    if case == "encoder":  # as an MLM run's checkpoint says it (scaling/mlm.py)
        shutil.copytree(teacher, encoder)
        state, meta = load_checkpoint(encoder / "checkpoints" / "step_000010.pt")
        save_checkpoint(encoder, 10, dict(state, model_config=dict(state["model_config"],
                                                                   causal=False)), meta)
    run_dir = tmp_path / "student"
    bpe = _bpe(tmp_path / "bpe.json") if case == "tokenizer" else None
    extra, says = {
        "missing": ([f"--train.teacher={tmp_path / 'nowhere'}"], "no such run directory"),
        "not_a_run": ([f"--train.teacher={empty}"], "is not a trained run"),
        "no_step": ([f"--train.teacher={teacher}@step7"], "no checkpoint at step 7"),
        "bad_step": ([f"--train.teacher={teacher}@last"], "RUN_DIR@stepN"),
        "vocab": ([f"--train.teacher={teacher}", "--model.vocab_size=256"],
                  "vocabulary size 128, the student 256"),
        "block": ([f"--train.teacher={teacher}", "--model.block_size=64"],
                  "block size 32, the student model.block_size=64"),
        "tokenizer": ([f"--train.teacher={teacher}", "--model.vocab_size=128",
                       f"--data.tokenizer={bpe}"],
                      "a teacher must share the student's tokenizer"),
        "still_training": ([f"--train.teacher={training}"], "is still training"),
        "alpha_high": ([f"--train.teacher={teacher}", "--train.kd_alpha=1.5"], "[0, 1]"),
        "alpha_low": ([f"--train.teacher={teacher}", "--train.kd_alpha=-0.1"], "[0, 1]"),
        "temperature_zero": ([f"--train.teacher={teacher}", "--train.kd_temperature=0"],
                             "must be positive"),
        "temperature_negative": ([f"--train.teacher={teacher}", "--train.kd_temperature=-2"],
                                 "must be positive"),
        "kd_without_teacher": (["--train.kd_alpha=0.7"], "needs a teacher"),
        "own_teacher": ([f"--train.teacher={run_dir}"], "own teacher"),
        "mlm": ([f"--train.teacher={teacher}", "--model.objective=mlm"], "cannot distil"),
        "encoder": ([f"--train.teacher={encoder}"], "needs a causal teacher"),
    }[case]
    if case == "own_teacher":
        shutil.copytree(teacher, run_dir)  # a run directory that is a trained run
        before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    corpora = sorted(data_root.iterdir())
    assert main(_args(run_dir, data_root, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and says in err, err
    if case == "own_teacher":
        assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before
    else:
        assert not run_dir.exists()
    assert sorted(data_root.iterdir()) == corpora  # no corpus built either


def test_teacher_fields_change_the_run_directory_but_not_a_base_run(tmp_path):
    fields = {("train", "teacher"), ("train", "kd_alpha"), ("train", "kd_temperature")}
    assert fields <= INTERVENTION_FIELDS and not fields & RESUMABLE_FIELDS
    base = Config()
    assert all(k not in base.to_dict()[s] for s, k in fields)  # a base run's config as before
    assert base.intervention() is None
    root = ["--run.root=runs/x"]
    plain = load_config(None, root).run_dir()
    distilled = load_config(None, root + ["--train.teacher=runs/t"]).run_dir()
    hotter = load_config(None, root + ["--train.teacher=runs/t",
                                       "--train.kd_temperature=4"]).run_dir()
    assert len({plain, distilled, hotter}) == 3
    cfg = load_config(None, root + ["--train.teacher=runs/t"])
    assert cfg.to_dict()["train"]["kd_alpha"] == 0.5  # written out in full once distilled
    with pytest.raises(ConfigError, match="needs a teacher"):
        load_config(None, ["--train.kd_temperature=3"])


def test_distill_sweep_distils_the_default_ladder_from_its_s6_run():
    """sweeps/distill.yaml names the s6 run directory of sweeps/ladder.yaml (the config hash
    changes with any config default: then regenerate the path), and trains s1..s5 exactly as
    the default ladder does, plus the teacher."""
    from scaling.ladder_cli import PRESETS, SWEEPS_DIR
    from scaling.sweep import load_sweep, run_dir_of

    assert PRESETS["distill"] == "distill.yaml"
    base = {r["model.size"]: r for r in load_sweep(SWEEPS_DIR / "ladder.yaml").runs}
    s6 = run_dir_of(base["s6"])
    distilled = load_sweep(SWEEPS_DIR / "distill.yaml").runs
    assert [r["model.size"] for r in distilled] == ["s1", "s2", "s3", "s4", "s5"]
    for run in distilled:
        assert Path(run["train.teacher"]) == s6, (run["train.teacher"], s6)
        assert {k: v for k, v in run.items() if k != "train.teacher"} == base[run["model.size"]]
        assert run_dir_of(run) != run_dir_of(base[run["model.size"]])
        assert run_dir_of(run).parent == s6.parent  # beside the base ladder: one report
