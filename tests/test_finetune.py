"""Fine-tuning and prompt tuning as interventions (scaling/finetune.py), and the soft prompt
they need in the model and the scorer (scaling/model.py, scaling/scoring.py)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from scaling import cpu_attention, finetune, run_info, scoring
from scaling.checkpoint import checkpoint_steps, list_checkpoints, load_checkpoint, load_model
from scaling.config import load_config
from scaling.data.contamination import check_contamination
from scaling.data.skills import Example, is_heldout
from scaling.data.tokenizer import get_tokenizer
from scaling.evaluate import evaluate_run
from scaling.model import GPT, GPTConfig, KVCache
from scaling.scorer import prepare, score_task
from scaling.tasks import Task, get_tasks
from scaling.train import train

REPO = Path(__file__).resolve().parent.parent
TASK = "addition_3d"
# A two-block model (s2) with room for a soft prompt, trained for a few thousand tokens.
SOURCE = ["--model.size=s2", "--model.block_size=64", "--train.batch_size=8",
          "--train.tokens=8192", "--train.ckpt_interval=8", "--train.val_tokens=1024",
          "--data.train_tokens=60000", "--data.val_tokens=4000", "--run.threads=1"]
# A tiny fine-tune: ~25 steps of 8 examples, scored on one task with 20 instances.
TINY = ["--task", TASK, "--tokens", "3000", "--batch-size", "8", "--threads", "1",
        "--eval-tasks", TASK, "--eval-n", "20", "--no-progress", "--wandb", "disabled"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("source")
    return train(load_config(None, SOURCE + [f"--run.dir={root / 'runs' / 'base' / 's2'}",
                                             f"--run.data_root={root / 'data'}"]))


def _weights(run_dir: Path, step: int | None = None) -> dict:
    ckpts = dict(list_checkpoints(run_dir))
    state, _ = load_checkpoint(ckpts[step if step is not None else max(ckpts)])
    return state["model"]


def _finetune(source, out, *args) -> int:
    return finetune.main([str(source), *TINY, "--out", str(out), *args])


@pytest.fixture(scope="module")
def tuned(source, tmp_path_factory):
    """One tiny fine-tune in each mode: {mode: (run directory, seconds)}."""
    root = tmp_path_factory.mktemp("tuned")
    out = {}
    for mode, extra in (("full", []), ("top_k", ["--k", "1"]), ("prompt", ["--prompt-len", "4"])):
        t0 = time.perf_counter()
        assert _finetune(source, root / mode, "--mode", mode, *extra) == 0
        out[mode] = (root / mode, time.perf_counter() - t0)
    return out


# -------------------------------------------------------------------------- the three modes


def test_full_changes_every_weight_and_rows_carry_the_source(source, tuned):
    run, seconds = tuned["full"]
    print(f"tiny full fine-tune (s2, 3000 tokens, 1 task x 20 instances scored): {seconds:.1f} s")
    before, after = _weights(source), _weights(run)
    assert before.keys() == after.keys()
    assert all(not torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(_weights(run, 0)["blocks.0.attn.qkv.weight"],
                       before["blocks.0.attn.qkv.weight"])  # step 0 is the source model

    info = run_info.read(run)
    src_meta = json.loads(list_checkpoints(source)[-1][1].with_suffix(".json").read_text())
    assert info["status"] == run_info.EVALUATED and info["rung"] == "s2"
    assert info["finetune"]["source_sha256"] == src_meta["sha256"]
    rows = pd.read_csv(run / "results.csv")
    assert set(rows.intervention) == {"finetune:full:addition_3d"}
    assert set(rows.task) == {"val", TASK}
    assert (rows.params == src_meta["params"]).all()
    assert (rows.nonembed_params == src_meta["nonembed_params"]).all()
    assert (rows.rung == "s2").all() and (rows.seed == src_meta["seed"]).all()
    steps = sorted(set(rows.step))
    total = info["total_steps"]  # the ladder's log-spaced saves (scaling/checkpoint.py)
    assert steps == [s for s, _ in list_checkpoints(run)] == checkpoint_steps(total, total // 8)
    # tokens: the source's, plus the fine-tuning tokens (examples' tokens, no padding)
    first = rows[rows.step == 0].tokens.unique()
    last = rows[rows.step == steps[-1]].tokens.unique()
    assert first.tolist() == [src_meta["tokens"]]
    assert 3000 <= last[0] - src_meta["tokens"] < 3000 + 8 * 20


def test_top_k_changes_only_the_last_blocks_norm_and_head(source, tuned):
    run, _ = tuned["top_k"]
    before, after = _weights(source), _weights(run)
    for name in before:
        trained = name.startswith(("blocks.1.", "ln_f.")) or name == "wte.weight"
        assert torch.equal(before[name], after[name]) != trained, name
    model = GPT(GPTConfig(**load_checkpoint(list_checkpoints(source)[-1][1])[0]["model_config"]))
    names = finetune.trainable(model, "top_k", 1)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(names)
    assert not any(p.requires_grad for n, p in model.named_parameters()
                   if n.startswith("blocks.0."))
    assert set(pd.read_csv(run / "results.csv").intervention) == {"finetune:top1:addition_3d"}


def test_prompt_trains_only_the_soft_prompt_and_the_scorer_prepends_it(source, tuned):
    run, _ = tuned["prompt"]
    before, after = _weights(source), _weights(run)
    assert set(after) == set(before) | {"soft_prompt"}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert after["soft_prompt"].shape == (4, 48)
    assert not torch.equal(_weights(run, 0)["soft_prompt"], after["soft_prompt"])

    model, meta = load_model(list_checkpoints(run)[-1][1])
    assert model.prompt_len == 4 and model.window == 60
    assert meta["intervention"] == "prompt:4:addition_3d"
    base, _ = load_model(list_checkpoints(source)[-1][1])
    tok = get_tokenizer("char")
    prep = prepare(get_tasks([TASK])[0], tok)
    with_prompt, without = score_task(model, tok, prep), score_task(base, tok, prep)
    assert with_prompt["answer_logprob"] != without["answer_logprob"]
    model.soft_prompt = None  # the same network without its prompt scores as the source
    model.cfg.prompt_len = 0
    assert score_task(model, tok, prep) == without

    # `scaling eval OUT` scores more tasks; every row is tagged and keeps the source's size
    assert evaluate_run(run, tasks="copy_4", n=10, progress=False) > 0
    rows = pd.read_csv(run / "results.csv")
    assert set(rows.task) == {TASK, "copy_4"}  # no validation rows: the network is frozen
    assert set(rows.intervention) == {"prompt:4:addition_3d"}
    assert (rows.params == run_info.read(source)["params"]).all()


def test_a_base_model_is_what_it_was_before_soft_prompts():
    cfg = GPTConfig(vocab_size=32, n_layer=2, d_model=32, n_head=4, block_size=24, pos="rotary")
    model = GPT(cfg, seed=1)
    assert model.soft_prompt is None and "prompt_len" not in cfg.to_dict()
    assert "soft_prompt" not in model.state_dict() and model.window == 24
    tuned = GPT(GPTConfig(**{**cfg.to_dict(), "prompt_len": 3}), seed=1)
    for name, p in model.named_parameters():  # the network's draws are unchanged
        assert torch.equal(p, dict(tuned.named_parameters())[name])
    assert tuned.num_scaling_params() == dict(model.num_scaling_params(), prompt=96,
                                              total=model.num_scaling_params()["total"] + 96)


# -------------------------------------------------------------------------- the soft prompt


@pytest.mark.parametrize("pos", ["rotary", "learned", "sinusoidal"])
def test_soft_prompt_cache_gives_the_full_forward_logits(pos):
    cfg = GPTConfig(vocab_size=32, n_layer=2, d_model=32, n_head=4, block_size=28, pos=pos,
                    prompt_len=5)
    model = GPT(cfg, seed=2).eval()
    idx = torch.randint(0, 32, (3, 20))
    full, _ = model(idx)
    assert full.shape == (3, 20, 32)
    for capacity in (0, cfg.block_size):
        cache = KVCache(cfg.n_layer, capacity)
        first, _ = model(idx[:, :12], cache=cache)  # starts the sequence: prompt first
        assert cache.pos == 5 + 12
        steps = [first] + [model(idx[:, t:t + 1], cache=cache)[0] for t in range(12, 20)]
        torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(idx, last=3)[0], full[:, -3:], atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="soft prompt of 5 included"):
        model(torch.zeros(1, 24, dtype=torch.long))
    assert model(torch.zeros(1, 23, dtype=torch.long))[0].shape == (1, 23, 32)


def test_scoring_paths_agree_with_a_soft_prompt():
    """The cached scoring paths (shared prefix, decoding resumed after teacher forcing,
    options from a shared prompt cache) equal the uncached ones, soft prompt included."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, n_layer=2, d_model=32, n_head=2, block_size=40,
                          pos="rotary", prompt_len=6), seed=3).eval()
    with torch.no_grad():
        model.soft_prompt.normal_(0, 1)
    rng = random.Random(0)
    shared = [rng.randrange(1, 16) for _ in range(70)]
    # 30 contexts of 13 tokens that share their first 12: the shared-prefix path runs
    contexts = [shared[:12] + [rng.randrange(1, 16)] for _ in range(30)]
    golds = [[rng.randrange(1, 16) for _ in range(rng.randrange(1, 5))] for _ in contexts]
    stops = {0}
    tf, outs = scoring.teacher_force_and_decode(model, contexts, golds, stops, batch_size=7)
    ref = scoring.score_continuations(model, list(zip(contexts, golds)), batch_size=5)
    for a, b in zip(tf, ref):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs),
                                   atol=1e-5, rtol=1e-5)
    budgets = [len(g) + 2 for g in golds]
    assert outs == scoring.greedy_generate(model, contexts, budgets, stops, batch_size=4)
    # one row at a time, no cache at all: the full forward's argmax, token after token
    for ctx, budget, out in zip(contexts[:5], budgets, outs):
        seq, gen = list(ctx), []
        for _ in range(budget):
            nxt = int(model(torch.tensor([seq]))[0][0, -1].argmax())
            if nxt in stops:
                break
            gen.append(nxt)
            seq.append(nxt)
        assert gen == out
    options = [[[rng.randrange(1, 16) for _ in range(rng.randrange(1, 4))] for _ in range(3)]
               for _ in contexts]
    lls = scoring.choice_logprobs(model, contexts, options, batch_size=8)
    pairs = [(c, o) for c, opts in zip(contexts, options) for o in opts]
    sums = [float(s.logprobs.sum()) for s in scoring.score_continuations(model, pairs)]
    assert max(abs(a - b) for a, b in zip([x for ll in lls for x in ll], sums)) < 1e-4
    # a context longer than the window (block - prompt) is cut as the scorer cuts it
    assert len(scoring.greedy_generate(model, [shared[:40]], [3], set())[0]) == 3


