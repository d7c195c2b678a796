"""Tests of the data layer: tokenizers, skills, held-out split, corpus, shards, contamination."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest

from scaling.data.contamination import check_contamination
from scaling.data.corpus import CorpusSpec, generate_text
from scaling.data.shards import (
    ShardError,
    build_corpus,
    data_hash,
    get_batch,
    open_shard,
    read_manifest,
    spec_hash,
)
from scaling.data.skills import (
    SKILLS,
    Example,
    get_skill,
    heldout_examples,
    is_heldout,
    sample_train,
)
from scaling.data.tokenizer import CharTokenizer, get_tokenizer

SMALL = {"train_tokens": 20_000, "val_tokens": 2_000}


# ---------------------------------------------------------------- tokenizers


def test_char_tokenizer_round_trip_and_layout():
    tok = CharTokenizer()
    text = "\nA 57+68=521\nC b=a;a=7;b?7 ~`{}|"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.vocab_size == 128 and tok.eot_id == 0
    assert tok.encode("\n") == [1] and tok.encode(" ") == [2] and tok.encode("~") == [96]
    assert max(tok.encode("".join(chr(c) for c in range(32, 127)))) == 96
    assert tok.decode([0, *tok.encode("ab"), 0]) == "ab"  # eot decodes to ""
    assert tok.decode([100]) == "\ufffd"  # a padding id never matches an ASCII answer


@pytest.mark.parametrize("bad,pos", [("ab\tc", 2), ("héllo", 1), ("x\x7f", 1)])
def test_char_tokenizer_names_first_bad_char(bad, pos):
    with pytest.raises(ValueError, match=rf"{re.escape(repr(bad[pos]))}.*position {pos}"):
        CharTokenizer().encode(bad)


def test_get_tokenizer_errors():
    assert isinstance(get_tokenizer("char"), CharTokenizer)
    with pytest.raises(ValueError, match="unknown tokenizer 'gpt2'"):
        get_tokenizer("gpt2")
    with pytest.raises(ValueError, match="does not exist"):
        get_tokenizer("/nonexistent/tok.json")


def _train_bpe(path, lines):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(lines, trainer)
    tok.save(str(path))
    return path


def test_bpe_tokenizer_round_trip(tmp_path):
    lines = ["the old dog sees a red house", "A 57+68=521", "héllo wörld"] * 20
    path = _train_bpe(tmp_path / "bpe.json", lines)
    tok = get_tokenizer(str(path))
    text = "the red dog\nA 12+34=64 héllo"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode([tok.eot_id, *ids]) == text
    assert 0 <= tok.eot_id < tok.vocab_size <= 65535
    texts = [text, "", "héllo"]
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]


# ---------------------------------------------------------------- skills


def _solve(ex: Example) -> str | None:
    """An independent oracle for each skill's gold answer (None: unknowable / filler)."""
    p = ex.prompt
    if ex.skill == "addition":
        a, b = re.fullmatch(r"A (\d+)\+(\d+)=", p).groups()
        assert len(a) == len(b) == ex.difficulty
        return str(int(a) + int(b))[::-1]
    if ex.skill == "chain":
        *stmts, query = p.split(" ")[1:]
        env = {s[0]: s[1] for s in stmts}
        assert all(len(s) == 2 for s in stmts) and len(query) == 1
        v, hops = query, 0
        while not v.isdigit():
            v, hops = env[v], hops + 1
        assert hops == ex.difficulty and len(env) == ex.difficulty + 2
        return v
    if ex.skill == "modular":
        a, op, b, m = re.fullmatch(r"M (\d+)([-+*])(\d+)%(\d+)=", p).groups()
        assert int(m) == ex.difficulty
        ops = {"+": int.__add__, "-": int.__sub__, "*": int.__mul__}
        return str(ops[op](int(a), int(b)) % int(m))
    if ex.skill == "icl":
        *demos, query = p.split(" ")[1:]
        assert len(demos) == ex.difficulty and len(query) == 1
        seen = {d[0]: d[1:] for d in demos}
        return seen.get(query)
    if ex.skill == "fewshot":
        qs = re.findall(r"Q: what is (\d+) plus (\d+)\? A: (\d*)", p)
        assert len(qs) == ex.difficulty + 1
        assert all(int(a) + int(b) == int(s) for a, b, s in qs[:-1])
        return str(int(qs[-1][0]) + int(qs[-1][1]))
    if ex.skill == "copy":
        s = re.fullmatch(r"K ([a-z]+)\|", p).group(1)
        assert len(s) == ex.difficulty
        return s
    return None


