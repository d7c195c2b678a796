"""Fine-tuning and prompt tuning of an exported checkpoint with the field's own tools (the
recipe in docs/hf_recipe.md).

`scaling export` -> `transformers.Trainer` (full fine-tuning), or peft's `PromptTuningConfig`
+ `get_peft_model` + Trainer (prompt tuning), on a probe task's TRAINING split -> scored on
the task's held-out instances through lm-eval's own `hf` model (`scaling lm-eval run --model
hf`; the adapter with model_args `peft=`) -> rows of the results schema (`scaling results
import-lm-eval`). Everything is offline: the model is conftest's briefly trained run.
"""

from __future__ import annotations

import json
import os
import random

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # Trainer and lm-eval's hf model need it
pytest.importorskip("datasets")
pytest.importorskip("lm_eval")
pytest.importorskip("peft")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from transformers import (  # noqa: E402
    AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling, Trainer,
    TrainingArguments)

from scaling import import_lm_eval  # noqa: E402
from scaling.data.skills import is_heldout, sample_train  # noqa: E402
from scaling.lm_eval_backend import cli_main  # noqa: E402
from scaling.results import COLUMNS, METRIC_RANGE, load  # noqa: E402
from scaling.tasks import LINE_START, get_tasks  # noqa: E402

TASK = "addition_3d"
N_TRAIN = 1024  # training examples drawn (an epoch is 64 steps of 16)
STEPS = 40  # optimizer steps of each fine-tuning
BATCH = 16
VIRTUAL_TOKENS = 4  # prompt tuning's soft prompt length
LIMIT = 24  # held-out probe instances lm-eval scores
BLOCK = 128  # context of conftest's s1 run: the lm-eval task cuts prompts to it


def probe_task():
    (task,) = get_tasks(TASK)
    return task


def training_split(n: int = N_TRAIN, seed: int = 0) -> tuple[list, list[str]]:
    """Fresh draws of the task's generator outside its held-out split (sample_train rejects
    held-out draws), and their texts as the corpus writes them: one line each."""
    task = probe_task()
    rng = random.Random(seed)
    train = [sample_train(task.skill, rng, task.difficulty) for _ in range(n)]
    return train, [task.context(e) + e.answer + LINE_START for e in train]


