"""Metrics logging: a local JSONL file always, wandb when a sweep needs it or the user asks.

`run.wandb` is `auto` by default: wandb is on when the process was started by a wandb agent
(`wandb agent` sets WANDB_SWEEP_ID, WANDB_RUN_ID and WANDB_SWEEP_PARAM_PATH for every run
it launches; see wandb/wandb_agent.py), so the sweep's `metric: val/loss` is reported, and
off otherwise (`scaling sweep`, `scaling train`). Nothing here ever asks for a login: under
an agent the mode is WANDB_MODE if set, else online when an API key is configured and
offline when none is. WANDB_MODE=disabled (or WANDB_DISABLED=true) turns wandb off whatever
the config says. Only rank 0 logs.

What a run holds in wandb: `train/loss`, `train/grad_norm`, `lr`, `perf/tokens_per_s`,
`perf/flops_per_s`, `perf/mfu` (against a matmul peak measured here), `val/loss` at every
checkpoint, and after evaluation one series per probe metric, `eval/<task>/<shots>shot/
<metric>`, one point per checkpoint. Every point carries `tokens`, `flops` and `step`;
`tokens` is the default x axis (`define_metric`) and `flops` or `step` can be picked in the
UI. wandb's own step is only a counter: evaluation, which comes after training (or later,
from `scaling eval RUN_DIR`, which resumes the same wandb run), can then add points at
earlier training steps.

The wandb run's id, project, entity and mode are stored in RUN_DIR/run.json (`wandb`), so
`scaling eval RUN_DIR` adds its scores to the run it evaluates.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from scaling import run_info

MODES = ("auto", "disabled", "offline", "online")
# Set by `wandb agent` (and wandb.agent) in the environment of every run it starts.
AGENT_ENV = "WANDB_SWEEP_ID"
# The x axes of every series, and the series that use `tokens` as their default one.
AXES = ("tokens", "flops", "step")
SERIES = ("train/*", "val/*", "eval/*", "perf/*", "lr")
_ENV_ALIASES = {"run": "online", "dryrun": "offline"}  # older WANDB_MODE spellings


def under_agent(env=None) -> bool:
    """Whether this process is a run started by a wandb agent."""
    env = os.environ if env is None else env
    return bool(env.get(AGENT_ENV))


def env_mode(env=None) -> str | None:
    """The mode WANDB_MODE / WANDB_DISABLED ask for (disabled, offline, online), if any."""
    env = os.environ if env is None else env
    if str(env.get("WANDB_DISABLED", "")).lower() in ("true", "1", "yes"):
        return "disabled"
    mode = str(env.get("WANDB_MODE", "")).strip().lower()
    mode = _ENV_ALIASES.get(mode, mode)
    return mode if mode in ("disabled", "offline", "online") else None


def has_credentials(env=None) -> bool:
    """Whether wandb would find an API key without prompting: WANDB_API_KEY, an identity
    token file, or a .netrc entry for the W&B host (where `wandb login` stores the key)."""
    env = os.environ if env is None else env
    if env.get("WANDB_API_KEY") or env.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    import netrc
    from urllib.parse import urlsplit

    host = urlsplit(env.get("WANDB_BASE_URL") or "https://api.wandb.ai").netloc
    path = env.get("NETRC") or str(Path.home() / ".netrc")
    try:
        return bool(host) and netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(setting: str, env=None) -> str:
    """The wandb mode a run uses for `run.wandb=setting` in environment `env`.

    disabled stays disabled; WANDB_MODE=disabled wins over everything; `auto` is disabled
    outside a wandb agent; otherwise WANDB_MODE, when set, decides; an explicit setting is
    taken as given; `auto` under an agent is online with an API key and offline without
    (so a run never stops at a login prompt).
    """
    env = os.environ if env is None else env
    if setting not in MODES:
        raise ValueError(f"run.wandb={setting!r}: must be one of {', '.join(MODES)}")
    forced = env_mode(env)
    if setting == "disabled" or forced == "disabled":
        return "disabled"
    if setting == "auto" and not under_agent(env):
        return "disabled"
    if forced:
        return forced
    if setting != "auto":
        return setting
    return "online" if has_credentials(env) else "offline"


def resume_mode(stored: str, env=None) -> str:
    """The mode in which `scaling eval` adds to a run trained with wandb in mode `stored`:
    WANDB_MODE when set, else the stored mode, offline when online has no API key now."""
    env = os.environ if env is None else env
    forced = env_mode(env)
    if forced:
        return forced
    if stored == "online" and not has_credentials(env):
        return "offline"
    return stored if stored in ("offline", "online") else "disabled"


class DummyWandb:
    """Stand-in with wandb's signatures that does nothing."""

    def log(self, data: dict, step: int | None = None) -> None:
        """Ignore metrics."""

    def finish(self) -> None:
        """Nothing to close."""


