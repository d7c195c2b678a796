"""Another model family in: transformers causal LMs scored on the probe tasks through lm-eval's
own `hf` backend (`scaling lm-eval --model hf`), imported into the results schema
(`scaling results import-lm-eval`) and judged by `scaling report`.

The family is four tiny randomly initialised GPT-NeoX models of different widths, made here,
with a byte-level tokenizer built with `tokenizers` (one token per character; a variant
with merged digit pairs checks that the metrics are defined on text). Everything is offline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

pytest.importorskip("lm_eval")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # lm-eval's hf backend needs it
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import (  # noqa: E402
    GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast)

import scaling.tasks as registry  # noqa: E402
from scaling import import_lm_eval as imp  # noqa: E402
from scaling.results import load  # noqa: E402
from scaling.tasks import get_tasks  # noqa: E402

EOT = "<|endoftext|>"
WIDTHS = (8, 16, 32, 64)  # four sizes: the report needs 4 points on an axis for a verdict
TASKS = "probe_addition_2d,probe_addition_mc_2d,probe_icl_2shot"
LIMIT = 4


def byte_tokenizer(merges: tuple[tuple[str, str], ...] = ()) -> PreTrainedTokenizerFast:
    """Byte-level BPE with no merges (one token per ASCII character), or with `merges`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {EOT: 0}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=list(merges)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOT, bos_token=EOT,
                                   unk_token=EOT)


def save_model(path, tok, width: int, seed: int = 0):
    """A random 2-layer GPT-NeoX of this width that writes printable ASCII only (the output
    rows of every other token are zeroed, so random positive logits win), saved with `tok`."""
    torch.manual_seed(seed + width)
    cfg = GPTNeoXConfig(vocab_size=len(tok), hidden_size=width, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=4 * width,
                        max_position_embeddings=256, bos_token_id=0, eos_token_id=0)
    model = GPTNeoXForCausalLM(cfg)
    with torch.no_grad():
        for token_id in range(len(tok)):
            text = tok.decode([token_id])
            if not (text and all(32 <= ord(c) < 127 for c in text)):
                model.get_output_embeddings().weight[token_id] = 0.0
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return model


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """{width: model directory} of four widths, one char-level tokenizer."""
    root = tmp_path_factory.mktemp("family")
    tok = byte_tokenizer()
    dirs = {w: root / f"neox-w{w}" for w in WIDTHS}
    for width, path in dirs.items():
        save_model(path, tok, width)
    return dirs


def one_line_error(capsys, code: int) -> str:
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# ----------------------------------------------------------------------------- end to end


