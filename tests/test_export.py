"""`scaling export`: checkpoints as transformers GPT-NeoX directories, equal to our model.

Equality is measured on briefly trained runs (char and BPE tokenizers, two heads so the
fused qkv regrouping matters) and a random wider model: tokenizer ids, logits, greedy
pipeline output on every probe task, and lm-eval's own `hf` backend against the native
evaluator. Everything is offline: no download, tiny models trained here.
"""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("safetensors")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from scaling import export as ex  # noqa: E402
from scaling.checkpoint import list_checkpoints, load_model, save_checkpoint  # noqa: E402
from scaling.data.skills.base import Example  # noqa: E402
from scaling.data.tokenizer import get_tokenizer  # noqa: E402
from scaling.metrics import aggregate, cut_at_stops, generate_scores  # noqa: E402
from scaling import scoring  # noqa: E402
from scaling.model import GPT, GPTConfig  # noqa: E402
from scaling.scorer import prepare, score_task  # noqa: E402
from scaling.tasks import GENERATE, LINE_START, Task, get_tasks  # noqa: E402
from scaling.tasks.base import EXTRA_TOKENS, fit_context, generation_budget, room_needed  # noqa: E402

PER_TASK = 3  # probe instances per task in the greedy and tokenizer checks
from helpers import FixedTask  # noqa: E402


# ----------------------------------------------------------------------------- runs


def _train(root, *args):
    from scaling.config import load_config
    from scaling.train import train

    cfg = load_config(None, [f"--run.dir={root / 'run'}", f"--run.data_root={root / 'data'}",
                             "--run.threads=1", "--train.val_tokens=1024", *args])
    return train(cfg)


