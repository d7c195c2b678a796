"""lm-eval integration: the `scaling` model, the exported probe tasks, `scaling lm-eval`."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import textwrap

import pandas as pd
import pytest
import torch

pytest.importorskip("lm_eval")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lm_eval  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

import scaling.tasks as registry  # noqa: E402
from scaling import evaluate as ev  # noqa: E402
from scaling import scoring  # noqa: E402
from scaling.checkpoint import list_checkpoints, load_model, save_checkpoint  # noqa: E402
from scaling.data.skills.base import Example  # noqa: E402
from scaling.data.tokenizer import get_tokenizer  # noqa: E402
from scaling import lm_eval_backend as backend  # noqa: E402
from scaling.lm_eval_backend import (  # noqa: E402
    ModelArgsError, ScalingLM, cli_main, resolve_checkpoint)
from scaling.lm_eval_tasks import TAG, export, lm_eval_name  # noqa: E402
from scaling.model import GPT, GPTConfig  # noqa: E402
from scaling.scorer import prepare  # noqa: E402
from scaling.tasks import LINE_START, get_tasks  # noqa: E402

from helpers import FixedTask  # noqa: E402

TOK = get_tokenizer("char")


def save_untrained(run_dir, step=0, seed=0, block_size=128):
    cfg = GPTConfig(vocab_size=TOK.vocab_size, n_layer=1, d_model=24, n_head=2,
                    block_size=block_size)
    model = GPT(cfg, seed=seed)
    counts = model.num_scaling_params()
    save_checkpoint(run_dir, step, {"model": model.state_dict(),
                                    "model_config": dataclasses.asdict(cfg)},
                    {"run": "tiny", "rung": "s1", "params": counts["total"],
                     "nonembed_params": counts["nonembed"], "tokens": 0, "flops": 0.0,
                     "tokenizer": "char"})
    return run_dir


@pytest.fixture(scope="module")
def trained(briefly_trained_run):
    """A briefly trained s1 checkpoint: it emits digits and line breaks, so some greedy
    outputs match gold answers built from its own rollouts."""
    run_dir = briefly_trained_run
    return run_dir, list_checkpoints(run_dir)[-1]


def echo_task(model, n=24):
    """Gold answers from the model's own greedy rollouts: some match, some diverge."""
    stop = scoring.stop_token_ids(TOK, (LINE_START,))
    prompts = [e.prompt for e in get_tasks("addition_3d")[0].examples()[:n]]
    rollouts = scoring.greedy_generate(model, [TOK.encode(LINE_START + p) for p in prompts],
                                       [10] * n, stop)
    fixed = []
    for i, (prompt, roll) in enumerate(zip(prompts, map(TOK.decode, rollouts))):
        answer = roll if i % 2 == 0 and roll else (roll[:1] + "#7")
        fixed.append(Example("addition", 3, prompt, answer))
    return FixedTask("echo", skill="addition", difficulty=3, fixed=tuple(fixed))


def native_scores(run_dir, step, tasks):
    ev.evaluate_run(run_dir, tasks=tasks, progress=False)
    df = pd.read_csv(run_dir / "results.csv")
    df = df[df.step == step]
    return {(r.task, r.shots, r.metric): r.value for r in df.itertuples()}


def lm_eval_scores(ckpt_path, tasks, folder, batch_size=16, block_size=128):
    names = export(folder, tasks=tasks, block_size=block_size)
    tm = TaskManager(include_path=str(folder), include_defaults=False)
    out = lm_eval.simple_evaluate(model="scaling",
                                  model_args=f"checkpoint={ckpt_path},batch_size={batch_size}",
                                  tasks=names, task_manager=tm)
    return {name: out["results"][name] for name in names}


# answer_prob = exp(sum of the gold tokens' log-probs); both paths score each token in fp32
# but in differently shaped batches.
ANSWER_PROB_RTOL = 1e-6