@pytest.mark.parametrize("name", list(SKILLS))
def test_skill_examples_well_formed_and_deterministic(name):
    mod = SKILLS[name]
    assert mod.NAME == name and mod.DIFFICULTIES
    for d in mod.DIFFICULTIES:
        r1, r2 = random.Random(7), random.Random(7)
        a = [mod.sample(r1, d) for _ in range(50)]
        assert a == [mod.sample(r2, d) for _ in range(50)]  # deterministic by seed
        assert a != [mod.sample(random.Random(8), d) for _ in range(50)]
        c = mod.chance(d)
        assert c is None or 0 < c < 1
        for ex in a:
            assert ex.skill == name and ex.difficulty == d and ex.answer
            assert "\n" not in ex.text and ex.text == ex.prompt + ex.answer
            CharTokenizer().encode(ex.text)  # every character is in the alphabet
            gold = _solve(ex)
            if gold is not None:
                assert gold == ex.answer, ex
            if ex.choices:
                assert ex.answer in ex.choices and len(set(ex.choices)) == len(ex.choices)


def test_addition_choices_differ_in_one_digit():
    for ex in (SKILLS["addition"].sample(random.Random(i), 3) for i in range(30)):
        assert len(ex.choices) == 4
        for c in ex.choices:
            assert len(c) == len(ex.answer) and c[-1] != "0" or len(c) == 1
            differing = sum(x != y for x, y in zip(c, ex.answer, strict=True))
            assert differing == (0 if c == ex.answer else 1)


def test_icl_perfect_learner_improves_with_shots():
    mod = SKILLS["icl"]
    acc = {}
    for shots in mod.DIFFICULTIES:
        rng = random.Random(0)
        exs = [mod.sample(rng, shots) for _ in range(2000)]
        acc[shots] = sum(_solve(e) == e.answer for e in exs) / len(exs)
    assert acc[0] == 0 and acc[1] < acc[2] < acc[4] == acc[8] == 1.0
    assert abs(acc[1] - 0.25) < 0.05


def test_get_skill_unknown_lists_names():
    assert get_skill("chain") is SKILLS["chain"]
    with pytest.raises(KeyError) as e:
        get_skill("nope")
    assert "nope" in str(e.value) and "addition" in str(e.value) and "\n" not in str(e.value)


def test_heldout_split_by_construction():
    exs = heldout_examples("addition", 3, 50)
    assert len(exs) == 50 and len({e.text for e in exs}) == 50
    assert all(is_heldout(e) for e in exs)
    assert exs == heldout_examples("addition", 3, 50)  # deterministic
    assert exs != heldout_examples("addition", 3, 50, seed=99)
    small = heldout_examples("addition", 1, 100)  # 100 possible sums, ~10 held out
    assert 0 < len(small) < 30
    rng = random.Random(0)
    assert not any(is_heldout(sample_train("modular", rng, 5)) for _ in range(500))
    with pytest.raises(ValueError, match="no difficulty 9"):
        heldout_examples("chain", 9, 5)


# ---------------------------------------------------------------- corpus + shards


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_corpus(CorpusSpec(**SMALL), tmp_path_factory.mktemp("corpora"))


def _all_heldout(n=40):
    return [e for name, mod in SKILLS.items() for d in mod.DIFFICULTIES
            for e in heldout_examples(name, d, n)]