@pytest.fixture(scope="module")
def char_run(tmp_path_factory):
    """s2 (two heads of 24) trained for a few seconds on the char corpus."""
    root = tmp_path_factory.mktemp("char")
    return _train(root, "--model.size=s2", "--train.tokens=100000", "--train.batch_size=8",
                  "--data.train_tokens=110000", "--data.val_tokens=4000")


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory):
    """s1 widened to two heads, trained on a corpus tokenized by a byte-level BPE."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from scaling.data.corpus import CorpusSpec, generate_text

    root = tmp_path_factory.mktemp("bpe")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        generate_text(CorpusSpec(), "train", 20_000).split("\n"),
        trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                            show_progress=False))
    tok.save(str(root / "bpe.json"))
    return _train(root, "--model.size=s1", "--model.n_head=2", "--train.tokens=60000",
                  f"--data.tokenizer={root / 'bpe.json'}", "--data.train_tokens=70000",
                  "--data.val_tokens=4000")


def save_random(run_dir, steps=(0, 4), pos="rotary", **shape):
    """Untrained checkpoints (no data needed); weights scaled up so logits are spread and
    greedy choices are not near-ties."""
    cfg = GPTConfig(**{"vocab_size": 128, "n_layer": 2, "d_model": 32, "n_head": 4,
                       "block_size": 64, "mlp_ratio": 2, "pos": pos, **shape})
    for step in steps:
        model = GPT(cfg, seed=step)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.mul_(8.0 if p.dim() > 1 else 1.0)
                if name.endswith("bias"):
                    p.normal_(0.0, 0.1)  # LayerNorm biases, non-zero to test their mapping
        counts = model.num_scaling_params()
        save_checkpoint(run_dir, step, {"model": model.state_dict(),
                                        "model_config": dataclasses.asdict(cfg)},
                        {"run": "rand", "rung": "s2", "params": counts["total"],
                         "nonembed_params": counts["nonembed"], "tokens": 512 * step,
                         "flops": 1e6 * step, "tokenizer": "char"})
    return run_dir


@pytest.fixture(scope="module")
def runs(char_run, bpe_run, tmp_path_factory):
    """name -> (run directory, its last checkpoint exported)."""
    rand = save_random(tmp_path_factory.mktemp("rand") / "run")
    out = {}
    for name, run in (("char", char_run), ("bpe", bpe_run), ("random4h", rand)):
        dest = tmp_path_factory.mktemp("hf") / name
        assert ex.export_run(run, dest, log=lambda _: None) == [dest]
        out[name] = (run, dest)
    return out


def native(run):
    model, meta = load_model(list_checkpoints(run)[-1][1])
    return model, get_tokenizer(meta["tokenizer"])


def sample(per_task=PER_TASK) -> list[tuple[Task, object]]:
    """A few instances of every probe task."""
    return [(t, e) for t in get_tasks() for e in dataclasses.replace(t, n=per_task).examples()]


# ----------------------------------------------------------------------------- equality


@pytest.mark.parametrize("name", ["char", "bpe", "random4h"])
def test_tokenizer_gives_our_ids(runs, name):
    from transformers import AutoTokenizer

    run, hf_dir = runs[name]
    _, tok = native(run)
    hf = AutoTokenizer.from_pretrained(hf_dir)
    texts = []
    for task, e in sample():
        texts += [task.context(e), e.answer, *e.choices]
    for text in texts:
        ids = tok.encode(text)
        assert hf(text, verbose=False)["input_ids"] == ids, text
        assert hf.decode(ids) == tok.decode(ids) == text
    assert hf.eos_token_id == hf.pad_token_id == tok.eot_id


@pytest.mark.parametrize("name", ["char", "bpe", "random4h"])
def test_logits_equal(runs, name):
    from transformers import AutoModelForCausalLM

    run, hf_dir = runs[name]
    model, tok = native(run)
    hf = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    assert hf.config.use_parallel_residual is False and hf.config.tie_word_embeddings
    rows = [tok.encode(t.context(e) + e.answer)[: model.cfg.block_size] for t, e in sample(2)]
    width = max(map(len, rows))
    x = torch.tensor([r + [tok.eot_id] * (width - len(r)) for r in rows])
    with torch.inference_mode():
        diff = float((model(x)[0] - hf(input_ids=x).logits).abs().max())
    print(f"{name}: max |logit diff| {diff:.2e} over {x.numel()} positions")
    assert diff <= 1e-4
    info = json.loads((hf_dir / ex.PROVENANCE).read_text())
    assert info["verified"] and info["max_abs_logit_diff"] <= 1e-4
    assert info["step"] == list_checkpoints(run)[-1][0]


@pytest.mark.parametrize("name", ["char", "bpe", "random4h"])
def test_pipeline_greedy_equals_native(runs, name):
    from transformers import pipeline

    run, hf_dir = runs[name]
    model, tok = native(run)
    pipe = pipeline("text-generation", model=str(hf_dir))
    block, matched, total, nonempty = model.cfg.block_size, 0, 0, 0
    for task, e in sample():
        answer = len(tok.encode(e.answer)) if task.kind == GENERATE else max(
            len(tok.encode(c)) for c in e.choices)
        ctx = fit_context(tok.encode(task.context(e)), room_needed(GENERATE, answer, block),
                          block)
        text = tok.decode(ctx)
        assert tok.encode(text) == ctx  # the pipeline reads text: the same prompt tokens
        stop = scoring.stop_token_ids(tok, task.stop)
        ours = scoring.greedy_generate(model, [ctx], [answer + EXTRA_TOKENS], stop)[0]
        ours = cut_at_stops(tok.decode(ours), task.stop)
        budget = generation_budget(answer + EXTRA_TOKENS, block)
        out = pipe(text, do_sample=False, max_new_tokens=budget, return_full_text=False)
        theirs = cut_at_stops(out[0]["generated_text"], task.stop)
        total += 1
        matched += ours == theirs
        nonempty += bool(ours)
        assert theirs == ours, (task.id, text)
    print(f"{name}: greedy outputs equal on {matched}/{total} probe prompts "
          f"({nonempty} non-empty)")
    assert nonempty > 0


# ----------------------------------------------------------------------------- lm-eval hf


def echo_task(model, tok, n=16):
    """Gold answers from the model's own greedy rollouts, so exact matches and misses occur."""
    stop = scoring.stop_token_ids(tok, (LINE_START,))
    prompts = [e.prompt for e in get_tasks("addition_3d")[0].examples()[:n]]
    rolls = scoring.greedy_generate(model, [tok.encode(LINE_START + p) for p in prompts],
                                    [6] * n, stop)
    fixed = [Example("addition", 3, p, r if i % 2 == 0 and r else r[:1] + "#7")
             for i, (p, r) in enumerate(zip(prompts, map(tok.decode, rolls)))]
    return FixedTask("echo", skill="addition", difficulty=3, fixed=tuple(fixed))


