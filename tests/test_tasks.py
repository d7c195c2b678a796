"""Probe tasks: the registry, the instances (held out, uncontaminated) and the metrics."""

from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np
import pytest

import scaling.tasks as registry
from scaling import metrics
from scaling.data.skills import SKILLS, is_heldout
from scaling.tasks import (
    GENERATE, LINE_START, MULTIPLE_CHOICE, Task, UnknownTaskError, all_tasks, get_tasks)

# ----------------------------------------------------------------------------- registry


def test_default_tasks_cover_the_issue():
    tasks = all_tasks()
    ids = [t.id for t in tasks]
    assert len(ids) == len(set(ids))
    names = {t.name for t in tasks}
    assert {f"addition_{d}d" for d in range(1, 6)} <= names
    assert {f"addition_mc_{d}d" for d in range(1, 6)} <= names
    assert {f"chain_{k}hop" for k in range(1, 5)} <= names
    assert {"modular_5", "modular_7", "modular_11", "modular_13"} <= names
    assert {"copy_4", "copy_8", "copy_12", "copy_16"} <= names
    assert sorted(t.shots for t in tasks if t.name == "icl") == [0, 1, 2, 4, 8]
    assert sorted(t.shots for t in tasks if t.name == "fewshot") == [0, 1, 2, 4]
    for t in tasks:
        assert t.skill in SKILLS and t.difficulty in SKILLS[t.skill].DIFFICULTIES
        assert t.n == 500
        expected = metrics.GENERATE_METRICS if t.kind == GENERATE else metrics.CHOICE_METRICS
        assert t.metrics == expected
    assert {t.kind for t in tasks} == {GENERATE, MULTIPLE_CHOICE}
    # Every task reports a discontinuous and a continuous metric.
    for t in tasks:
        assert set(t.metrics) & set(metrics.DISCONTINUOUS)
        assert set(t.metrics) & set(metrics.CONTINUOUS)


def test_selection_by_name_id_and_errors():
    assert [t.shots for t in get_tasks("icl")] == [0, 1, 2, 4, 8]
    assert [t.id for t in get_tasks("icl_4shot,addition_3d")] == ["icl_4shot", "addition_3d"]
    assert [t.id for t in get_tasks(["copy_4", " copy_4 "])] == ["copy_4"]
    assert get_tasks(None) == get_tasks("default") == all_tasks()
    adhoc = Task("adhoc", skill="copy", difficulty=4, n=3)
    assert get_tasks([adhoc, "copy_4"])[0] is adhoc
    with pytest.raises(UnknownTaskError) as err:
        get_tasks("addition_3d,nope,icl_3shot")
    msg = str(err.value)
    assert "'nope'" in msg and "'icl_3shot'" in msg and "addition_3d" in msg
    assert "\n" not in msg


def test_task_record_validates():
    with pytest.raises(ValueError, match="kind"):
        Task("x", skill="copy", difficulty=4, kind="essay")
    with pytest.raises(ValueError, match="n must"):
        Task("x", skill="copy", difficulty=4, n=0)
    with pytest.raises(ValueError, match="task name"):
        Task("x-y", skill="copy", difficulty=4)
    t = Task("icl", skill="icl", difficulty=0, shots=0)
    assert (t.id, t.shots_column) == ("icl_0shot", 0)
    assert Task("copy_4", skill="copy", difficulty=4).shots_column == 0


