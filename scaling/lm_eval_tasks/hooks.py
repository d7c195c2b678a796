"""lm-eval hooks of the exported probe tasks (referenced by `!function` in their YAMLs).

- `LocalTask`: reads the task's instances from the JSONL written next to its YAML (by
  absolute path; never the network).
- `ProbeTask`: generation probes need, per instance, one greedy generation (exact_match,
  edit_similarity), the log-probability of the gold answer (answer_logprob, answer_prob)
  and, per gold CHARACTER c_i, whether the model's greedy next token after the text
  prompt + gold[:i] begins with c_i (token_accuracy; definitions in scaling/metrics.py).
  The task asks, as lm-eval's own SQuAD v2 task mixes request types: a generate_until
  request, one loglikelihood request (prompt, gold), and one generate_until request per
  gold character (prompt + gold[:i], max_gen_toks=1, no stop strings). A greedy flag is
  asked of generation, not of loglikelihood's is_greedy: a backend that encodes context
  and continuation together (lm-eval's `hf`) can merge a one-character continuation into
  the context's last token, and the flag would then judge another string. Everything is
  text, so any backend and tokenizer gives scores with the same meaning.
- `process_generate` / `process_choice`: the per-instance metrics, computed by
  scaling.metrics exactly as the native evaluator computes them.
"""

from __future__ import annotations

import json
from pathlib import Path

from lm_eval.api.instance import Instance
from lm_eval.api.task import ConfigurableTask

from scaling.metrics import choice_scores, cut_at_stops, generate_scores, greedy_char_hit


def load_docs(data_file: str, **_metadata) -> dict:
    """{"test": Dataset} read from a local JSONL (extra metadata from lm-eval is ignored)."""
    import datasets

    path = Path(data_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: exported probe data missing; re-run "
                                "`scaling lm-eval export DIR`")
    with open(path) as f:
        docs = [json.loads(line) for line in f if line.strip()]
    return {"test": datasets.Dataset.from_list(docs)}


class LocalTask(ConfigurableTask):
    """A task whose instances come from `dataset_kwargs.data_file` (a local JSONL)."""

    def __init__(self, config: dict | None = None, **kwargs):
        config = {k: v for k, v in (config or {}).items() if k != "class"}
        super().__init__(config=config, **kwargs)

    def download(self, dataset_kwargs: dict | None = None, **kwargs) -> None:
        """Read the exported instances (never the network)."""
        self.dataset = load_docs(**(dataset_kwargs or {}))


class ProbeTask(LocalTask):
    """A generate_until task that also scores the gold answer and each of its characters."""

    def construct_requests(self, doc: dict, ctx: str, **kwargs) -> list[Instance]:
        """Greedy generation (idx 0), log-likelihood of the gold answer (idx 1), then one
        single-token greedy generation per gold character (idx 2 + i)."""
        kwargs.pop("apply_chat_template", None)
        kwargs.pop("chat_template", None)
        answer = doc["answer"]
        gen_kwargs = {"until": list(doc["stop"]), "max_gen_toks": int(doc["max_gen_toks"]),
                      "do_sample": False}
        # No stop strings: the one token decoded is judged whole (a backend still stops at
        # its end-of-text token, which then reads as a miss).
        next_kwargs = {"until": [], "max_gen_toks": 1, "do_sample": False}
        requests = [Instance(request_type="generate_until", doc=doc,
                             arguments=(ctx, gen_kwargs), idx=0, **kwargs),
                    Instance(request_type="loglikelihood", doc=doc,
                             arguments=(ctx, answer), idx=1, **kwargs)]
        requests += [Instance(request_type="generate_until", doc=doc,
                              arguments=(ctx + answer[:i], dict(next_kwargs)), idx=2 + i,
                              **kwargs)
                     for i in range(len(answer))]
        return requests


def process_generate(doc: dict, results: list) -> dict[str, float]:
    """Generation metrics from [generated text, (log-likelihood of the gold answer,
    is_greedy), greedy next text after prompt + gold[:i] for each gold character i]."""
    answer = doc["answer"]
    pred = cut_at_stops(results[0], doc["stop"])
    logprob = float(results[1][0])
    flags = [greedy_char_hit(text, c) for text, c in zip(results[2:], answer, strict=True)]
    return generate_scores(pred, answer, [logprob], flags)


def process_choice(doc: dict, results: list) -> dict[str, float]:
    """Multiple-choice metrics from [(log-likelihood, is_greedy) per option]."""
    return choice_scores([ll for ll, _ in results], int(doc["gold"]))