def assert_same(native, via_lm_eval, tasks):
    for task in tasks:
        res = via_lm_eval[lm_eval_name(task)]
        for metric in task.metrics:
            ours, theirs = native[(task.name, task.shots_column, metric)], res[f"{metric},none"]
            if metric == "answer_prob":
                # exp(summed log-probs): a relative error, however small the probability
                assert theirs == pytest.approx(ours, rel=ANSWER_PROB_RTOL, abs=0), (task.id,
                                                                                  metric)
                continue
            # Log-probabilities within 1e-4; counts equal (up to the order of summation).
            tol = 1e-4 if metric in ("answer_logprob", "gold_prob") else 1e-12
            assert theirs == pytest.approx(ours, abs=tol), (task.id, metric)


# ----------------------------------------------------------------------------- agreement


def test_model_is_registered():
    from lm_eval.api.registry import get_model

    assert get_model("scaling") is ScalingLM
    # lm-eval's own models stay known with ours registered (its registry loads them only
    # when empty at the first lookup)
    assert get_model("hf").__name__ == "HFLM"


def test_native_and_lm_eval_scores_agree(trained, tmp_path, monkeypatch):
    run_dir, (step, ckpt) = trained
    model, _ = load_model(ckpt)
    echo = echo_task(model)
    tasks = [echo] + [dataclasses.replace(t, n=20) for t in
                      get_tasks("addition_mc_2d,fewshot_4shot,icl_8shot,copy_4,chain_2hop")]
    native = native_scores(run_dir, step, tasks)
    assert 0 < native[("echo", 0, "exact_match")] < 1  # matches and misses both occur
    monkeypatch.chdir(tmp_path)  # the exported tasks must not depend on the cwd
    via_lm_eval = lm_eval_scores(ckpt, tasks, tmp_path / "tasks")
    assert_same(native, via_lm_eval, tasks)


def test_char_flags_are_the_teacher_forced_argmax_for_the_char_tokenizer(trained):
    # token_accuracy is defined per gold character on text (scaling/metrics.py); with one
    # token per character the teacher-forced argmax gives the same flags in one pass.
    run_dir, (_, ckpt) = trained
    model, _ = load_model(ckpt)
    prep = prepare(echo_task(model), TOK)
    tf, _ = scoring.teacher_force_and_decode(model, prep.contexts, prep.golds,
                                             scoring.stop_token_ids(TOK, ("\n",)))
    fast = [list(s.argmax[: len(g)] == g) for s, g in zip(tf, prep.golds)]
    text = scoring.char_greedy_flags(model, TOK, prep.contexts, [e.answer for e in prep.examples])
    assert [list(map(bool, f)) for f in fast] == text
    assert 0 < sum(map(sum, text)) < sum(map(len, text))  # hits and misses both occur