def test_cpu_attention_kernel_trains_a_soft_prompt_as_torch_does(monkeypatch):
    if cpu_attention.load() is None:
        pytest.skip(f"CPU attention kernel unavailable: {cpu_attention.reason()}")
    cfg = GPTConfig(vocab_size=32, n_layer=2, d_model=48, n_head=2, block_size=64,
                    pos="rotary", prompt_len=5)
    x = torch.randint(0, 32, (4, 19))  # 5 + 19 = 24 positions: a length the kernel serves
    y = torch.randint(0, 32, (4, 19))
    y[:, :10] = finetune.IGNORE

    def step():
        model = GPT(cfg, seed=4)
        finetune.trainable(model, "prompt")
        _, loss = model(x, y)
        loss.backward()
        return loss.detach(), model.soft_prompt.grad

    used = []
    real = cpu_attention.attend
    monkeypatch.setattr(cpu_attention, "attend", lambda *a: used.append(1) or real(*a))
    kernel = step()
    assert used, "the kernel did not serve the soft-prompt step"
    monkeypatch.setattr(cpu_attention, "usable", lambda *a: False)
    used.clear()
    torch_path = step()
    assert not used
    torch.testing.assert_close(kernel[0], torch_path[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(kernel[1], torch_path[1], atol=1e-6, rtol=1e-5)


# -------------------------------------------------------------------------- the training split


def test_training_examples_are_disjoint_from_every_probe_instance(source):
    task = get_tasks([TASK])[0]
    settings = finetune.Settings(str(source), TASK, "full", tokens=20_000, batch_size=16)
    run = finetune.prepare(settings, out=None)
    rows = run.plan.rows
    assert len(rows) == run.plan.total_steps * 16 and run.plan.tokens[-1] >= 20_000
    assert not any(is_heldout(r.example) for r in rows)
    flat = [t for r in rows for t in r.tokens]
    probes = task.examples()
    assert check_contamination(np.asarray(flat), probes, "char") == []
    # ... while the same check finds a probe instance rendered the same way
    tok = get_tokenizer("char")
    planted = tok.encode(task.context(probes[0]) + probes[0].answer + "\n")
    assert check_contamination(np.asarray(flat + planted), probes, "char") == [probes[0]]
    # rendered as the probe: context (cut as the scorer cuts it), answer, line break; the
    # targets are the answer and the line break only
    r = rows[0]
    assert tok.decode(r.tokens) == "\n" + r.example.prompt + r.example.answer + "\n"
    x, y = finetune.make_batch(rows[:16], 0, 64)
    scored = [t for t in y[0].tolist() if t != finetune.IGNORE]
    assert tok.decode(scored) == r.example.answer + "\n"
    assert x.size(1) % finetune.PAD_MULTIPLE == 0
    assert not (source.parent.parent / "finetune").exists()  # prepare writes nothing


def test_a_planted_held_out_example_stops_the_run_before_any_step(source, tmp_path,
                                                                   monkeypatch, capsys):
    task = get_tasks([TASK])[0]
    probe = task.examples()[3]
    import scaling.data.skills as skills

    real = skills.sample_train
    draws = iter(range(10**6))
    monkeypatch.setattr(skills, "sample_train",
                        lambda *a, **k: probe if next(draws) == 5 else real(*a, **k))
    out = tmp_path / "ft"
    assert _finetune(source, out, "--mode", "full") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "held-out probe instances" in err[0] and probe.text in err[0]
    assert not out.exists()


def test_every_registered_task_has_a_training_split():
    for task in get_tasks(None):
        assert finetune.training_split(task).NAME == task.skill


class _OwnInstances(Task):
    """A probe task whose instances come from no corpus skill."""

    def examples(self):
        return [Example("addition", 3, "A 1+1=", "2")]


class _AllHeldOut:
    """A skill whose every example is held out."""

    NAME, DIFFICULTIES = "allheld", (1,)

    @staticmethod
    def sample(rng, difficulty):
        while True:  # a held-out text, found by trying
            ex = Example("allheld", 1, f"Z {rng.randrange(10**9)}=", "0")
            if is_heldout(ex):
                return ex

    @staticmethod
    def chance(difficulty):
        return None


@pytest.mark.parametrize("case, args, message", [
    ("unknown task", ["--mode", "full", "--task", "addition_9d"], "unknown task"),
    ("several tasks", ["--mode", "full", "--task", "icl"], "names 5 probe tasks"),
    ("own instances", ["--mode", "full", "--task", "own"], "has no training split"),
    ("all held out", ["--mode", "full", "--task", "heldonly"], "every example"),
    ("k=0", ["--mode", "top_k", "--k", "0"], "k must be at least 1"),
    ("k > depth", ["--mode", "top_k", "--k", "3"], "more than the model's 2 block"),
    ("prompt-len 0", ["--mode", "prompt", "--prompt-len", "0"], "at least one vector"),
    ("prompt-len = block", ["--mode", "prompt", "--prompt-len", "64"], "no room"),
    ("no such step", ["--mode", "full", "@step7"], "no checkpoint at step 7 (steps: 0, 1"),
    ("bad step", ["--mode", "full", "@last"], "name a checkpoint as RUN_DIR@stepN"),
    ("no source", ["--mode", "full", "missing"], "no such run directory"),
    ("bad mode", ["--mode", "lora"], "invalid choice"),
])
def test_bad_requests_are_one_line_errors_before_any_step(source, tmp_path, monkeypatch,
                                                          capsys, case, args, message):
    import scaling.data.skills as skills

    monkeypatch.setitem(skills.SKILLS, "allheld", _AllHeldOut)
    extra = {"own": _OwnInstances("own", skill="addition", difficulty=3),
             "heldonly": Task("heldonly", skill="allheld", difficulty=1)}
    real = finetune.get_tasks
    monkeypatch.setattr(finetune, "get_tasks",
                        lambda names: [extra[names[0]]] if names[0] in extra else real(names))
    src = str(source)
    if args[-1].startswith("@"):
        src, args = src + args[-1], args[:-1]
    elif args[-1] == "missing":
        src, args = str(tmp_path / "missing"), args[:-1]
    base = list(TINY)
    if "--task" in args:  # the case's task replaces the default one
        i = base.index("--task")
        del base[i:i + 2]
    out = tmp_path / "ft"
    code = finetune.main([src, *base, *args, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:"), (case, err)
    assert message in err[0], (case, err[0])
    assert not out.exists()


# -------------------------------------------------------------------------- resumption


def _cli(args):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "scaling.finetune", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.parametrize("mode", ["full", "prompt"])
def test_kill_and_resume_is_bit_exact(source, tmp_path, mode):
    args = [str(source), "--mode", mode, "--prompt-len", "4", "--task", TASK, "--tokens",
            "40000", "--batch-size", "8", "--threads", "1", "--no-evaluate", "--no-progress",
            "--wandb", "disabled"]
    ref = tmp_path / "ref"
    assert finetune.main(args + ["--out", str(ref)]) == 0
    total = run_info.read(ref)["total_steps"]
    assert total > 200
    run = tmp_path / "killed"
    for kill_after in (8, total // 8 * 3):
        proc = _cli(args + ["--out", str(run)])
        deadline = time.time() + 180
        while not (run / "checkpoints" / f"step_{kill_after:06d}.json").exists():
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert _cli(args + ["--out", str(run)]).wait() == 0
    ref_w, w = _weights(ref), _weights(run)
    assert list_checkpoints(run)[-1][0] == total
    assert all(torch.equal(ref_w[k], w[k]) for k in ref_w)
    if mode == "full":  # validation rows: every checkpoint once, the same values
        a, b = pd.read_csv(ref / "results.csv"), pd.read_csv(run / "results.csv")
        assert a.value.tolist() == b.value.tolist() and len(a) == len(list_checkpoints(ref))
    # the same directory with other settings is refused, in one line, and left as it was
    proc = _cli(args + ["--out", str(run), "--lr", "0.5"])
    assert proc.wait() == 2
    err = proc.stderr.read().decode().strip().splitlines()
    assert len(err) == 1 and "lr=" in err[0] and "use another --out" in err[0]


# -------------------------------------------------------------------------- names and sweeps


def test_default_output_directory_and_tags():
    s = finetune.Settings("runs/ladder/s3-abc", TASK, "full")
    assert finetune.default_out(s.source, s, TASK) == Path("runs/finetune/s3-abc-full-addition_3d")
    s = finetune.Settings("runs/ladder/s3-abc@step512", "icl_4shot", "top_k", k=2)
    assert finetune.default_out(s.source, s, "icl_4shot") == Path(
        "runs/finetune/s3-abc-step512-top2-icl_4shot")
    assert s.intervention("icl_4shot") == "finetune:top2:icl_4shot"
    s = finetune.Settings("runs/ladder/s3-abc", TASK, "prompt", prompt_len=16)
    assert s.intervention(TASK) == "prompt:16:addition_3d"
    assert finetune.default_out(s.source, s, TASK).name == "s3-abc-prompt16-addition_3d"
    other = finetune.Settings("runs/ladder/s3-abc", TASK, "prompt", prompt_len=16, lr=0.5)
    name = finetune.default_out(other.source, other, TASK).name
    assert name.startswith("s3-abc-prompt16-addition_3d-") and len(name.split("-")[-1]) == 8


def test_sweep_fine_tunes_every_rung_of_the_default_ladder_in_each_mode():
    from scaling.sweep import command_line, load_sweep, run_args, run_target

    ladder = load_sweep(REPO / "sweeps" / "ladder.yaml")
    rungs = [str(load_config(None, run_args(r)).run_dir()) for r in ladder.runs]
    sweep = load_sweep(REPO / "sweeps" / "finetune.yaml")  # every run's arguments parse
    assert sorted({r["source"] for r in sweep.runs}) == sorted(rungs)
    assert {r["mode"] for r in sweep.runs} == set(finetune.MODES)
    assert len(sweep.runs) == len(rungs) * len(finetune.MODES)
    (task,) = {r["task"] for r in sweep.runs}
    emergence = pd.read_csv(REPO / "reports" / "ladder" / "emergence.csv")
    verdict = emergence[(emergence.task == task) & (emergence.metric == "exact_match")
                        & (emergence.axis == "params")].verdict
    assert verdict.tolist() == ["flat"]  # a task the default ladder does not solve
    cmd = command_line(sweep, sweep.runs[0])
    assert cmd[:3] == [sys.executable, "-m", "scaling.finetune"]
    targets = [run_target(sweep, r) for r in sweep.runs]
    assert {t.root for t in targets} == {Path("runs/finetune")}
    assert len({t.dir for t in targets}) == len(targets) and all(t.needs_eval for t in targets)
    assert targets[0].dir == Path("runs/finetune") / f"{Path(rungs[0]).name}-full-{task}"
    assert targets[0].flops() >= 0


def test_a_local_sweep_runs_fine_tunes_and_skips_them_once_finished(source, tmp_path):
    import shutil

    import yaml

    from helpers import run_scaling

    src = tmp_path / "runs" / "ladder" / "s2"
    shutil.copytree(source, src)
    doc = {"name": "ft", "program": "scaling.finetune", "method": "grid",
           "parameters": {"source": {"value": str(src)}, "task": {"value": TASK},
                          "mode": {"values": ["top_k", "prompt"]},
                          "prompt_len": {"value": 4}, "tokens": {"value": 1500},
                          "batch_size": {"value": 8}, "eval_tasks": {"value": TASK},
                          "eval_n": {"value": 10}, "threads": {"value": 1},
                          "wandb": {"value": "disabled"}},
           "command": ["${env}", "${interpreter}", "-m", "scaling.finetune", "${args}"]}
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump(doc))
    proc = run_scaling("sweep", str(path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    root = tmp_path / "runs" / "finetune"  # next to the source's sweep directory
    asked = [finetune.Settings(str(src), TASK, mode, prompt_len=4, tokens=1500, batch_size=8)
             for mode in ("prompt", "top_k")]
    assert sorted(p for p in root.iterdir() if p.is_dir()) == [
        finetune.default_out(str(src), s, TASK) for s in asked]
    assert [p.name[:-9] for p in sorted(root.iterdir()) if p.is_dir()] == [
        "s2-prompt4-addition_3d", "s2-top1-addition_3d"]  # + a hash of the non-defaults
    assert json.loads((root / "sweep_state.json").read_text())["runs"]
    tags = set(pd.concat(pd.read_csv(f) for f in root.rglob("results.csv")).intervention)
    assert tags == {"finetune:top1:addition_3d", "prompt:4:addition_3d"}
    again = run_scaling("sweep", str(path))
    assert again.returncode == 0 and "2/2 runs finished" in again.stderr