def test_a_new_task_module_is_one_file_and_one_line(tmp_path, monkeypatch):
    pkg = tmp_path / "extra_probes"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "copy_long.py").write_text(
        "from scaling.tasks import Task\n"
        "TASKS = [Task('copy_long', skill='copy', difficulty=16, n=7)]\n")
    (pkg / "broken.py").write_text("TASKS = ['not a task']\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "TASK_MODULES", [*registry.TASK_MODULES,
                                                    "extra_probes.copy_long"])
    assert get_tasks("copy_long")[0].n == 7
    assert all_tasks()[-1].id == "copy_long"
    monkeypatch.setattr(registry, "TASK_MODULES", [*registry.TASK_MODULES, "copy"])
    with pytest.raises(ValueError, match="defined twice"):
        all_tasks()
    monkeypatch.setattr(registry, "TASK_MODULES", ["extra_probes.broken"])
    with pytest.raises(TypeError, match="TASKS"):
        all_tasks()
    sys.modules.pop("extra_probes.copy_long", None)
    sys.modules.pop("extra_probes.broken", None)
    sys.modules.pop("extra_probes", None)


# ----------------------------------------------------------------------------- instances


def test_instances_are_heldout_distinct_and_deterministic():
    for task in get_tasks("addition_1d,addition_3d,chain_2hop,modular_7,icl_8shot,fewshot_4shot,"
                          "copy_12,addition_mc_2d"):
        examples = task.examples()
        assert 0 < len(examples) <= task.n
        texts = [e.text for e in examples]
        assert len(set(texts)) == len(texts)
        assert all(is_heldout(e) for e in examples)
        assert [e.text for e in task.examples()] == texts
        assert all(task.context(e) == LINE_START + e.prompt for e in examples)
        if task.kind == MULTIPLE_CHOICE:
            assert all(e.choices[task.gold_index(e)] == e.answer for e in examples)
    # Large example spaces give the full n; small ones give what the held-out split has.
    assert len(get_tasks("addition_3d")[0].examples()) == 500
    assert len(get_tasks("addition_1d")[0].examples()) < 20
    other = dataclasses.replace(get_tasks("addition_3d")[0], seed=99, n=50)
    assert {e.text for e in other.examples()} != {e.text for e in
                                                 get_tasks("addition_3d")[0].examples()[:50]}


def test_chance_where_known():
    t = get_tasks("chain_2hop")[0]
    ex = t.examples()
    assert t.chance_of("exact_match", ex) == pytest.approx(0.1)
    assert t.chance_of("token_accuracy", ex) is None
    assert get_tasks("modular_7")[0].chance_of("exact_match", ex) == pytest.approx(1 / 7)
    assert get_tasks("addition_3d")[0].chance_of("exact_match", ex) is None
    mc = get_tasks("addition_mc_3d")[0]
    assert mc.chance_of("accuracy", mc.examples()) == pytest.approx(0.25)
    assert mc.chance_of("gold_prob", mc.examples()) == pytest.approx(0.25)
    assert dataclasses.replace(t, chance=0.5).chance_of("exact_match", ex) == 0.5