def test_no_heldout_example_in_train_shard(corpus):
    exs = _all_heldout()
    assert len(exs) > 500
    assert check_contamination(corpus, exs) == []
    assert check_contamination(open_shard(corpus, "val"), exs, "char") == []


def test_contamination_check_finds_planted_example(corpus, tmp_path):
    exs = heldout_examples("addition", 2, 5)
    tok = CharTokenizer()
    text = tok.decode(open_shard(corpus, "train"))
    lines = text.split("\n")
    lines.insert(len(lines) // 2, exs[1].text)
    # A near miss that only contains the example as a substring must not count.
    lines.insert(3, "x" + exs[2].text)
    planted = tmp_path / "planted.bin"
    tok.encode_array("\n".join(lines)).tofile(planted)
    assert check_contamination(planted, exs, tok) == [exs[1]]


def test_corpus_deterministic_and_seed_dependent(corpus, tmp_path):
    again = build_corpus(CorpusSpec(**SMALL), tmp_path / "a")
    assert again.name == corpus.name == spec_hash(CorpusSpec(**SMALL))[:12]
    assert data_hash(again) == data_hash(corpus)
    other = build_corpus(CorpusSpec(seed=1, **SMALL), tmp_path / "a")
    assert data_hash(other) != data_hash(corpus)
    train = generate_text(CorpusSpec(**SMALL), "train", 5000)
    assert train != generate_text(CorpusSpec(**SMALL), "val", 5000)
    assert train.startswith("\n")
    assert generate_text(CorpusSpec(**SMALL), "train", 3000) == train[:3000]  # prefix property


def test_corpus_reused_not_rebuilt(corpus):
    mtime = (corpus / "train.bin").stat().st_mtime_ns
    assert build_corpus(CorpusSpec(**SMALL), corpus.parent) == corpus
    assert (corpus / "train.bin").stat().st_mtime_ns == mtime
    m = read_manifest(corpus)
    assert m["tokens"] == {"train": 20_000, "val": 2_000} and m["vocab_size"] == 128
    assert CorpusSpec.from_dict(m["spec"]) == CorpusSpec(**SMALL)
    assert len(open_shard(corpus, "train")) == 20_000


def test_corrupted_or_truncated_shard_raises(corpus, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(corpus, bad)
    raw = bytearray((bad / "train.bin").read_bytes())
    raw[1234] ^= 1
    (bad / "train.bin").write_bytes(bytes(raw))
    with pytest.raises(ShardError, match="train.bin"):
        open_shard(bad, "train")
    open_shard(bad, "train", verify=False)  # the unverified path still maps it
    (bad / "val.bin").write_bytes((bad / "val.bin").read_bytes()[:-2])
    with pytest.raises(ShardError, match="val.bin.*truncated"):
        open_shard(bad, "val")
    (bad / "val.bin").unlink()
    with pytest.raises(ShardError, match="val.bin"):
        open_shard(bad, "val")


def test_get_batch_order_independent_of_batch_size():
    shard = np.arange(1000, dtype=np.uint16)
    x4a, y4a = get_batch(shard, 0, 4, 16)
    x4b, y4b = get_batch(shard, 1, 4, 16)
    x8, y8 = get_batch(shard, 0, 8, 16)
    assert x8.dtype.is_floating_point is False and x8.shape == (8, 16)
    assert (np.concatenate([x4a, x4b]) == x8.numpy()).all()
    assert (np.concatenate([y4a, y4b]) == y8.numpy()).all()
    assert (y8[:, :-1] == x8[:, 1:]).all() and int(x8[1, 0]) == 16
    # Wrap-around modulo the shard length.
    x, _ = get_batch(shard, 7, 8, 16)  # starts at 7 * 128 = 896
    assert int(x[7, 0]) == (896 + 7 * 16) % 1000 and int(x[7, -1]) == (896 + 8 * 16 - 1) % 1000


def test_get_batch_ranks_cover_global_batch():
    shard = np.arange(5000, dtype=np.uint16) % 997
    gx, _ = get_batch(shard, 3, 8, 32)
    rows = np.zeros((8, 32), dtype=np.int64)
    for rank in range(4):
        x, _ = get_batch(shard, 3, 8, 32, rank=rank, world_size=4)
        assert x.shape == (2, 32)
        rows[rank::4] = x.numpy()
    assert (rows == gx.numpy()).all()
    with pytest.raises(ValueError):
        get_batch(shard, 0, 6, 32, rank=0, world_size=4)


@pytest.mark.parametrize("kwargs,msg", [
    ({"train_tokens": 0}, "train_tokens"),
    ({"val_tokens": -5}, "val_tokens"),
    ({"mix": {"adition": 1.0}}, "unknown skill 'adition'"),
    ({"mix": {"addition": -1.0}}, ">= 0"),
    ({"mix": {"addition": 0.0}}, "sum to 0"),
    ({"mix": {}}, "empty"),
    ({"difficulty_weights": {"chain": {9: 1.0}}}, "no difficulty 9"),
    ({"heldout_fraction": 1.5}, "heldout_fraction"),
    ({"tokenizer": "gpt2"}, "tokenizer"),
    ({"source": "/nonexistent/dir"}, "matches no .txt"),
])
def test_spec_validation_errors(kwargs, msg):
    with pytest.raises(ValueError, match=msg) as e:
        CorpusSpec(**kwargs).validate()
    assert "\n" not in str(e.value)


def test_user_text_source(tmp_path):
    src = tmp_path / "texts"
    src.mkdir()
    (src / "a.txt").write_text("hello world\n" * 300)
    (src / "b.txt").write_text("the end\n" * 300)
    spec = CorpusSpec(train_tokens=3000, val_tokens=500, source=str(src))
    d = build_corpus(spec, tmp_path / "c")
    tok = CharTokenizer()
    train, val = open_shard(d, "train"), open_shard(d, "val")
    assert len(train) == 3000 and len(val) == 500
    assert tok.decode(train).startswith("hello world\nhello")
    assert int(val[-1]) == tok.eot_id and tok.decode(val).endswith("the end\n")
    with pytest.raises(ValueError, match="needs"):
        build_corpus(CorpusSpec(train_tokens=10**6, val_tokens=10, source=str(src)), tmp_path)


def test_bin_source_and_bpe_corpus(tmp_path):
    ids = (np.arange(4000) % 128).astype(np.uint16)
    ids.tofile(tmp_path / "pre.bin")
    d = build_corpus(CorpusSpec(train_tokens=3000, val_tokens=1000,
                                source=str(tmp_path / "pre.bin")), tmp_path / "c")
    assert (open_shard(d, "train") == ids[:3000]).all()
    assert (open_shard(d, "val") == ids[3000:]).all()
    lines = generate_text(CorpusSpec(), "train", 20_000).split("\n")
    path = _train_bpe(tmp_path / "bpe.json", lines)
    spec = CorpusSpec(tokenizer=str(path), train_tokens=2000, val_tokens=300)
    d = build_corpus(spec, tmp_path / "c")
    m = read_manifest(d)
    assert m["tokens"] == {"train": 2000, "val": 300} and m["tokenizer_sha256"]
    assert check_contamination(d, _all_heldout(5)) == []


def test_manifest_is_json_with_hashes(corpus):
    m = json.loads((corpus / "manifest.json").read_text())
    assert m["spec_hash"].startswith(corpus.name) and set(m["sha256"]) == {"train", "val"}


def test_encode_batch_equals_encode_of_each_text():
    from scaling.data.tokenizer import get_tokenizer

    tok = get_tokenizer("char")
    texts = ["\nQ: what is 3 plus 4? A: ", "7", "", "copy: abc|abc"]
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]
    with pytest.raises(ValueError, match="position 2"):
        tok.encode_batch(["ok", "ab\u00e9"])
