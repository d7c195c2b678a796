"""Plain helpers shared by several test modules: a synthetic results table, sweep files, the CLI.

Fixtures live in conftest.py; these are ordinary functions and constants, imported with
`from helpers import ...` (pytest puts tests/ on sys.path). They stay functions because the
tests call them with per-call arguments, from inside other helpers and next to module
constants (`STEPS[:cut]`), which a fixture cannot provide; conftest.py itself is not meant
to be imported.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pandas as pd
import yaml

from scaling.tasks import Task

# ---------------------------------------------------------------- results

BATCH_TOKENS = 4096
STEPS = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 1500, 2000, 2500]


def make_results(n_rungs: int = 6, tasks: dict | None = None, *, steps=STEPS, n: int = 300,
                 metrics=("exact_match", "token_accuracy", "edit_similarity",
                          "answer_logprob"),
                 optional: bool = True, seed: int = 0) -> pd.DataFrame:
    """A synthetic ladder in the results schema with planted abilities.

    Validation loss follows L = 1.5 + 30 N^-0.25 + 10 D^-0.2 (N params, D tokens; about 4.4
    to 2.6 at the end of training). Every task's per-token accuracy p is a function of that
    loss, so the same ability shows along training and across rungs:
    - "mirage": p = exp(-0.65 (L - 2.57)) rises smoothly (0.3 to 0.97 over the ladder);
      exact match = p^L with L = 8 answer tokens.
    - "smooth": p linear in the loss (0.15 to 0.6 over the ladder), exact match = p.
    - "flat": every score at chance plus noise.
    - "choice": a multiple-choice probe (metrics accuracy and gold_prob, chance 1/4) whose
      accuracy rises smoothly from chance.
    """
    tasks = tasks or {"addition": "mirage", "copy": "smooth", "chain": "flat"}
    rng = np.random.default_rng(seed)
    sizes = np.geomspace(2e4, 3e6, n_rungs).astype(int)
    rows = []
    for i, params in enumerate(sizes):
        run = f"r{i}"
        for step in steps:
            tokens = step * BATCH_TOKENS
            loss = 1.5 + 30 * params ** -0.25 + (10 * tokens ** -0.2 if tokens else 3.0)
            loss = float(loss * (1 + 0.003 * rng.standard_normal()))
            base = {"run": run, "rung": f"R{i}", "params": int(params),
                    "nonembed_params": int(params * 0.9), "step": step, "tokens": tokens,
                    "flops": 6.0 * params * tokens}
            if optional:
                base.update(seed=0, data_hash="abc123")
            rows.append(dict(base, task="val", shots=0, metric="loss", value=loss, n=50_000,
                             **({"chance": np.nan} if optional else {})))
            for task, kind in tasks.items():
                length, chance = (8, 0.0) if kind == "mirage" else (1, 0.1)
                if kind == "mirage":
                    p = float(np.clip(np.exp(-0.65 * (loss - 2.57)), 1e-3, 0.999))
                elif kind == "smooth":
                    p = float(np.clip(0.15 + 0.25 * (4.4 - loss), 0.02, 0.99))
                else:
                    p = 0.1
                scores = {"exact_match": rng.binomial(n, p ** length) / n,
                          "token_accuracy": rng.binomial(n * length, p) / (n * length),
                          "edit_similarity": float(np.clip(
                              0.2 + 0.8 * p + 0.01 * rng.standard_normal(), 0, 1)),
                          "answer_logprob": length * np.log(p) + 0.05 * rng.standard_normal(),
                          "contains": rng.binomial(n, min(1.0, 1.2 * p)) / n}
                if kind == "choice":
                    q = float(np.clip(0.25 + 0.3 * (4.4 - loss), 0.25, 0.95))
                    scores = {"accuracy": rng.binomial(n, q) / n,
                              "gold_prob": float(np.clip(q - 0.05 + 0.01 * rng.standard_normal(),
                                                         0, 1))}
                    chance = 0.25
                for metric in metrics if kind != "choice" else ("accuracy", "gold_prob"):
                    row = dict(base, task=task, shots=0 if kind != "smooth" else 3,
                               metric=metric, value=float(scores[metric]), n=n)
                    if optional:
                        row["chance"] = chance if metric in ("exact_match", "accuracy") \
                            else np.nan
                    rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- sweeps

SWEEP_SMALL = {"model.block_size": {"value": 32}, "train.batch_size": {"value": 8},
               "train.val_tokens": {"value": 512}, "data.train_tokens": {"value": 40000},
               "data.val_tokens": {"value": 3000}, "train.ckpt_interval": {"value": 10}}


def sweep_file(tmp_path, params, name="s", method="grid", **extra):
    """A sweep YAML in `tmp_path` training tiny runs into `tmp_path/runs/<name>`."""
    doc = {"name": name, "program": "scaling.train", "method": method,
           "parameters": {**SWEEP_SMALL,
                          "run.root": {"value": str(tmp_path / "runs" / name)},
                          "run.data_root": {"value": str(tmp_path / "data")}, **params},
           "command": ["${env}", "${interpreter}", "-m", "scaling.train", "${args}"], **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def run_scaling(*args, cwd=None, **kw):
    """`python -m scaling.cli ARGS` in a subprocess, output captured as text."""
    return subprocess.run([sys.executable, "-m", "scaling.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600, **kw)


# ---------------------------------------------------------------- tasks


@dataclasses.dataclass(frozen=True)
class FixedTask(Task):
    """A probe task whose instances are given by hand (a task defined inside a test)."""

    fixed: tuple = ()

    def examples(self):
        return list(self.fixed)
