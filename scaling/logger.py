"""Metrics logging: a local JSONL file always, wandb only when asked (nanochat's DummyWandb).

wandb is imported lazily and runs offline or disabled unless the user sets
run.wandb=online; nothing here ever asks for a login. Only rank 0 logs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class DummyWandb:
    """Stand-in with wandb's signatures that does nothing."""

    def log(self, data: dict, step: int | None = None) -> None:
        """Ignore metrics."""

    def finish(self) -> None:
        """Nothing to close."""


class MetricsLogger:
    """Writes every metrics dict to `run_dir/train_log.jsonl` and forwards it to wandb."""

    def __init__(self, run_dir: Path, mode: str = "disabled", project: str = "scaling",
                 name: str = "", config: dict | None = None, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(run_dir) / "train_log.jsonl"
        self.wandb = DummyWandb()
        if enabled and mode != "disabled":
            import wandb  # lazy: importing wandb costs seconds and is often unused

            os.environ.setdefault("WANDB_SILENT", "true")
            # Under `wandb agent` the run id comes from the agent; otherwise a stable id per
            # run directory makes a resumed run continue the same wandb run.
            run_id = None if os.environ.get("WANDB_SWEEP_ID") else _wandb_id(run_dir)
            self.wandb = wandb.init(project=project, name=name or None, config=config,
                                    dir=str(run_dir), mode=mode, resume="allow", id=run_id)

    def log(self, data: dict, step: int) -> None:
        """Record namespaced metrics (`train/loss`, `val/loss`, `lr`, `mfu`) at `step`."""
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **data}) + "\n")
        self.wandb.log(data, step=step)

    def log_results(self, rows) -> None:
        """Send evaluation rows (a results DataFrame) to wandb: a table of every row and,
        as the run summary, each (task, shots, metric) at the last checkpoint."""
        if not self.enabled or isinstance(self.wandb, DummyWandb) or rows.empty:
            return
        import wandb

        self.wandb.log({"eval/results": wandb.Table(dataframe=rows)})
        last = rows[rows.step == rows.step.max()]
        for r in last.itertuples():
            self.wandb.summary[f"eval/{r.task}/{r.shots}shot/{r.metric}"] = r.value

    def finish(self) -> None:
        """Close the wandb run, if any."""
        if self.enabled:
            self.wandb.finish()


def _wandb_id(run_dir: Path) -> str:
    import hashlib

    return hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]