def lm_eval_pair(tok, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's HF rule for a loglikelihood request (`TemplateLM._encode_pair`): trailing
    whitespace of the context moves into the continuation, the whole text is encoded once
    and split after the context's own tokens."""
    n_ws = len(context) - len(context.rstrip())
    if n_ws:
        context, continuation = context[:-n_ws], context[-n_ws:] + continuation
    whole, ctx = tok.encode(context + continuation), tok.encode(context)
    return ctx, whole[len(ctx):]


def scored_by_lm_eval_rule(model, tok, task) -> dict[str, float]:
    """Our model's metrics for `task` with every gold-token request tokenized by lm-eval's
    HF rule (the exported task's requests: one per gold token, see lm_eval_tasks/hooks.py).
    Where a context ends in whitespace (fewshot's "A: ") this differs from the native
    evaluator, which scores exactly the gold answer's own tokens after the context's."""
    block = model.cfg.block_size
    prep = prepare(task, tok)
    stop = scoring.stop_token_ids(tok, task.stop)
    per = []
    for e, ctx, gold in zip(prep.examples, prep.contexts, prep.golds):
        ctx = fit_context(ctx, room_needed(GENERATE, len(gold), block), block)
        text, pieces = tok.decode(ctx), [tok.decode([t]) for t in gold]
        pairs = [lm_eval_pair(tok, text + "".join(pieces[:i]), p) for i, p in enumerate(pieces)]
        scores = scoring.score_continuations(model, pairs)
        lps = [float(s.logprobs.sum()) for s in scores]
        greedy = [bool((s.argmax[: len(c)] == c).all()) for s, (_, c) in zip(scores, pairs)]
        out = scoring.greedy_generate(model, [ctx], [len(gold) + EXTRA_TOKENS], stop)[0]
        per.append(generate_scores(cut_at_stops(tok.decode(out), task.stop), e.answer, lps,
                                   greedy))
    return {m: v for m, (v, _) in aggregate(per).items()}


@pytest.mark.parametrize("name", ["char", "bpe"])
def test_lm_eval_hf_backend_matches_native(runs, name, tmp_path, monkeypatch):
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    from scaling.lm_eval_tasks import export as export_tasks
    from scaling.lm_eval_tasks import lm_eval_name

    run, hf_dir = runs[name]
    model, tok = native(run)
    tasks = [echo_task(model, tok)] + [dataclasses.replace(t, n=12) for t in get_tasks(
        "addition_mc_2d,addition_3d,copy_4,chain_2hop,icl_4shot,modular_7,fewshot_1shot")]
    ours = {t.id: {m: v for m, (v, _) in score_task(model, tok, prepare(t, tok)).items()}
            for t in tasks}
    if name == "char":
        assert 0 < ours["echo"]["exact_match"] < 1  # matches and misses both occur
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    names = export_tasks(tmp_path / "tasks", tasks=tasks, tokenizer=tok.name,
                         block_size=model.cfg.block_size)
    out = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={hf_dir},dtype=float32,device=cpu",
        tasks=names, batch_size=8,
        task_manager=TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False))
    worst = 0.0
    for task in tasks:
        res = out["results"][lm_eval_name(task)]
        # Every probe context but fewshot's ("... A: ") ends in a non-space character: there
        # lm-eval's HF path scores the native evaluator's tokens; fewshot's it scores as
        # lm-eval tokenizes them (the space moved into the answer, see lm_eval_pair).
        expect = (scored_by_lm_eval_rule(model, tok, task) if task.name == "fewshot"
                  else ours[task.id])
        for metric in task.metrics:
            theirs = res[f"{metric},none"]
            if metric == "answer_prob":
                assert theirs == pytest.approx(expect[metric], rel=1e-5, abs=1e-12)
            elif metric in ("answer_logprob", "gold_prob"):
                worst = max(worst, abs(theirs - expect[metric]))
                assert theirs == pytest.approx(expect[metric], abs=1e-4), (task.id, metric)
            else:  # exact match, accuracy, token accuracy, edit similarity: equal
                assert theirs == pytest.approx(expect[metric], abs=1e-12), (task.id, metric)
    moved = (out["results"]["probe_fewshot_1shot"]["answer_logprob,none"]
             - ours["fewshot_1shot"]["answer_logprob"])
    print(f"{name}: lm-eval hf vs native: exact match equal on {len(tasks)} tasks, max "
          f"|log-prob diff| {worst:.1e}; fewshot's answer_logprob {moved:+.3f} nats apart "
          "(lm-eval moves the context's trailing space into the answer)")
    assert abs(moved) > 1e-3  # the moved space does show


# ----------------------------------------------------------------------------- --all, CLI


def test_all_writes_one_dir_per_checkpoint(char_run, tmp_path, capsys):
    out = tmp_path / "hf"
    assert ex.main([str(char_run), "--all", "--out", str(out), "--no-verify"]) == 0
    steps = [s for s, _ in list_checkpoints(char_run)]
    assert len(steps) > 3
    assert sorted(p.name for p in out.iterdir()) == sorted(f"step{s}" for s in steps)
    for s in steps:
        files = {p.name for p in (out / f"step{s}").iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                "generation_config.json", ex.PROVENANCE} <= files
        assert json.loads((out / f"step{s}" / ex.PROVENANCE).read_text())["step"] == s
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no staging left behind
    capsys.readouterr()
    # Again: every checkpoint is already exported, nothing is rewritten.
    mtime = (out / f"step{steps[-1]}" / "model.safetensors").stat().st_mtime_ns
    assert ex.main([str(char_run), "--all", "--out", str(out)]) == 0
    assert "exported 0 checkpoint(s)" in capsys.readouterr().out
    assert (out / f"step{steps[-1]}" / "model.safetensors").stat().st_mtime_ns == mtime
    # One step, by Pythia's name, into its own directory, verified.
    one = tmp_path / "one"
    assert ex.main([str(char_run), "--step", f"step{steps[1]}", "--out", str(one)]) == 0
    info = json.loads((one / ex.PROVENANCE).read_text())
    assert info["step"] == steps[1] and info["verified"]
    capsys.readouterr()
    refused(capsys, [str(char_run), "--all", "--out", str(one)], "holds the export of one")