@pytest.fixture(scope="module")
def exported(briefly_trained_run, tmp_path_factory):
    """conftest's trained run, its last checkpoint exported with `scaling export`."""
    from scaling.cli import main

    out = tmp_path_factory.mktemp("hf") / "base"
    assert main(["export", str(briefly_trained_run), "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["max_position_embeddings"] == BLOCK
    return out


@pytest.fixture(scope="module")
def probe_tasks(tmp_path_factory):
    """The probe task written as an lm-eval task (`scaling lm-eval export`), for the char
    tokenizer and the exported model's block."""
    out = tmp_path_factory.mktemp("tasks")
    assert cli_main(["export", str(out), "--tasks", TASK, "--tokenizer", "char",
                     "--block-size", str(BLOCK)]) == 0
    return out


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_datasets"))


def dataset(tok, texts):
    from datasets import Dataset

    return Dataset.from_dict({"text": texts}).map(lambda b: tok(b["text"]), batched=True,
                                                  remove_columns=["text"])


def fit(model, tok, texts, out, lr: float) -> Trainer:
    """`STEPS` steps of transformers.Trainer on `texts` (causal LM: labels = inputs, padding
    not scored), no checkpoints, no reporting, on the CPU."""
    args = TrainingArguments(output_dir=str(out), max_steps=STEPS,
                             per_device_train_batch_size=BATCH, learning_rate=lr,
                             logging_steps=10, save_strategy="no", report_to="none",
                             use_cpu=True, seed=0, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=dataset(tok, texts),
                      data_collator=DataCollatorForLanguageModeling(tok, mlm=False))
    trainer.train()
    return trainer


def batch_loss(model, tok, texts) -> float:
    """Mean next-token loss on `texts`, one padded batch, as Trainer computes it."""
    batch = DataCollatorForLanguageModeling(tok, mlm=False)([tok(t) for t in texts])
    model.eval()
    with torch.no_grad():
        return float(model(**batch).loss)


def score(model_args: str, tasks_dir, out) -> dict:
    """`scaling lm-eval run --model hf` on the held-out probe instances; the results JSON."""
    assert cli_main(["run", "--model", "hf", "--model_args", f"{model_args},dtype=float32",
                     "--device", "cpu", "--batch_size", "8", "--tasks", f"probe_{TASK}",
                     "--limit", str(LIMIT), "--include_path", str(tasks_dir),
                     "--output_path", str(out)]) == 0
    (path,) = out.rglob("results_*.json")
    return json.loads(path.read_text())


def imported(results_dir, csv, *options):
    """`scaling results import-lm-eval`, read back by the schema's own reader."""
    assert import_lm_eval.main([str(results_dir), "--out", str(csv), *options]) == 0
    return load(csv)


def check_rows(df, runs: set[str]):
    """Rows in the results schema: the probe task's metrics, one row each per run."""
    task = probe_task()
    assert list(df.columns[:len(COLUMNS)]) == COLUMNS
    assert set(df.run) == runs
    for _, rows in df.groupby("run"):
        assert sorted(rows.metric) == sorted(task.metrics)
        assert (rows.task == TASK).all() and (rows.shots == 0).all() and (rows.n == LIMIT).all()
        assert rows.step.isna().all() and rows.tokens.isna().all()  # not a ladder checkpoint
        for metric, value in zip(rows.metric, rows.value):
            lo, hi = METRIC_RANGE[metric]
            assert lo <= value <= hi


def test_training_split_never_holds_a_probe_instance(probe_tasks):
    task = probe_task()
    probes = task.examples()
    assert len(probes) == task.n and all(map(is_heldout, probes))  # the check can fail
    train, texts = training_split()
    assert not any(map(is_heldout, train))
    held = {e.prompt for e in probes}
    assert not held & {e.prompt for e in train}
    # What lm-eval scores is those held-out instances, exactly.
    docs = [json.loads(x) for x in (probe_tasks / f"probe_{TASK}.jsonl").open()]
    assert [d["context"] for d in docs] == [task.context(e) for e in probes]
    assert not {d["context"] + d["answer"] + LINE_START for d in docs} & set(texts)


@pytest.mark.slow  # ~15 s on 2 busy CPU cores: two fine-tunings of 40 steps, two lm-eval runs
def test_trainer_fine_tune_scored_through_lm_eval_hf(exported, probe_tasks, tmp_path):
    tok = AutoTokenizer.from_pretrained(exported)
    model = AutoModelForCausalLM.from_pretrained(exported)
    # Our GPT has no biases in its linear layers (the export writes zeros): frozen, they stay
    # zero and the fine-tuned model keeps the rung's architecture and parameter count.
    zeros = [p for n, p in model.named_parameters()
             if n.endswith(".bias") and (".attention." in n or ".mlp." in n)]
    assert zeros and not any(p.any() for p in zeros)
    for p in zeros:
        p.requires_grad_(False)
    _, texts = training_split()
    before = batch_loss(model, tok, texts[:64])
    trainer = fit(model, tok, texts, tmp_path / "trainer", lr=1e-3)
    after = batch_loss(model, tok, texts[:64])
    print(f"full fine-tuning, {STEPS} steps: training-batch loss {before:.3f} -> {after:.3f}")
    assert after < before - 0.05
    assert not any(p.any() for p in zeros)

    tuned = tmp_path / "finetuned"
    trainer.save_model(str(tuned))
    tok.save_pretrained(tuned)
    again = AutoModelForCausalLM.from_pretrained(tuned).eval()
    x = torch.tensor([tok(texts[0])["input_ids"]])
    with torch.no_grad():
        assert torch.equal(again(x).logits, model.eval()(x).logits)

    out = tmp_path / "lm_eval"
    base = score(f"pretrained={exported}", probe_tasks, out / "base")
    fine = score(f"pretrained={tuned}", probe_tasks, out / "tuned")
    # Imported at the rung's own parameter counts (import-lm-eval would count the zero
    # biases too), tagged as an intervention, read back by the schema's reader.
    info = json.loads((exported / "scaling_export.json").read_text())
    csv = tmp_path / "finetune.csv"
    df = imported(out / "tuned", csv, "--params", str(info["params"]), "--nonembed-params",
                  str(info["nonembed_params"]))
    check_rows(df, {str(tuned)})
    assert (df.params == info["params"]).all()
    assert (df.nonembed_params == info["nonembed_params"]).all()
    df.assign(intervention=f"finetune:full:{TASK}").to_csv(csv, index=False)
    assert set(load(csv).intervention) == {f"finetune:full:{TASK}"}
    # Trained on the training split only, it predicts the held-out answers better.
    lp = [r["results"][f"probe_{TASK}"]["answer_logprob,none"] for r in (base, fine)]
    print(f"held-out answer_logprob: base {lp[0]:.3f}, fine-tuned {lp[1]:.3f}")
    assert lp[1] > lp[0]


def answer_logprob(model, tok, examples, virtual: int = 0) -> float:
    """The probe task's answer_logprob (mean over instances of log p(answer | context) per
    answer character) computed here, with `virtual` soft-prompt positions dropped from the
    front of the logits (peft returns logits for them too)."""
    task, total = probe_task(), 0.0
    for e in examples:
        ctx, ids = tok(task.context(e))["input_ids"], tok(task.context(e) + e.answer)["input_ids"]
        with torch.no_grad():
            lp = model(torch.tensor([ids])).logits[0, virtual:].double().log_softmax(-1)
        total += float(sum(lp[i - 1, ids[i]] for i in range(len(ctx), len(ids)))) / len(e.answer)
    return total / len(examples)


@pytest.mark.slow  # ~10 s
def test_prompt_tuning_with_peft(exported, probe_tasks, tmp_path):
    from peft import PeftModel, PromptTuningConfig, TaskType, get_peft_model

    tok = AutoTokenizer.from_pretrained(exported)
    base = AutoModelForCausalLM.from_pretrained(exported)
    frozen = {k: v.clone() for k, v in base.state_dict().items()}
    torch.manual_seed(0)  # the soft prompt's random initialisation
    model = get_peft_model(base, PromptTuningConfig(task_type=TaskType.CAUSAL_LM,
                                                    num_virtual_tokens=VIRTUAL_TOKENS))
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert list(trainable) == ["prompt_encoder.default.embedding.weight"]
    prompt = trainable["prompt_encoder.default.embedding.weight"]
    assert prompt.shape == (VIRTUAL_TOKENS, base.config.hidden_size)
    start = prompt.detach().clone()

    _, texts = training_split()
    before = batch_loss(model, tok, texts[:64])
    fit(model, tok, texts, tmp_path / "trainer", lr=0.1)
    after = batch_loss(model, tok, texts[:64])
    print(f"prompt tuning, {VIRTUAL_TOKENS} virtual tokens, {STEPS} steps: training-batch "
          f"loss {before:.3f} -> {after:.3f}")
    assert after < before
    assert not torch.equal(prompt.detach(), start)  # the soft prompt learned
    now = model.get_base_model().state_dict()
    assert set(now) == set(frozen)
    for name, value in frozen.items():  # and nothing else moved
        assert torch.equal(now[name], value), name

    # The adapter alone is saved (no merged model: a soft prompt is not a weight delta);
    # reloaded onto a fresh copy of the export it gives the same logits.
    adapter = tmp_path / "adapter"
    model.save_pretrained(adapter)
    assert json.loads((adapter / "adapter_config.json").read_text())["peft_type"] == \
        "PROMPT_TUNING"
    again = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(exported),
                                      adapter).eval()
    ids = [tok(t)["input_ids"] for t in texts[:4]]
    x = torch.tensor([i[:min(map(len, ids))] for i in ids])  # (4, T): no padding needed
    with torch.no_grad():
        logits = model.eval()(x).logits
        assert logits.shape[1] == VIRTUAL_TOKENS + x.shape[1]
        assert torch.equal(again(x).logits, logits)

    # lm-eval's hf model loads the adapter itself (model_args peft=) and drops the virtual
    # positions' logits: its score is the one computed here, not the base model's.
    out = tmp_path / "lm_eval"
    res = score(f"pretrained={exported},peft={adapter}", probe_tasks, out)
    theirs = res["results"][f"probe_{TASK}"]["answer_logprob,none"]
    probes = probe_task().examples()[:LIMIT]
    ours = answer_logprob(again, tok, probes, virtual=VIRTUAL_TOKENS)
    plain = answer_logprob(AutoModelForCausalLM.from_pretrained(exported).eval(), tok, probes)
    misread = answer_logprob(again, tok, probes)  # the virtual positions' logits kept
    print(f"held-out answer_logprob: base {plain:.6f}, prompt-tuned {ours:.6f} (lm-eval "
          f"{theirs:.6f}; read {VIRTUAL_TOKENS} positions off: {misread:.3f})")
    # This near-chance one-layer model gives every digit about the same log-probability
    # wherever it is read, and four soft-prompt vectors move its answers little (the training
    # loss falls at the line starts): base and prompt-tuned differ by ~2e-4 nats, misread
    # logits by ~6e-3, lm-eval and this computation by ~1e-8.
    assert theirs == pytest.approx(ours, abs=1e-6)
    assert abs(ours - plain) > 1e-5
    assert abs(misread - ours) > 1e-3
    df = imported(out, tmp_path / "prompt.csv", "--intervention", f"prompt:{VIRTUAL_TOKENS}:{TASK}")
    # an adapter on the export is a run of its own, at the rung's own parameter count
    # (scaling_export.json of the export), tagged with the intervention
    check_rows(df, {f"{exported}+peft={adapter}"})
    assert (df.intervention == f"prompt:{VIRTUAL_TOKENS}:{TASK}").all()