def test_no_probe_instance_occurs_in_a_built_training_shard(tmp_path):
    from scaling.data.contamination import check_contamination, shard_lines
    from scaling.data.corpus import CorpusSpec
    from scaling.data.shards import build_corpus, open_shard
    from scaling.data.skills.base import Example
    from scaling.data.tokenizer import get_tokenizer

    corpus = build_corpus(CorpusSpec(train_tokens=400_000, val_tokens=2_000), tmp_path)
    examples = [e for t in all_tasks() for e in t.examples()]
    assert len(examples) > 10_000
    assert check_contamination(corpus, examples) == []
    # The check is not vacuous: a line that is in the shard is found.
    tok = get_tokenizer("char")
    line = sorted(shard_lines(open_shard(corpus, "train"), tok))[len(examples) % 97 + 5]
    planted = Example("copy", 4, line[: len(line) // 2], line[len(line) // 2:])
    assert check_contamination(corpus, [planted, *examples[:100]]) == [planted]


# ----------------------------------------------------------------------------- metrics


def _dp_levenshtein(a, b):
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        cur = [i]
        for j, cb in enumerate(b, start=1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def test_levenshtein_and_edit_similarity():
    rng = np.random.default_rng(1)
    for _ in range(400):  # the bit-parallel distance equals the textbook table
        a = "".join(rng.choice(list("abcd"), rng.integers(0, 20)))
        b = "".join(rng.choice(list("abcd"), rng.integers(0, 20)))
        assert metrics.levenshtein(a, b) == _dp_levenshtein(a, b), (a, b)
    assert metrics.levenshtein([1, 2, 3], [1, 3]) == 1
    assert metrics.levenshtein("kitten", "sitting") == 3
    assert metrics.levenshtein("", "abc") == 3
    assert metrics.levenshtein("abc", "abc") == 0
    assert metrics.edit_similarity("", "") == 1.0
    assert metrics.edit_similarity("521", "521") == 1.0
    assert metrics.edit_similarity("", "521") == 0.0
    assert metrics.edit_similarity("5219", "521") == pytest.approx(0.75)
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = "".join(rng.choice(list("abc"), rng.integers(0, 6)))
        b = "".join(rng.choice(list("abc"), rng.integers(0, 6)))
        s = metrics.edit_similarity(a, b)
        assert 0.0 <= s <= 1.0 and s == metrics.edit_similarity(b, a)


def test_generate_and_choice_scores():
    s = metrics.generate_scores("52", "521", [-0.1, -0.2, -3.0], [True, True, False])
    assert s["exact_match"] == 0.0
    assert s["token_accuracy"] == pytest.approx(2 / 3)
    assert s["edit_similarity"] == pytest.approx(2 / 3)
    assert s["answer_logprob"] == pytest.approx(-3.3 / 3)
    assert s["answer_prob"] == pytest.approx(math.exp(-3.3))  # the whole answer's probability
    assert metrics.generate_scores("7", "7", [0.0], [True])["answer_prob"] == 1.0
    assert metrics.generate_scores("7", "7", [-0.5], [True])["exact_match"] == 1.0
    with pytest.raises(ValueError):
        metrics.generate_scores("7", "7", [], [])
    c = metrics.choice_scores([math.log(0.2), math.log(0.6), math.log(0.2)], 1)
    assert c == {"accuracy": 1.0, "gold_prob": pytest.approx(0.6)}
    assert metrics.choice_scores([-1.0, -1.0], 1)["accuracy"] == 0.0  # ties go to the first
    assert metrics.cut_at_stops("17. Q: what", (LINE_START, ".")) == "17"
    assert metrics.cut_at_stops("abc", ()) == "abc"


def test_generation_metrics_are_per_character():
    # The same gold answer scored by a tokenizer that keeps "52" as one token: the flags and
    # the log-probability are per character of the text, whatever the tokens were.
    per_token = metrics.generate_scores("52", "521", [-0.3, -3.0], [True, True, False])
    whole = metrics.generate_scores("52", "521", [-3.3], [True, True, False])
    char = metrics.generate_scores("52", "521", [-0.1, -0.2, -3.0], [True, True, False])
    assert per_token == pytest.approx(whole) and whole == pytest.approx(char)
    assert char["answer_logprob"] == pytest.approx(-3.3 / 3)
    with pytest.raises(ValueError, match="one greedy flag per gold character"):
        metrics.generate_scores("52", "521", [-3.3], [True, False])  # two flags, 3 characters
    # A greedy next token counts for the gold character it begins with.
    assert metrics.greedy_char_hit("52", "5") and metrics.greedy_char_hit("5", "5")
    assert not metrics.greedy_char_hit(" 5", "5") and not metrics.greedy_char_hit("", "5")



def test_mean_stderr():
    assert metrics.mean_stderr([1.0]) == (1.0, 0.0)
    mean, se = metrics.mean_stderr([0, 1, 1, 0])
    assert mean == 0.5 and se == pytest.approx(np.std([0, 1, 1, 0], ddof=1) / 2)
    agg = metrics.aggregate([{"a": 1.0, "b": 0.0}, {"a": 0.0, "b": 0.0}])
    assert agg["a"][0] == 0.5 and agg["b"] == (0.0, 0.0)