def refused(capsys, args, *words):
    """Run `scaling export ARGS`, expect exit 2 and one `error:` line containing `words`."""
    from scaling.cli import main

    code = main(["export", *args])
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    for w in words:
        assert w in err[0], err[0]
    return err[0]


@pytest.mark.parametrize("pos", ["learned", "sinusoidal"])
def test_absolute_positions_are_refused(tmp_path, capsys, pos):
    run = save_random(tmp_path / "run", pos=pos)
    refused(capsys, [str(run), "--out", str(tmp_path / "out")], f"{pos} absolute positions",
            "GPT-NeoX")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing written


def test_bad_requests_are_refused(tmp_path, capsys):
    run = save_random(tmp_path / "run")
    out = str(tmp_path / "out")
    refused(capsys, [str(tmp_path / "nope"), "--out", out], "no such run directory")
    refused(capsys, [str(run), "--step", "7", "--out", out], "no checkpoint at step 7",
            "(steps: 0, 4)")
    refused(capsys, [str(run), "--step", "latest", "--out", out], "expected N or stepN",
            "(steps: 0, 4)")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    refused(capsys, [str(run), "--out", str(tmp_path / "mine")], "not a `scaling export`")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    small = save_random(tmp_path / "small", vocab_size=100)  # fewer embeddings than ids
    refused(capsys, [str(small), "--out", out], "tokenizer has 128 ids but the model only 100")
    assert not (tmp_path / "out").exists()


def test_tokenizer_file_must_be_the_training_one(bpe_run, tmp_path, capsys):
    meta = json.loads(list_checkpoints(bpe_run)[-1][1].with_suffix(".json").read_text())
    changed = tmp_path / "bpe.json"
    changed.write_text(open(meta["tokenizer"]).read() + "\n")
    out = str(tmp_path / "out")
    refused(capsys, [str(bpe_run), "--tokenizer", str(changed), "--out", out],
            "differs from the one the corpus was tokenized with")
    refused(capsys, [str(bpe_run), "--tokenizer", str(tmp_path / "gone.json"), "--out", out],
            "gone.json not found")
    assert not (tmp_path / "out").exists()


def test_unmappable_weights_and_a_failed_check_write_nothing(tmp_path, capsys, monkeypatch):
    run = save_random(tmp_path / "run", steps=(0,))
    # A weight the mapping does not know (a model changed since this module was written).
    state = torch.load(list_checkpoints(run)[0][1], weights_only=True)
    state["model"]["blocks.0.attn.qk_norm.weight"] = torch.ones(8)
    save_checkpoint(tmp_path / "odd", 0, state, {"tokenizer": "char"})
    refused(capsys, [str(tmp_path / "odd"), "--out", str(tmp_path / "o1")],
            "unmapped: blocks.0.attn.qk_norm.weight")
    # Without the per-head regrouping of the fused qkv rows the logits differ: the check
    # after writing refuses the export (and so proves the regrouping is needed).
    real = ex.neox_weights

    def unregrouped(state, cfg):
        out = real(state, cfg)
        for i in range(cfg.n_layer):
            out[f"gpt_neox.layers.{i}.attention.query_key_value.weight"] = \
                state[f"blocks.{i}.attn.qkv.weight"].clone()
        return out

    monkeypatch.setattr(ex, "neox_weights", unregrouped)
    refused(capsys, [str(run), "--all", "--out", str(tmp_path / "o2")], "logits differ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd", "run"]


def test_help_teaches(capsys):
    from scaling.cli import main

    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = capsys.readouterr().out
    assert "--all" in text and "stepN" in text and "pipeline" in text and "--model hf" in text
    main(["--help"])
    assert "export" in capsys.readouterr().out


@pytest.mark.parametrize("field, value, words", [
    ("prompt_len", 4, "soft prompt of 4 vectors"),
    ("causal", False, "MLM encoder"),
])
def test_interventions_without_a_gpt_neox_form_are_refused_in_one_line(field, value, words):
    from scaling.export import ExportError, check_mappable

    config = {"vocab_size": 128, "n_layer": 1, "d_model": 24, "n_head": 1, "block_size": 128,
              "pos": "rotary", "dropout": 0.0, "mlp_ratio": 4, field: value}
    with pytest.raises(ExportError, match=words) as info:
        check_mappable(config)
    assert "\n" not in str(info.value)
    check_mappable({**config, field: {"prompt_len": 0, "causal": True}[field]})  # defaults map