class MetricsLogger:
    """Writes every metrics dict to `run_dir/train_log.jsonl` and forwards it to wandb.

    mode: a `run.wandb` setting (auto, disabled, offline, online), resolved by
    `resolve_mode`. resume: a run.json `wandb` record to continue (`scaling eval`), in
    which case `mode` is ignored. device / bf16: where training runs, for the MFU's peak.
    """

    def __init__(self, run_dir: Path, mode: str = "auto", project: str = "scaling",
                 name: str = "", config: dict | None = None, enabled: bool = True,
                 device: str = "cpu", bf16: bool = False, resume: dict | None = None):
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "train_log.jsonl"
        self.wandb = DummyWandb()
        self.device, self.bf16, self._peak = device, bf16, None
        if not enabled:
            return
        mode = resume_mode(resume.get("mode", "")) if resume else resolve_mode(mode)
        if mode == "disabled":
            return
        os.environ.setdefault("WANDB_SILENT", "true")
        self.wandb = _init(self.run_dir, mode, project, name, config, resume) or DummyWandb()
        if not resume and not isinstance(self.wandb, DummyWandb):
            _remember(self.run_dir, self.wandb, mode)

    @property
    def active(self) -> bool:
        """Whether metrics reach a wandb run."""
        return self.enabled and not isinstance(self.wandb, DummyWandb)

    def log(self, data: dict, step: int) -> None:
        """Record namespaced metrics (`train/loss`, `val/loss`, `lr`, `perf/...`, with
        `tokens` and `flops`) of training step `step`."""
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **data}) + "\n")
        if self.active:
            if "perf/flops_per_s" in data:
                data = {**data, "perf/mfu": data["perf/flops_per_s"] / self.peak_flops()}
            self.wandb.log({**data, "step": step})

    def log_eval_rows(self, rows: list[dict]) -> None:
        """Send one checkpoint's result rows (dicts in the results schema) to wandb: one
        point per checkpoint on each `eval/<task>/<shots>shot/<metric>` series."""
        if not self.active or not rows:
            return
        by_step: dict = {}
        for r in rows:
            if r.get("task") == "val":
                continue  # val/loss is logged by training itself
            point = by_step.setdefault(r["step"], {"step": r["step"], "tokens": r["tokens"],
                                                   "flops": r["flops"]})
            point[f"eval/{r['task']}/{r['shots']}shot/{r['metric']}"] = r["value"]
        for step in sorted(by_step):
            self.wandb.log(by_step[step])

    def log_results(self, rows) -> None:
        """Send all evaluation rows (a results DataFrame) to wandb: a table of every row and,
        as the run summary, each (task, shots, metric) at the last checkpoint."""
        if not self.active or rows.empty:
            return
        import wandb

        self.wandb.log({"eval/results": wandb.Table(dataframe=rows)})
        last = rows[rows.step == rows.step.max()]
        for r in last.itertuples():
            self.wandb.summary[f"eval/{r.task}/{r.shots}shot/{r.metric}"] = r.value

    def peak_flops(self) -> float:
        """This machine's matmul FLOP/s in the training precision, measured once."""
        if self._peak is None:
            self._peak = matmul_peak(self.device, self.bf16)
        return self._peak

    def finish(self) -> None:
        """Close the wandb run, if any."""
        if self.enabled:
            self.wandb.finish()


def for_eval(run_dir: Path) -> MetricsLogger:
    """A logger that adds `scaling eval` scores to the wandb run that trained `run_dir`
    (a no-op logger when that run used no wandb or WANDB_MODE=disabled)."""
    try:
        record = run_info.read(run_dir).get("wandb")
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict) or not record.get("id"):
        return MetricsLogger(run_dir, "disabled")
    return MetricsLogger(run_dir, resume=record)