def test_bpe_checkpoint_native_and_lm_eval_agree(tmp_path):
    # A checkpoint of ours with a BPE tokenizer: the evaluator asks one decoding step per
    # gold character for token_accuracy, the lm-eval tasks one generate_until request.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    lines = [LINE_START + e.prompt + e.answer for e in get_tasks("addition_2d")[0].examples()]
    bpe.train_from_iterator(lines, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe.save(str(tmp_path / "bpe.json"))
    tok = get_tokenizer(str(tmp_path / "bpe.json"))
    cfg = GPTConfig(vocab_size=tok.vocab_size, n_layer=1, d_model=24, n_head=2, block_size=64)
    model = GPT(cfg, seed=3)
    counts = model.num_scaling_params()
    save_checkpoint(tmp_path / "run", 0, {"model": model.state_dict(),
                                          "model_config": dataclasses.asdict(cfg)},
                    {"run": "bpe", "rung": "s1", "params": counts["total"],
                     "nonembed_params": counts["nonembed"], "tokens": 0, "flops": 0.0,
                     "tokenizer": str(tmp_path / "bpe.json")})
    # Gold answers that start like the model's own greedy rollouts, so some characters hit.
    prompts = [e.prompt for e in get_tasks("addition_2d")[0].examples()[:12]]
    rolls = scoring.greedy_generate(model, [tok.encode(LINE_START + p) for p in prompts],
                                    [3] * 12, scoring.stop_token_ids(tok, ()))
    fixed = tuple(Example("addition", 2, p, (tok.decode(r) or "5")[:3] + ("" if i % 2 else "9"))
                  for i, (p, r) in enumerate(zip(prompts, rolls)))
    task = FixedTask("echo", skill="addition", difficulty=2, fixed=fixed)
    # At the answer's token boundaries the teacher-forced argmax stands in for a decoding
    # step (the same tokens in); the flags are those of decoding at every character.
    prep = prepare(task, tok)
    tf, _ = scoring.teacher_force_and_decode(model, prep.contexts, prep.golds, {tok.eot_id})
    answers = [e.answer for e in fixed]
    forced = [scoring.ForcedAnswer(g, s) for g, s in zip(prep.golds, tf)]
    assert scoring.char_greedy_flags(model, tok, prep.contexts, answers, forced=forced) == \
        scoring.char_greedy_flags(model, tok, prep.contexts, answers)
    native = native_scores(tmp_path / "run", 0, [task])
    assert 0 < native[("echo", 0, "token_accuracy")] < 1
    names = export(tmp_path / "tasks", tasks=[task], tokenizer=str(tmp_path / "bpe.json"),
                   block_size=64)
    out = lm_eval.simple_evaluate(
        model="scaling", model_args=f"checkpoint={resolve_checkpoint(tmp_path / 'run')}",
        tasks=names, task_manager=TaskManager(include_path=str(tmp_path / "tasks"),
                                              include_defaults=False))
    assert_same(native, {names[0]: out["results"][names[0]]}, [task])


def test_a_task_defined_here_flows_through(tmp_path, monkeypatch):
    # One new file plus one registry line: registry -> evaluate -> rows -> lm-eval export.
    pkg = tmp_path / "my_probes"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "reverse.py").write_text(textwrap.dedent('''
        """Reverse a letter string: a probe whose instances come from its own generator."""
        import random
        from dataclasses import dataclass

        from scaling.data.skills.base import Example
        from scaling.tasks import Task


        @dataclass(frozen=True)
        class ReverseTask(Task):
            def examples(self):
                rng = random.Random(self.seed)
                out = []
                for _ in range(self.n):
                    s = "".join(rng.choice("abcdefgh") for _ in range(self.difficulty))
                    out.append(Example("reverse", self.difficulty, f"R {s}|", s[::-1]))
                return out


        TASKS = [ReverseTask(f"reverse_{k}", skill="reverse", difficulty=k, n=12)
                 for k in (3, 5)]
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "TASK_MODULES", [*registry.TASK_MODULES, "my_probes.reverse"])
    run = save_untrained(tmp_path / "run")
    # registry
    assert [t.id for t in get_tasks("reverse_3,reverse_5")] == ["reverse_3", "reverse_5"]
    # native evaluator -> result rows (the default task list now includes it)
    assert ev.main([str(run), "--tasks", "reverse_3,reverse_5,copy_4", "--no-progress"]) == 0
    df = pd.read_csv(run / "results.csv")
    assert set(df.task) == {"reverse_3", "reverse_5", "copy_4"}
    assert (df[df.task == "reverse_5"].n == 12).all()
    assert "chance" not in df or df[df.task == "reverse_5"].chance.isna().all()  # no floor
    # lm-eval export of the whole registry includes it, and lm-eval scores it the same
    names = export(tmp_path / "tasks")
    assert "probe_reverse_5" in names and (tmp_path / "tasks" / "probe_reverse_5.yaml").is_file()
    native = {(r.task, r.shots, r.metric): r.value for r in df.itertuples()}
    tasks = get_tasks("reverse_3,reverse_5")
    assert_same(native, lm_eval_scores(resolve_checkpoint(run), tasks, tmp_path / "t2"), tasks)
    for mod in ("my_probes.reverse", "my_probes"):
        __import__("sys").modules.pop(mod, None)


# ----------------------------------------------------------------------------- export


def test_export_writes_local_tasks(tmp_path):
    tasks = [dataclasses.replace(t, n=5) for t in get_tasks("addition_2d,addition_mc_2d,icl")]
    names = export(tmp_path, tasks=tasks)
    assert names == [lm_eval_name(t) for t in tasks]
    assert names[:2] == ["probe_addition_2d", "probe_addition_mc_2d"]
    assert "probe_icl_8shot" in names
    text = (tmp_path / "probe_addition_2d.yaml").read_text()
    assert str((tmp_path / "probe_addition_2d.jsonl").resolve()) in text
    assert TAG in text and "!function" in text
    docs = [json.loads(x) for x in (tmp_path / "probe_addition_2d.jsonl").read_text().split("\n")
            if x]
    ex = tasks[0].examples()
    assert [d["answer"] for d in docs] == [e.answer for e in ex]
    assert docs[0]["context"] == LINE_START + ex[0].prompt
    assert "answer_pieces" not in docs[0]  # scored per character of `answer` (text)
    assert docs[0]["max_gen_toks"] == len(ex[0].answer) + 2
    mc = json.loads((tmp_path / "probe_addition_mc_2d.jsonl").read_text().split("\n")[0])
    assert mc["choices"][mc["gold"]] == mc["answer"]
    # Re-exporting fewer tasks removes the ones that are gone.
    export(tmp_path, tasks=tasks[:1])
    assert not (tmp_path / "probe_addition_mc_2d.yaml").exists()
    manifest = json.loads((tmp_path / "MANIFEST.json").read_text())
    assert manifest["tasks"] == ["probe_addition_2d"]


# ----------------------------------------------------------------------------- backend


def _requests(kind, args):
    return [Instance(request_type=kind, doc={}, arguments=a, idx=0) for a in args]


def test_backend_requests(tmp_path):
    run = save_untrained(tmp_path / "run", block_size=32)
    lm = ScalingLM.create_from_arg_string(f"checkpoint={run}",
                                          {"batch_size": 1, "device": "cuda:0"})
    assert lm.batch_size == scoring.DEFAULT_BATCH_SIZE  # lm-eval's default 1 does not override
    assert ScalingLM.create_from_arg_string(f"checkpoint={run},batch_size=8",
                                            {"batch_size": 4}).batch_size == 8
    assert ScalingLM.create_from_arg_obj({"checkpoint": str(run)}, {"batch_size": "auto"}
                                         ).batch_size == scoring.DEFAULT_BATCH_SIZE
    model = lm.model
    # loglikelihood: empty context is eot; is_greedy agrees with the argmax
    (ll, greedy), (ll2, _), (ll3, g3) = lm.loglikelihood(
        _requests("loglikelihood", [("", "ab"), ("xy", " z"), ("q", "")]))
    with torch.inference_mode():
        logp = torch.log_softmax(model(torch.tensor([[0] + TOK.encode("ab")]))[0][0], -1)
    ids = TOK.encode("ab")
    assert ll == pytest.approx(float(logp[0, ids[0]] + logp[1, ids[1]]), abs=1e-5)
    assert greedy == (int(logp[0].argmax()) == ids[0] and int(logp[1].argmax()) == ids[1])
    assert (ll3, g3) == (0.0, True)
    # loglikelihood_rolling: lm-eval's disjoint windows (each fits the block), every token
    # scored once, each window by one plain forward pass
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    text = "the quick brown fox jumps over the lazy dog " * 3
    (rolling,) = lm.loglikelihood_rolling(_requests("loglikelihood_rolling", [(text,)]))
    total, scored = 0.0, 0
    with torch.inference_mode():
        for ctx, pred in map(make_disjoint_window, get_rolling_token_windows(
                TOK.encode(text), prefix_token=0, max_seq_len=31, context_len=1)):
            seq = list(ctx) + list(pred)
            assert len(seq) <= 32
            lp = torch.log_softmax(model(torch.tensor([seq]))[0][0], -1)
            total += sum(float(lp[len(ctx) - 1 + j, t]) for j, t in enumerate(pred))
            scored += len(pred)
    assert scored == len(text)
    assert rolling == pytest.approx(total, abs=1e-3)
    # generate_until: greedy, cut at the until strings, budget capped at half the block
    outs = lm.generate_until(_requests("generate_until", [
        ("A 12+34=", {"until": ["\n"], "max_gen_toks": 5}),
        ("A 12+34=", {"until": ["zz", "\n"], "max_gen_toks": 500, "do_sample": False}),
        ("", {"until": "\n"})]))
    stop = scoring.stop_token_ids(TOK, ["\n"])
    ref = scoring.greedy_generate(model, [TOK.encode("A 12+34=")], [5], stop)[0]
    assert outs[0] == TOK.decode(ref)
    assert len(outs[1]) <= 16 and "zz" not in outs[1]
    assert isinstance(outs[2], str)
    # Text outside the char alphabet is scored, not refused.
    assert math.isfinite(lm.loglikelihood(_requests("loglikelihood", [("héllo", " wörld")]))[0][0])


def test_standard_lm_eval_task_types_run(tmp_path, monkeypatch):
    # Plain lm-eval YAMLs (HF `json` datasets, built-in metrics), as a user's own or a
    # standard task would be: multiple choice, rolling log-likelihood and generation.
    run = save_untrained(tmp_path / "run")
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"q": f"{a}+{a}=", "a": str(2 * a), "opts": [
        str(2 * a), str(2 * a + 1)], "text": f"the number {a} is small"}) + "\n"
        for a in range(6)))
    common = f"dataset_path: json\ndataset_kwargs:\n  data_files: {{test: {data}}}\n" \
             "test_split: test\n"
    (tmp_path / "std").mkdir()
    (tmp_path / "std" / "mc.yaml").write_text(
        "task: std_mc\n" + common + "output_type: multiple_choice\ndoc_to_text: q\n"
        "doc_to_choice: opts\ndoc_to_target: 0\nmetric_list:\n  - metric: acc\n")
    (tmp_path / "std" / "ppl.yaml").write_text(
        "task: std_ppl\n" + common + "output_type: loglikelihood_rolling\n"
        "doc_to_text: ''\ndoc_to_target: text\nmetric_list:\n  - metric: word_perplexity\n")
    (tmp_path / "std" / "gen.yaml").write_text(
        "task: std_gen\n" + common + "output_type: generate_until\ndoc_to_text: q\n"
        "doc_to_target: a\ngeneration_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: 4\n"
        "metric_list:\n  - metric: exact_match\n")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    tm = TaskManager(include_path=str(tmp_path / "std"), include_defaults=False)
    out = lm_eval.simple_evaluate(model="scaling", model_args=f"checkpoint={run}",
                                  tasks=["std_mc", "std_ppl", "std_gen"], task_manager=tm)
    res = out["results"]
    assert 0.0 <= res["std_mc"]["acc,none"] <= 1.0
    assert res["std_ppl"]["word_perplexity,none"] > 1.0
    assert res["std_gen"]["exact_match,none"] == 0.0


def test_resolve_checkpoint(tmp_path):
    run = save_untrained(tmp_path / "run")
    save_untrained(run, step=5)
    last = list_checkpoints(run)[-1][1]
    assert resolve_checkpoint(run) == last == resolve_checkpoint(run / "checkpoints")
    assert resolve_checkpoint(last) == last
    with pytest.raises(Exception, match="no such checkpoint"):
        resolve_checkpoint(tmp_path / "nope")
    # revision=stepN, as Pythia names its checkpoints: from the run or any of its files.
    first = list_checkpoints(run)[0][1]
    assert resolve_checkpoint(run, "step5") == resolve_checkpoint(run, 5) == last
    assert resolve_checkpoint(run, "step0") == resolve_checkpoint(last, "step0") == first
    assert ScalingLM(checkpoint=str(run), revision="step0").checkpoint == first
    with pytest.raises(Exception, match=r"no checkpoint at step 7 \(steps: 0, 5\)"):
        resolve_checkpoint(run, "step7")
    with pytest.raises(Exception, match="expected stepN"):
        resolve_checkpoint(run, "latest")


# ----------------------------------------------------------------------------- CLI


def test_cli_export_and_errors(tmp_path, capsys):
    assert cli_main(["export", str(tmp_path / "out"), "--tasks", "copy_4,icl_2shot"]) == 0
    assert (tmp_path / "out" / "probe_copy_4.yaml").is_file()
    assert (tmp_path / "out" / "probe_icl_2shot.jsonl").is_file()
    assert cli_main(["export", str(tmp_path / "x"), "--tasks", "copy_99"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "copy_99" in err and "\n" not in err


def test_cli_passes_through_to_lm_eval(tmp_path, monkeypatch, capsys):
    run = save_untrained(tmp_path / "run")
    monkeypatch.setenv("SCALING_LM_EVAL_TASKS", str(tmp_path / "auto"))
    monkeypatch.setattr(registry, "TASK_MODULES", ["copy", "icl"])  # keep the export small
    code = cli_main(["run", "--model", "scaling", "--model_args", f"checkpoint={run}",
                     "--tasks", "probe_copy_4,probe_icl_4shot", "--limit", "3",
                     "--output_path", str(tmp_path / "results")])
    assert code == 0
    out = capsys.readouterr().out
    assert "probe_copy_4" in out and "exact_match" in out
    assert (tmp_path / "auto" / "char-block128" / "probe_icl_8shot.yaml").is_file()  # exported
    assert list((tmp_path / "results").rglob("results_*.json"))


def test_cli_run_errors_are_one_line(tmp_path, monkeypatch, capsys):
    """A missing or corrupted checkpoint and an unknown task name: one line, exit 2."""
    run = save_untrained(tmp_path / "run")
    monkeypatch.setenv("SCALING_LM_EVAL_TASKS", str(tmp_path / "auto"))
    monkeypatch.setattr(registry, "TASK_MODULES", ["copy"])  # keep the export small

    def one_line_error(args):
        code = cli_main(["run", "--model", "scaling", *args])
        err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
        assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
        return err[0]

    assert "no such checkpoint" in one_line_error(
        ["--model_args", f"checkpoint={tmp_path / 'nope'}", "--tasks", "probe_copy_4"])
    assert "no checkpoint at step 7" in one_line_error(
        ["--model_args", f"checkpoint={run},revision=step7", "--tasks", "probe_copy_4"])
    ckpt = list_checkpoints(run)[-1][1]
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    assert "corrupted" in one_line_error(
        ["--model_args", f"checkpoint={ckpt}", "--tasks", "probe_copy_4"])
    run = save_untrained(tmp_path / "run2")
    err = one_line_error(["--model_args", f"checkpoint={run}", "--tasks", "probe_copy_99"])
    assert "probe_copy_99" in err and TAG in err


# ----------------------------------------------------------------------------- model_args


@pytest.mark.parametrize("args, message", [
    ("revison=step0", "unknown model_args 'revison' (did you mean 'revision'?)"),
    ("pretrained=x", "unknown model_args 'pretrained' (did you mean 'checkpoint'?)"),
    ("dtype=float16", "unknown model_args 'dtype'; the scaling model takes checkpoint, "
                      "revision, batch_size, max_batch_size, device, threads"),
    ("batch_size=big", "batch_size must be a whole number or auto, got 'big'"),
    ("max_batch_size=0", "max_batch_size must be >= 1"),
])
def test_bad_model_args_are_refused(tmp_path, args, message):
    """lm-eval's HFLM refuses arguments it does not take; so does the scaling model (a
    misspelt revision used to score the last checkpoint without a word)."""
    run = save_untrained(tmp_path / "run")
    with pytest.raises(ModelArgsError) as info:
        ScalingLM.create_from_arg_string(f"checkpoint={run},{args}")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_missing_checkpoint_is_refused():
    for call in (lambda: ScalingLM.create_from_arg_string("batch_size=4"),
                 lambda: ScalingLM.create_from_arg_obj({}, {"batch_size": 1}),
                 lambda: ScalingLM()):
        with pytest.raises(ModelArgsError, match="needs model_args checkpoint=PATH"):
            call()


def test_cli_model_args_errors_are_one_line(tmp_path, monkeypatch, capsys):
    run = save_untrained(tmp_path / "run")
    monkeypatch.setenv("SCALING_LM_EVAL_TASKS", str(tmp_path / "auto"))

    def one_line_error(args):
        code = cli_main(["run", "--model", "scaling", *args, "--tasks", "probe_copy_4"])
        err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
        assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
        return err[0]

    assert "'revison'" in one_line_error(["--model_args", f"checkpoint={run},revison=step0"])
    # lm-eval also takes model_args as separate words
    assert "'revison'" in one_line_error(["--model_args", f"checkpoint={run}", "revison=0"])
    assert "needs model_args checkpoint=PATH" in one_line_error(["--model_args", "device=cpu"])
    assert "needs model_args checkpoint=PATH" in one_line_error([])


# ----------------------------------------------------------------------------- batch size


def test_auto_batch_size_on_cpu_follows_memory(tmp_path, monkeypatch):
    run = save_untrained(tmp_path / "run")
    lm = ScalingLM(checkpoint=str(run), batch_size="auto", device="cpu")
    assert lm.batch_size == scoring.DEFAULT_BATCH_SIZE  # a CPU gains nothing past it
    assert ScalingLM(checkpoint=str(run), batch_size="auto:4", max_batch_size=40,
                     device="cpu").batch_size == 32  # a power of two up to max_batch_size
    # Little memory left: as many rows as fit in half of it.
    per_row = backend.row_bytes(lm.model.cfg)
    monkeypatch.setattr(backend, "_available_memory", lambda: 2 * 10 * per_row)
    assert ScalingLM(checkpoint=str(run), batch_size="auto", device="cpu").batch_size == 8
    assert ScalingLM(checkpoint=str(run), batch_size=64, device="cpu").batch_size == 64


def test_auto_batch_size_halves_on_out_of_memory():
    tried = []

    def probe(size):
        tried.append(size)
        if size > 48:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    assert backend.largest_that_runs(256, probe) == 32
    assert tried == [256, 128, 64, 32]
    with pytest.raises(torch.cuda.OutOfMemoryError):
        backend.largest_that_runs(4, lambda size: probe(100))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_batch_size_on_cuda(tmp_path):
    run = save_untrained(tmp_path / "run")
    lm = ScalingLM(checkpoint=str(run), batch_size="auto", device="cuda")
    assert lm.batch_size == 4096  # a one-layer model fits the largest size tried
    assert ScalingLM(checkpoint=str(run), batch_size="auto", max_batch_size=100,
                     device="cuda").batch_size == 64


# ----------------------------------------------------------------------------- progress


def test_progress_bar_counts_requests(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SCALING_PROGRESS", "lines")
    run = save_untrained(tmp_path / "run", block_size=32)
    lm = ScalingLM(checkpoint=str(run), batch_size=2)
    lm.loglikelihood(_requests("loglikelihood", [("a", "b"), ("ab", "")] + [("x", "yz")] * 20))
    lm.loglikelihood_rolling(_requests("loglikelihood_rolling", [("some text " * 8,), ("",)]))
    lm.generate_until(_requests("generate_until", [("A 1+2=", {"until": ["\n"],
                                                              "max_gen_toks": 3})] * 5))
    err = capsys.readouterr().err
    assert "scaling loglikelihood: 100%" in err and "22/22" in err
    assert "scaling loglikelihood_rolling: 100%" in err and "2/2" in err
    assert "scaling generate_until: 100%" in err and "5/5" in err
    lm.loglikelihood(_requests("loglikelihood", [("a", "b")]), disable_tqdm=True)
    assert "scaling" not in capsys.readouterr().err