def run_cli(path, out, tasks_dir) -> None:
    """`scaling lm-eval run --model hf --model_args pretrained=DIR ...` as a user types it, in
    a process of its own (lm-eval's model registry as the command sees it)."""
    env = dict(os.environ, SCALING_LM_EVAL_TASKS=str(tasks_dir), HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", HF_DATASETS_CACHE=str(tasks_dir / "hf"))
    proc = subprocess.run(
        [sys.executable, "-m", "scaling.cli", "lm-eval", "run", "--model", "hf",
         "--model_args", f"pretrained={path},dtype=float32", "--device", "cpu",
         "--batch_size", "8", "--tasks", TASKS, "--limit", str(LIMIT),
         "--output_path", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def run_in_process(path, out, tasks_dir) -> None:
    """lm_eval.simple_evaluate on an hf model object, its output saved as JSON (what a
    script that drives lm-eval itself keeps)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from scaling.lm_eval_tasks import export

    names = export(tasks_dir / "mine", tasks=TASKS.replace("probe_", ""))
    lm = HFLM(pretrained=str(path), device="cpu", dtype="float32", batch_size=8)
    res = lm_eval.simple_evaluate(
        model=lm, tasks=names, limit=LIMIT, log_samples=False,
        task_manager=TaskManager(include_path=str(tasks_dir / "mine"), include_defaults=False))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"results_{path.name}.json").write_text(json.dumps(res, default=str))


def test_family_through_lm_eval_import_and_report(family, tmp_path, monkeypatch, capsys):
    from analysis.report import main as report_main

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    out = tmp_path / "lm_eval_out"
    smallest, *others = WIDTHS
    run_cli(family[smallest], out / "cli", tmp_path / "tasks")
    assert (tmp_path / "tasks" / "char" / "probe_icl_2shot.yaml").is_file()  # auto-exported
    for width in others:
        run_in_process(family[width], out / "script", tmp_path / "tasks")

    csv = tmp_path / "neox.csv"
    assert imp.main([str(out), "--out", str(csv)]) == 0
    assert "imported 48 rows (4 model checkpoint(s), 3 tasks)" in capsys.readouterr().out
    df = load(csv)
    assert len(df) == 4 * (5 + 2 + 5)
    assert set(df.run) == {str(p) for p in family.values()}
    assert set(df.rung) == {f"neox-w{w}" for w in WIDTHS}
    assert (df.n == LIMIT).all()
    assert df.step.isna().all() and df.tokens.isna().all() and df.flops.isna().all()
    for width, path in family.items():  # exact counts: embed_in and embed_out are untied
        rows = df[df.run == str(path)]
        model = GPTNeoXForCausalLM.from_pretrained(path)
        total = sum(p.numel() for p in model.parameters())
        assert (rows.params == total).all()
        assert (rows.nonembed_params == total - 2 * model.config.vocab_size * width).all()
    acc = df[(df.task == "addition_mc_2d") & (df.metric == "accuracy")]
    assert (acc.chance == 0.25).all()  # 4 options: chance from the task registry
    assert set(df[df.task == "icl"].shots) == {2}
    assert df[df.metric == "token_accuracy"].chance.isna().all()

    report = tmp_path / "report"
    assert report_main(["--results", str(csv), "--out", str(report), "--bootstrap", "0"]) == 0
    em = pd.read_csv(report / "emergence.csv")
    on_params = em[em.axis == "params"]
    assert len(on_params) == 12  # every (task, shots, metric) of the family
    assert "insufficient_data" not in set(on_params.verdict)
    assert set(em[em.axis.isin(["flops", "tokens", "loss"])].verdict) == {"insufficient_data"}


# ----------------------------------------------------------------------------- definitions


def test_hf_scores_are_defined_on_text(tmp_path, monkeypatch):
    """Through lm-eval's hf backend, with a tokenizer that merges digit pairs (a gold "42" may
    be one token), token_accuracy is per gold character and answer_logprob per character,
    as scaling/metrics.py defines them, computed here directly with transformers."""
    import dataclasses

    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from scaling.data.skills.base import Example
    from scaling.lm_eval_tasks import export

    digits = "0123456789"
    tok = byte_tokenizer(tuple((a, b) for a in digits for b in digits))
    assert len(tok("42").input_ids) == 1
    model = save_model(tmp_path / "m", tok, 32).eval()

    def greedy_next(text: str) -> str:
        with torch.no_grad():
            logits = model(torch.tensor([tok(text).input_ids])).logits[0, -1]
        return tok.decode([int(logits.argmax())])

    # Gold answers from the model's own greedy rollouts (some characters hit) and altered
    # copies of them (misses), so the score is neither 0 nor 1.
    prompts = [e.prompt for e in get_tasks("addition_2d")[0].examples()[:8]]
    fixed = []
    for i, p in enumerate(prompts):
        roll = ""
        for _ in range(3):
            roll += greedy_next("\n" + p + roll)
        roll = roll[:4].replace("\n", "") or "7"
        fixed.append(Example("addition", 2, p, roll if i % 2 == 0 else roll[0] + "#7"))

    @dataclasses.dataclass(frozen=True)
    class Fixed(registry.Task):
        fixed_examples: tuple = ()

        def examples(self):
            return list(self.fixed_examples)

    task = Fixed("echo", skill="addition", difficulty=2, fixed_examples=tuple(fixed))
    names = export(tmp_path / "tasks", tasks=[task])
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    lm = HFLM(pretrained=str(tmp_path / "m"), device="cpu", dtype="float32", batch_size=4)
    res = lm_eval.simple_evaluate(
        model=lm, tasks=names,
        task_manager=TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False)
    )["results"][names[0]]

    flags, per_char = [], []
    for ex in fixed:
        ctx, gold = "\n" + ex.prompt, ex.answer
        flags += [greedy_next(ctx + gold[:i]).startswith(gold[i]) for i in range(len(gold))]
        whole, head = tok(ctx + gold).input_ids, tok(ctx).input_ids  # lm-eval's _encode_pair
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].double(), -1)
        total = sum(float(logp[j - 1, whole[j]]) for j in range(len(head), len(whole)))
        per_char.append(total / len(gold))
    per_example = []
    k = 0
    for ex in fixed:
        per_example.append(sum(flags[k:k + len(ex.answer)]) / len(ex.answer))
        k += len(ex.answer)
    expected = sum(per_example) / len(per_example)
    assert 0 < expected < 1
    assert res["token_accuracy,none"] == pytest.approx(expected, abs=1e-12)
    assert res["answer_logprob,none"] == pytest.approx(sum(per_char) / len(per_char), abs=1e-4)


def test_parameter_counts_match_pythia():
    # Pythia-70m's architecture, built on the meta device: the Pythia paper's counts.
    pythia_70m = GPTNeoXConfig(vocab_size=50304, hidden_size=512, num_hidden_layers=6,
                               num_attention_heads=8, intermediate_size=2048,
                               max_position_embeddings=2048, rotary_pct=0.25)
    with torch.device("meta"):
        model = GPTNeoXForCausalLM(pythia_70m)
    assert imp.parameter_counts(model) == (70_426_624, 18_915_328)
    # Tied input and output embeddings are one tensor: counted once, and not non-embedding.
    tied = GPTNeoXConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=32, tie_word_embeddings=True)
    total, nonembed = imp.parameter_counts(GPTNeoXForCausalLM(tied))
    assert nonembed == total - 100 * 16


def test_count_from_config_reads_a_local_directory(family):
    path = family[16]
    total, nonembed = imp.count_from_config(str(path), None)
    assert total == sum(p.numel() for p in GPTNeoXForCausalLM.from_pretrained(path).parameters())
    assert imp.count_from_config("no-such-org/no-such-model", None) is None  # offline: None


# ----------------------------------------------------------------------------- rows


def fake_results(name="EleutherAI/pythia-70m", revision=None, tasks=None, **extra) -> dict:
    """An lm-eval 0.4.13 results file's fields that the importer reads."""
    tasks = tasks or {"probe_addition_mc_2d": {"accuracy,none": 0.5,
                                                "accuracy_stderr,none": 0.1,
                                                "gold_prob,none": 0.3,
                                                "gold_prob_stderr,none": "N/A"}}
    args = {"pretrained": name, **({"revision": revision} if revision else {})}
    data = {"results": tasks, "config": {"model": "hf", "model_args": args,
                                         "model_num_parameters": 70_426_624},
            "versions": {t: 2 for t in tasks}, "n-shot": {t: 0 for t in tasks},
            "n-samples": {t: {"original": 500, "effective": 20} for t in tasks}}
    data.update(extra)
    return data


def write(path, data) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def test_revisions_steps_tokens_and_params(tmp_path):
    files = [write(tmp_path / f"r{s}.json", fake_results(revision=f"step{s}"))
             for s in (1000, 3000)]
    files.append(write(tmp_path / "main.json", fake_results(revision="main")))
    files.append(write(tmp_path / "sha.json", fake_results(revision="abc123")))
    out = tmp_path / "out.csv"
    assert imp.main([*files, "--out", str(out), "--tokens-per-step", "2097152"]) == 0
    df = load(out)
    by = {(r.run, None if pd.isna(r.step) else int(r.step)): r
          for r in df[df.metric == "accuracy"].itertuples()}
    assert set(by) == {("EleutherAI/pythia-70m", 1000), ("EleutherAI/pythia-70m", 3000),
                       ("EleutherAI/pythia-70m", None), ("EleutherAI/pythia-70m@abc123", None)}
    assert by[("EleutherAI/pythia-70m", 3000)].tokens == 3000 * 2097152
    assert pd.isna(by[("EleutherAI/pythia-70m", None)].tokens)
    row = by[("EleutherAI/pythia-70m", 1000)]
    # No config.json offline: lm-eval's own count, non-embedding unknown.
    assert (row.rung, row.params, row.n, row.chance) == ("pythia-70m", 70_426_624, 20, 0.25)
    assert pd.isna(row.nonembed_params) and row.stderr == 0.1
    assert df[df.metric == "gold_prob"].stderr.isna().all()  # lm-eval's "N/A"
    # --params wins; re-importing replaces the rows of the same key, others are kept.
    assert imp.main([files[0], "--out", str(out), "--params", "70000000",
                     "--nonembed-params", "19000000"]) == 0
    df = load(out)
    assert len(df) == 8
    step1000 = df[df.step == 1000]
    assert (step1000.params == 70_000_000).all() and (step1000.nonembed_params == 19e6).all()
    assert (df[df.step == 3000].params == 70_426_624).all()


def test_adapter_is_a_run_of_its_own_and_rows_carry_the_intervention(tmp_path):
    export = tmp_path / "export"
    export.mkdir()  # what `scaling export` records: the rung's own counts, not the config's
    (export / "scaling_export.json").write_text(json.dumps({"params": 10128,
                                                             "nonembed_params": 7056}))
    base = fake_results(name=str(export))
    tuned = fake_results(name=str(export))
    tuned["config"]["model_args"]["peft"] = "adapter"
    tuned["results"]["probe_addition_mc_2d"]["accuracy,none"] = 0.75
    out = tmp_path / "out.csv"
    assert imp.main([write(tmp_path / "base.json", base), "--out", str(out)]) == 0
    assert imp.main([write(tmp_path / "tuned.json", tuned), "--out", str(out),
                     "--intervention", "prompt:4:addition_mc_2d"]) == 0
    df = load(out)
    acc = df[df.metric == "accuracy"].set_index("run")
    assert acc.value.to_dict() == {str(export): 0.5, f"{export}+peft=adapter": 0.75}
    assert acc.intervention.to_dict() == {str(export): "",
                                          f"{export}+peft=adapter": "prompt:4:addition_mc_2d"}
    assert (df.params == 10128).all() and (df.nonembed_params == 7056).all()


def test_bad_input_is_one_line(tmp_path, capsys):
    out = str(tmp_path / "out.csv")

    def error(*args):
        return one_line_error(capsys, imp.main([*map(str, args), "--out", out]))

    assert "no such file" in error(tmp_path / "nope.json")
    (tmp_path / "text.json").write_text("hello")
    assert "not lm-eval output (not JSON" in error(tmp_path / "text.json")
    assert "not lm-eval output (no 'results'" in error(write(tmp_path / "x.json", {"a": 1}))
    (tmp_path / "empty").mkdir()
    assert "no lm-eval results_*.json" in error(tmp_path / "empty")
    assert "'hellaswag' is not a probe task" in error(write(
        tmp_path / "hs.json", fake_results(tasks={"hellaswag": {"acc,none": 0.3}})))
    assert "unknown probe task 'probe_nope'" in error(write(
        tmp_path / "nope2.json", fake_results(tasks={"probe_nope": {"acc,none": 0.3}})))
    old = fake_results()
    old["versions"] = {"probe_addition_mc_2d": 1}
    assert "before token_accuracy was defined per character" in error(
        write(tmp_path / "old.json", old))
    assert "--num_fewshot 3" in error(write(
        tmp_path / "shots.json", fake_results(**{"n-shot": {"probe_addition_mc_2d": 3}})))
    ours = fake_results()
    ours["config"] = {"model": "scaling", "model_args": {"checkpoint": "runs/x"}}
    assert "scaling eval" in error(write(tmp_path / "ours.json", ours))
    a = write(tmp_path / "a.json", fake_results("org/a"))
    b = write(tmp_path / "b.json", fake_results("org/b"))
    assert "--params gives one model's size" in one_line_error(
        capsys, imp.main([a, b, "--out", out, "--params", "5"]))
    assert "--nonembed-params needs --params" in one_line_error(
        capsys, imp.main([a, "--out", out, "--nonembed-params", "5"]))
    bad = fake_results()
    bad["results"]["probe_addition_mc_2d"]["accuracy,none"] = 1.5
    assert "must lie in [0, 1]" in error(write(tmp_path / "bad.json", bad))
    assert not (tmp_path / "out.csv").exists()  # nothing written by any refusal
    assert "is a directory" in one_line_error(capsys, imp.main([a, "--out", str(tmp_path)]))


def test_results_command_group(capsys):
    from scaling.cli import main

    assert main(["results", "--help"]) == 0
    assert "import-lm-eval" in capsys.readouterr().out
    assert one_line_error(capsys, main(["results", "import"])).startswith(
        "error: unknown `scaling results` subcommand 'import'")
    with pytest.raises(SystemExit) as exc:
        main(["results", "import-lm-eval", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--tokens-per-step" in text and "scaling report --results" in text