def log_report(out_dir: Path, written: dict, results_path, project: str = "scaling") -> str:
    """Send a written report to wandb (`scaling report --wandb`): every figure as an image
    (`report/<figure>`) and an artifact `report` holding report.md/html, the CSV tables,
    the figures and the results the report was built from. The mode is WANDB_MODE, else
    online with an API key and offline without; the wandb directory is wandb's default
    (./wandb or WANDB_DIR), not the report directory. Returns where the run went."""
    import tempfile

    import wandb

    mode = env_mode() or ("online" if has_credentials() else "offline")
    if mode == "disabled":
        return "nowhere (WANDB_MODE=disabled)"
    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(project=project, job_type="report", mode=mode,
                     name=f"report-{Path(out_dir).resolve().name}",
                     dir=os.environ.get("WANDB_DIR") or ".")  # read now, not at wandb's setup
    try:
        figures = {f"report/{Path(n).stem}": wandb.Image(str(p)) for n, p in written.items()
                   if str(n).endswith(".png")}
        if figures:
            run.log(figures)
        artifact = wandb.Artifact("report", type="report",
                                  description=f"scaling report of {results_path}")
        for name, path in written.items():
            artifact.add_file(str(path), name=str(name))
        with tempfile.TemporaryDirectory() as tmp:
            results = Path(results_path)
            if results.is_dir():  # a runs directory: the rows it holds, as one file
                from scaling.results import load

                results = Path(tmp) / "results.csv"
                load(results_path).to_csv(results, index=False)
            artifact.add_file(str(results), name=f"results{results.suffix}")
            run.log_artifact(artifact)
            where = (run.url if mode == "online" else
                     f"{Path(run.dir).parent} (offline: `wandb sync` uploads it)")
            run.finish()  # uploads (or writes) the artifact while the temp file exists
    except BaseException:
        run.finish(exit_code=1)
        raise
    return where


def _init(run_dir: Path, mode: str, project: str, name: str, config: dict | None,
          resume: dict | None):
    """wandb.init for a new, agent-started or resumed run; None (with a one-line warning)
    when wandb cannot start: the run goes on, logged to train_log.jsonl only."""
    import wandb  # lazy: importing wandb costs seconds and is often unused

    if resume:
        kwargs = dict(id=resume["id"], project=resume.get("project") or project,
                      entity=resume.get("entity") or None, resume="allow")
    elif under_agent():
        # The agent chose the run id, project and entity (WANDB_RUN_ID, WANDB_PROJECT,
        # WANDB_ENTITY, or its settings, where it found the sweep): ours could differ. Read
        # here, not left to wandb, which reads the environment once per process.
        kwargs = dict(id=os.environ.get("WANDB_RUN_ID") or None,
                      project=os.environ.get("WANDB_PROJECT") or None,
                      entity=os.environ.get("WANDB_ENTITY") or None,
                      name=name or None, config=config, resume="allow")
    else:
        # A stable id per run directory: a resumed training run continues its wandb run.
        kwargs = dict(id=_wandb_id(run_dir), project=project, name=name or None,
                      config=config, resume="allow")
    try:
        run = wandb.init(dir=str(run_dir), mode=mode, **kwargs)
    except Exception as exc:  # wandb raises many kinds; training must go on without it
        print(f"warning: wandb ({mode}) did not start, metrics go to {run_dir}/"
              f"train_log.jsonl only: {' '.join(str(exc).split())[:300]}", file=sys.stderr)
        return None
    for axis in AXES:
        run.define_metric(axis)
    for pattern in SERIES:
        run.define_metric(pattern, step_metric="tokens")
    return run


def _remember(run_dir: Path, run, mode: str) -> None:
    """Store the wandb run's identity in run.json (atomically) for `scaling eval`."""
    try:
        info = run_info.read(run_dir)
    except ValueError:
        info = {}
    info["wandb"] = {"id": run.id, "project": run.project, "entity": run.entity or "",
                     "mode": mode, "sweep": os.environ.get(AGENT_ENV, "")}
    run_info.write(run_dir, info)


def matmul_peak(device: str = "cpu", bf16: bool = False, seconds: float = 0.2) -> float:
    """FLOP/s of a square matmul on `device` with torch's current threads (the MFU's
    denominator, as bench/train_throughput.py measures it, shorter)."""
    import torch

    dtype = torch.bfloat16 if bf16 else torch.float32
    n = 4096 if device == "cuda" else 512
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    a @ b
    sync()
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    sync()
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def _wandb_id(run_dir: Path) -> str:
    import hashlib

    return hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]
