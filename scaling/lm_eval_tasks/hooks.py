"""lm-eval hooks of the exported probe tasks (referenced by `!function` in their YAMLs).

- `LocalTask`: reads the task's instances from the JSONL written next to its YAML (by
  absolute path; never the network).
- `ProbeTask`: generation probes need, per instance, one greedy generation (exact_match,
  edit_similarity) and the teacher-forced score of every gold token (token_accuracy,
  answer_logprob, answer_prob). lm-eval's loglikelihood request returns only a sum and an all-greedy
  flag, so the task asks one single-token loglikelihood request per gold token
  (context + gold[:i], gold[i]) next to its generate_until request, as lm-eval's own
  SQuAD v2 task mixes request types.
- `process_generate` / `process_choice`: the per-instance metrics, computed by
  scaling.metrics exactly as the native evaluator computes them.
"""

from __future__ import annotations

import json
from pathlib import Path

from lm_eval.api.instance import Instance
from lm_eval.api.task import ConfigurableTask

from scaling.metrics import choice_scores, cut_at_stops, generate_scores


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
    """A generate_until task that also scores every gold token under teacher forcing."""

    def construct_requests(self, doc: dict, ctx: str, **kwargs) -> list[Instance]:
        """One generate_until request (idx 0), then one loglikelihood per gold token."""
        kwargs.pop("apply_chat_template", None)
        kwargs.pop("chat_template", None)
        gen_kwargs = {"until": list(doc["stop"]), "max_gen_toks": int(doc["max_gen_toks"]),
                      "do_sample": False}
        pieces = doc["answer_pieces"]
        requests = [Instance(request_type="generate_until", doc=doc,
                             arguments=(ctx, gen_kwargs), idx=0, **kwargs)]
        requests += [Instance(request_type="loglikelihood", doc=doc,
                              arguments=(ctx + "".join(pieces[:i]), piece), idx=i + 1,
                              **kwargs)
                     for i, piece in enumerate(pieces)]
        return requests


def process_generate(doc: dict, results: list) -> dict[str, float]:
    """Generation metrics from [generated text, (logprob, is_greedy) per gold token]."""
    pred = cut_at_stops(results[0], doc["stop"])
    token_results = results[1:]
    return generate_scores(pred, doc["answer"], [lp for lp, _ in token_results],
                           [bool(greedy) for _, greedy in token_results])


def process_choice(doc: dict, results: list) -> dict[str, float]:
    """Multiple-choice metrics from [(log-likelihood, is_greedy) per option]."""
    return choice_scores([ll for ll, _ in results], int(doc["gold"]))
