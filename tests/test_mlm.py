"""Masked language modelling on the ladder (scaling/mlm.py, scaling/mlm_scoring.py): BERT's
masking, bidirectional attention, a tiny run that trains and resumes bit-exactly, the fill-in
scorer checked against independent loops, rows tagged `mlm`, and the base ladder unchanged."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from scaling import mlm, mlm_scoring
from scaling.checkpoint import list_checkpoints, load_checkpoint, load_model
from scaling.config import ConfigError, load_config
from scaling.data.tokenizer import CharTokenizer
from scaling.model import GPT, GPTConfig
from scaling.objectives import CausalLM, make_objective
from scaling.scorer import prepare
from scaling.tasks import get_tasks
from scaling.tasks.base import fit_context
from scaling.train import train

TINY = ["--model.size=s1", "--model.block_size=32", "--train.batch_size=8",
        "--train.tokens=10240", "--train.ckpt_interval=10", "--train.val_tokens=1024",
        "--data.train_tokens=60000", "--data.val_tokens=4000", "--run.threads=1",
        "--run.wandb=disabled"]
MLM = ["--model.objective=mlm"]
TOK = CharTokenizer()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("corpora")


def _train(run_dir, data_root, extra=()):
    return train(load_config(None, TINY + [f"--run.dir={run_dir}",
                                           f"--run.data_root={data_root}", *extra]))


@pytest.fixture(scope="module")
def mlm_run(tmp_path_factory, data_root):
    """A tiny MLM run (s1, 40 steps of 8 x 32 tokens), trained once for this module."""
    return _train(tmp_path_factory.mktemp("mlm") / "run", data_root, MLM)


def _final(run_dir):
    state, _ = load_checkpoint(list_checkpoints(run_dir)[-1][1])
    return state


# ------------------------------------------------------------------------------ masking

def test_masking_follows_bert_proportions():
    """15% of positions chosen (round(0.15 T) per window), of those 80% [MASK], 10% a random
    token, 10% unchanged; targets only at the chosen positions."""
    vocab, T, rows = 128, 128, 512
    x = torch.randint(0, vocab, (rows, T), generator=torch.Generator().manual_seed(0))
    inputs, targets = mlm.MaskedLM(seed=0, mask=vocab).masks(7, x)
    chosen = targets != mlm.IGNORE
    assert (chosen.sum(1) == mlm.n_masked(T)).all() and mlm.n_masked(T) == 19
    assert abs(chosen.float().mean().item() - 0.15) < 0.005
    assert torch.equal(targets[chosen], x[chosen])
    assert torch.equal(inputs[~chosen], x[~chosen])  # positions not chosen are never touched
    n = chosen.sum().item()  # 9,728: one standard deviation of a share is <= 0.004
    masked = (inputs[chosen] == vocab).sum().item() / n
    kept = (inputs[chosen] == x[chosen]).sum().item() / n
    swapped = ((inputs[chosen] != x[chosen]) & (inputs[chosen] != vocab)).sum().item() / n
    assert abs(masked - 0.8) < 0.02
    # a random token equals the original one time in 128: kept 0.1 + 0.1/128, swapped less
    assert abs(kept - 0.1) < 0.015 and abs(swapped - 0.1) < 0.015
    assert inputs.max().item() <= vocab and (inputs[chosen & (inputs != vocab)] < vocab).all()


def test_masks_depend_on_seed_and_step_only():
    """The draw is a function of (train.seed, step): torch's global RNG does not enter,
    another step or seed draws other masks, and a data-parallel rank masks its rows of the
    global batch (get_batch's split: rows rank, rank + world, ...) as one process does."""
    x = torch.randint(0, 128, (8, 64), generator=torch.Generator().manual_seed(1))
    one = mlm.MaskedLM(seed=3, mask=128)
    torch.manual_seed(123)
    a = one.masks(5, x)
    torch.manual_seed(456)
    torch.rand(1000)
    b = one.masks(5, x)
    assert all(torch.equal(s, t) for s, t in zip(a, b))
    for other in (one.masks(6, x), mlm.MaskedLM(seed=4, mask=128).masks(5, x)):
        assert not torch.equal(a[1], other[1])
    for rank in (0, 1):
        part = mlm.MaskedLM(seed=3, mask=128, rank=rank, world=2).masks(5, x[rank::2])
        assert torch.equal(part[0], a[0][rank::2]) and torch.equal(part[1], a[1][rank::2])


def test_validation_masks_depend_on_the_window_alone():
    model = GPT(GPTConfig(vocab_size=129, n_layer=1, d_model=24, n_head=1, block_size=16,
                          causal=False))
    x = torch.randint(0, 128, (6, 16), generator=torch.Generator().manual_seed(2))
    whole = mlm.validation_loss(model, x, 0).item()
    halves = [mlm.validation_loss(model, x[:3], 0).item(),
              mlm.validation_loss(model, x[3:], 3).item()]
    assert whole == pytest.approx(sum(halves) / 2, rel=1e-6)  # batch size does not matter


# ------------------------------------------------------------------------------ the model

@pytest.mark.parametrize("pos", ["rotary", "learned"])
def test_encoder_sees_the_future_and_the_decoder_does_not(pos):
    """Changing the last token changes an encoder's output at position 0, never a decoder's;
    also in a training step on CPU (where decoders use the causal-only kernel)."""
    base = GPTConfig(vocab_size=33, n_layer=2, d_model=48, n_head=2, block_size=16, pos=pos)
    x = torch.randint(0, 32, (2, 16), generator=torch.Generator().manual_seed(0))
    later = x.clone()
    later[:, -1] = (later[:, -1] + 1) % 32
    for causal in (True, False):
        model = GPT(dataclasses.replace(base, causal=causal), seed=1)
        for train_mode in (False, True):
            model.train(train_mode)
            with torch.set_grad_enabled(train_mode):
                first = model(x)[0][:, 0]
                changed = model(later)[0][:, 0]
            assert torch.equal(first, changed) == causal, (causal, train_mode)
    encoder = GPT(dataclasses.replace(base, causal=False), seed=1).eval()
    with torch.no_grad():  # `last` (scoring's tail-only output layer) is the same numbers
        assert torch.allclose(encoder(x, last=5)[0], encoder(x)[0][:, -5:], atol=1e-6)


def test_encoder_config_adds_the_mask_id_and_keeps_decoder_checkpoints_as_they_were():
    rung = GPTConfig(vocab_size=128, n_layer=1, d_model=24, n_head=1)
    enc = mlm.encoder_config(rung)
    assert enc.vocab_size == 129 and mlm.mask_id(enc) == 128 and not enc.causal
    assert "causal" not in rung.to_dict()  # a decoder's model_config: the fields it always had
    assert enc.to_dict()["causal"] is False
    assert GPT(GPTConfig(**enc.to_dict())).cfg == enc
    counts = [GPT(c).num_scaling_params() for c in (rung, enc)]
    assert counts[1]["nonembed"] == counts[0]["nonembed"]
    assert counts[1]["embedding"] == counts[0]["embedding"] + rung.d_model


# ------------------------------------------------------------------------------ training

def test_tiny_mlm_run_trains(mlm_run):
    state = _final(mlm_run)
    assert state["model_config"]["causal"] is False and state["model_config"]["vocab_size"] == 129
    assert state["config"]["model"]["objective"] == "mlm"
    rows = pd.read_csv(mlm_run / "results.csv")
    assert set(rows["intervention"]) == {"mlm"}
    val = rows[rows.task == "val"].sort_values("step")["value"].tolist()
    # the masked-token loss starts near ln(129) = 4.86 and falls
    assert val[0] > 4.5 and val[-1] < val[0] - 0.8


def test_tiny_mlm_run_resumes_bit_exactly(mlm_run, tmp_path, data_root):
    """Cut back to its step-10 checkpoint and trained again, the run ends with the
    uninterrupted run's exact weights and validation losses."""
    cut = tmp_path / "run"
    shutil.copytree(mlm_run, cut)
    for step, path in list_checkpoints(cut):
        if step > 10:
            path.unlink()
            path.with_suffix(".json").unlink()
    assert list_checkpoints(cut)[-1][0] == 10
    _train(cut, data_root, MLM)
    ref, again = _final(mlm_run), _final(cut)
    assert again["step"] == ref["step"] == 40
    for name, tensor in ref["model"].items():
        assert torch.equal(tensor, again["model"][name]), name
    ref_val, val = (pd.read_csv(d / "results.csv").query("task == 'val'").set_index("step")
                    ["value"] for d in (mlm_run, cut))
    assert val.sort_index().tolist() == ref_val.sort_index().tolist()


def test_resuming_an_mlm_run_as_clm_is_refused(mlm_run, tmp_path, data_root):
    run = tmp_path / "run"
    shutil.copytree(mlm_run, run)
    with pytest.raises(ConfigError, match="started with model.objective='mlm', not 'clm'"):
        _train(run, data_root)


# ------------------------------------------------------------------------------ scoring

def _prepared(name: str, n: int):
    task = dataclasses.replace(get_tasks(name)[0], n=n)
    return prepare(task, TOK)


def test_fill_in_metrics_match_independent_loops(mlm_run):
    """Every metric in range, exact match = every position filled right, and PLL (each gold
    token masked in turn, the rest visible) and the fill probability recomputed here, one
    forward pass per masked input, equal the scorer's."""
    model, _ = load_model(list_checkpoints(mlm_run)[-1][1])
    mask = mlm.mask_id(model.cfg)
    prep = _prepared("addition_2d", 12)
    per = mlm_scoring.example_scores(model, TOK, prep, batch_size=5)
    block = model.cfg.block_size
    for ex, ctx, gold, s in zip(prep.examples, prep.contexts, prep.golds, per):
        assert set(s) == set(prep.task.metrics)
        assert s["exact_match"] in (0.0, 1.0) and 0 <= s["token_accuracy"] <= 1
        assert 0 <= s["edit_similarity"] <= 1 and 0 <= s["answer_prob"] <= 1
        assert s["answer_logprob"] <= 0
        assert s["exact_match"] == float(s["token_accuracy"] == 1.0)
        ctx = fit_context(ctx, len(gold), block)
        with torch.no_grad():
            pll = 0.0
            for i in range(len(gold)):
                seq = ctx + gold[:i] + [mask] + gold[i + 1:]
                logits = model(torch.tensor([seq]))[0][0, len(ctx) + i, :mask]
                pll += F.log_softmax(logits, -1)[gold[i]].item()
            logits = model(torch.tensor([ctx + [mask] * len(gold)]))[0][0, len(ctx):, :mask]
            fill = F.log_softmax(logits, -1)
        lp = fill[torch.arange(len(gold)), torch.tensor(gold)].sum().item()
        hits = (fill.argmax(-1) == torch.tensor(gold)).float().mean().item()
        assert s["answer_logprob"] == pytest.approx(pll / len(ex.answer), abs=1e-5)
        assert s["answer_prob"] == pytest.approx(np.exp(lp), rel=1e-4)
        assert s["token_accuracy"] == pytest.approx(hits)

    choice = _prepared("addition_mc_2d", 6)
    contexts = [fit_context(c, max(map(len, o)), block)
                for c, o in zip(choice.contexts, choice.choices)]
    plls = mlm_scoring.option_plls(model, contexts, choice.choices, batch_size=7)
    with torch.no_grad():
        for ctx, opts, got in zip(contexts, choice.choices, plls):
            for opt, value in zip(opts, got):
                want = sum(F.log_softmax(model(torch.tensor(
                    [ctx + opt[:i] + [mask] + opt[i + 1:]]))[0][0, len(ctx) + i, :mask], -1)
                    [opt[i]].item() for i in range(len(opt)))
                assert value == pytest.approx(want, abs=1e-5)
    scores = mlm_scoring.example_scores(model, TOK, choice)
    assert [s["accuracy"] for s in scores] == [
        float(int(np.argmax(p)) == g) for p, g in zip(plls, choice.gold_index)]


class _Oracle(torch.nn.Module):
    """An 'encoder' that fills every answer right except the last token of answers listed
    in `wrong`: exact match must then be 0 there and token accuracy (m - 1) / m."""

    def __init__(self, answers: dict[tuple, list[int]], wrong: set[tuple], block: int):
        super().__init__()
        self.cfg = GPTConfig(vocab_size=129, block_size=block, causal=False)
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # the scorer asks for a device
        self.answers, self.wrong = answers, wrong

    def forward(self, idx, last=0):
        B, T = idx.shape
        logits = torch.zeros(B, T, self.cfg.vocab_size)
        for b, row in enumerate(idx.tolist()):
            for split in range(T):
                gold = self.answers.get(tuple(row[:split]))
                if gold is not None and split + len(gold) == T:
                    for j, g in enumerate(gold):
                        bad = tuple(row[:split]) in self.wrong and j == len(gold) - 1
                        logits[b, split + j, (g + 1) % 128 if bad else g] = 30.0
        return (logits[:, -last:] if last else logits), None


def test_exact_match_implies_every_position_right():
    prep = _prepared("addition_3d", 10)
    answers = {tuple(c): g for c, g in zip(prep.contexts, prep.golds)}
    wrong = {tuple(c) for c in prep.contexts[::2]}
    per = mlm_scoring.example_scores(_Oracle(answers, wrong, 128), TOK, prep)
    for ctx, gold, s in zip(prep.contexts, prep.golds, per):
        if tuple(ctx) in wrong:
            assert s["exact_match"] == 0 and s["token_accuracy"] == pytest.approx(
                (len(gold) - 1) / len(gold))
            assert s["edit_similarity"] == pytest.approx(1 - 1 / len(gold))
        else:
            assert s["exact_match"] == s["token_accuracy"] == s["edit_similarity"] == 1.0
            assert s["answer_prob"] == pytest.approx(1.0, abs=1e-9)
            assert s["answer_logprob"] == pytest.approx(0.0, abs=1e-9)


def test_scaling_eval_scores_an_mlm_run_into_rows_tagged_mlm(mlm_run, tmp_path):
    from scaling.evaluate import evaluate_run

    run = tmp_path / "run"
    shutil.copytree(mlm_run, run)
    written = evaluate_run(run, tasks="addition_2d,addition_mc_2d", n=8, checkpoints="last",
                           progress=False)
    rows = pd.read_csv(run / "results.csv")
    probes = rows[rows.task != "val"]
    assert written == len(probes) == 5 + 2
    assert set(rows["intervention"]) == {"mlm"}
    assert set(probes.metric) == {"exact_match", "token_accuracy", "edit_similarity",
                                  "answer_logprob", "answer_prob", "accuracy", "gold_prob"}
    model, _ = load_model(list_checkpoints(run)[-1][1])
    direct = mlm_scoring.score_task(model, TOK, _prepared("addition_2d", 8))
    row = probes.set_index("metric")
    for metric, (mean, _) in direct.items():
        assert row.loc[metric, "value"] == pytest.approx(mean, rel=1e-9)


def test_encoders_are_refused_where_they_cannot_be_scored_or_mapped(mlm_run):
    from scaling.export import ExportError, check_mappable

    state = _final(mlm_run)
    with pytest.raises(ExportError, match="encoder"):
        check_mappable(state["model_config"])
    pytest.importorskip("lm_eval")
    from scaling.checkpoint import CheckpointError
    from scaling.lm_eval_backend import ScalingLM

    with pytest.raises(CheckpointError, match="MLM encoder"):
        ScalingLM(checkpoint=str(mlm_run), device="cpu")


# ------------------------------------------------------------------------------ config

def test_unknown_objective_is_a_one_line_error():
    with pytest.raises(ConfigError, match="must be clm or mlm") as err:
        load_config(None, ["--model.objective=bert"])
    assert "\n" not in str(err.value)
    proc = subprocess.run([sys.executable, "-m", "scaling.train", "--model.objective=bert"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: model.objective='bert': must be clm or mlm"]


def test_mlm_with_a_teacher_is_refused():
    with pytest.raises(ConfigError, match="objective=mlm cannot distil"):
        load_config(None, MLM + ["--train.teacher=runs/ladder/s6-00000000"])


def test_mlm_runs_carry_their_tag_and_a_directory_of_their_own():
    base, enc = load_config(None, []), load_config(None, MLM)
    assert base.intervention() is None and enc.intervention() == "mlm"
    assert base.run_dir() != enc.run_dir()
    assert isinstance(make_objective(base, None, torch.device("cpu")), CausalLM)


def test_mlm_sweep_is_the_default_ladder_as_encoders():
    from scaling.ladder_cli import PRESETS, SWEEPS_DIR
    from scaling.sweep import load_sweep, run_args

    ladder, enc = (load_sweep(SWEEPS_DIR / PRESETS[p]) for p in ("cpu", "mlm"))
    assert len(ladder.runs) == len(enc.runs)
    for a, b in zip(ladder.runs, enc.runs):
        ca, cb = load_config(None, run_args(a)), load_config(None, run_args(b))
        assert cb.model.objective == "mlm" and cb.run.root == "runs/mlm"
        cb.model.objective, cb.run.root = "clm", ca.run.root
        assert cb == ca


# ------------------------------------------------------------------------------ base ladder

# The TINY configuration's derived run directory, measured before `model.objective` existed:
# a base run's directory (its config hash) must not move when fields are added.
TINY_BASE_DIR = "s1-b0dc06b9"
# A decoder checkpoint's model_config: exactly the fields it held before encoders existed.
DECODER_FIELDS = {"vocab_size", "n_layer", "d_model", "n_head", "block_size", "pos", "dropout",
                  "mlp_ratio"}


def test_base_training_is_unchanged(tmp_path, data_root):
    """A base (clm) run: the same directory name and config as before the objective
    existed, checkpoints byte-identical whether model.objective=clm is given or not (with
    torch's global RNG, which checkpoints store, seeded alike), and weights equal to a plain
    next-token loop's (GPT, AdamW, get_lr, get_batch, model(x, y): the loop before
    objectives existed)."""
    from scaling.data.shards import get_batch, open_shard
    from scaling.train import get_lr, make_optimizer, make_plan

    cfg = load_config(None, TINY + [f"--run.data_root={data_root}"])
    assert cfg.run_dir().name == TINY_BASE_DIR
    runs = []
    for name, extra in (("default", []), ("explicit", ["--model.objective=clm"])):
        torch.manual_seed(0)
        run = _train(tmp_path / "run", data_root, extra)  # one path: checkpoints hold it
        runs.append(run.rename(tmp_path / name))
    for (step, a), (_, b) in zip(list_checkpoints(runs[0]), list_checkpoints(runs[1])):
        assert a.read_bytes() == b.read_bytes(), step
    assert (runs[0] / "config.yaml").read_bytes() == (runs[1] / "config.yaml").read_bytes()
    state = _final(runs[0])
    assert set(state["model_config"]) == DECODER_FIELDS
    assert "objective" not in state["config"]["model"]

    corpus = next(p.parent for p in data_root.rglob("manifest.json"))
    plan = make_plan(cfg, 128)
    model = GPT(plan.model_config, seed=cfg.train.seed)
    opt = make_optimizer(model, plan, cfg)
    shard = open_shard(corpus, "train")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as run.threads=1 trained them: the same float sums
    for step in range(plan.total_steps):
        for group in opt.param_groups:
            group["lr"] = get_lr(step, plan, cfg)
        x, y = get_batch(shard, step, plan.batch_size, plan.model_config.block_size)
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.set_num_threads(threads)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state["model"][name]), name
