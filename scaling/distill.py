"""Knowledge distillation (Hinton et al. 2015) as an intervention on the ladder.

A student rung trains on the corpus, as a base rung does, with the loss

    a * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - a) * CE(s, y)

averaged over positions: s and t are the student's and the teacher's logits (B, T, vocab),
a = train.kd_alpha, T = train.kd_temperature. T^2 keeps the soft term's gradients on the
scale of the hard term's whatever the temperature (Hinton et al. 2015, section 2). The
teacher's logits are computed for each batch as it comes (under no_grad, in eval mode;
nothing is cached to disk). Validation loss stays the plain next-token cross-entropy, so a
distilled run's `val` rows compare with the base ladder's.

The teacher is a run of this harness: `train.teacher=RUN_DIR` (its last checkpoint; the run
must be done training) or `RUN_DIR@stepN`. `find_teacher` checks it when training starts,
before the student's run directory is made, each failure one line:
- the directory exists, holds finished checkpoints, and has the step asked for;
- the teacher is a causal LM (not an MLM encoder) with the student's vocabulary size and
  block size;
- tokenizer: the teacher must use the student's tokenizer (`char`, or a BPE file with the
  same sha256: logits are compared id by id, so the ids must mean the same text). Its
  corpus may differ: what a teacher learnt from other data is what distillation hands on.
  The teacher's corpus hash is recorded, not required to match.
The teacher's identity (resolved run directory, step, sha256 of the checkpoint file, rung,
corpus hash) goes into the student's run.json as `teacher`; a resumed run whose teacher now
resolves to another directory, step or file is refused before any step (`record_teacher`).
Rows of a distilled run carry `intervention=distill:<teacher rung>` (Config.intervention).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F

from scaling import run_info
from scaling.checkpoint import list_checkpoints, load_checkpoint, load_model
from scaling.config import Config, ConfigError



def parse_teacher(spec: str) -> tuple[Path, int | None]:
    """`RUN_DIR` or `RUN_DIR@stepN` -> (run directory, step or None for the last one)."""
    try:
        return run_info.parse_checkpoint_spec(spec)
    except ValueError as exc:
        raise ConfigError(f"train.teacher={exc}") from None


@dataclasses.dataclass(frozen=True)
class Teacher:
    """A checked teacher checkpoint and its identity."""

    run_dir: Path  # resolved (absolute)
    step: int
    path: Path  # the checkpoint file
    sha256: str  # of the checkpoint file, as its metadata records it
    rung: str
    data_hash: str | None  # the teacher's corpus (recorded; may differ from the student's)

    def identity(self) -> dict:
        """What run.json records as `teacher`, and what a resumed run must find again."""
        return {"run_dir": str(self.run_dir), "step": self.step, "sha256": self.sha256,
                "rung": self.rung, "data_hash": self.data_hash}


def _student_tokenizer(cfg: Config) -> tuple[str, str | None, int]:
    """(tokenizer name, sha256 of its file or None for char, vocabulary size) of the
    student, from its corpus spec (without building the corpus)."""
    from scaling.data.shards import file_sha256
    from scaling.data.tokenizer import get_tokenizer

    tok = get_tokenizer(cfg.data.tokenizer)
    sha = None if tok.name == "char" else file_sha256(Path(cfg.data.tokenizer))
    return tok.name, sha, cfg.model.vocab_size or tok.vocab_size


def _teacher_tokenizer_sha(meta: dict, where: str) -> str:
    """sha256 of a BPE teacher's tokenizer file, from its corpus manifest."""
    from scaling.data.shards import ShardError, read_manifest

    try:
        return read_manifest(meta.get("corpus_dir", "")).get("tokenizer_sha256") or ""
    except ShardError:
        raise ConfigError(f"train.teacher: cannot check {where}'s tokenizer: its corpus "
                          f"{meta.get('corpus_dir')!r} is gone (rebuild it)") from None


def find_teacher(cfg: Config) -> Teacher | None:
    """The teacher `cfg.train.teacher` names, checked against the student (module
    docstring); None when the run has no teacher. Errors are one-line ConfigErrors (a
    corrupted checkpoint: CheckpointError)."""
    spec = cfg.train.teacher
    if not spec:
        return None
    run_dir, step = parse_teacher(spec)
    if not run_dir.is_dir():
        raise ConfigError(f"train.teacher={spec!r}: no such run directory {run_dir}")
    checkpoints = dict(list_checkpoints(run_dir))
    if not checkpoints:
        raise ConfigError(f"train.teacher={spec!r}: {run_dir} is not a trained run "
                          "(no finished checkpoints)")
    if run_dir.resolve() == cfg.run_dir().resolve():
        raise ConfigError(f"train.teacher={spec!r}: a run cannot be its own teacher")
    if step is None:
        if run_info.read(run_dir).get("status") == run_info.TRAINING:
            raise ConfigError(f"train.teacher={spec!r}: {run_dir} is still training; wait for "
                              "it, or name a checkpoint: RUN_DIR@stepN")
        step = max(checkpoints)
    elif step not in checkpoints:
        have = ", ".join(map(str, sorted(checkpoints)))
        raise ConfigError(f"train.teacher={spec!r}: {run_dir} has no checkpoint at step "
                          f"{step} (it has steps {have})")
    path = checkpoints[step]
    state, meta = load_checkpoint(path)
    mc = state["model_config"]
    where = f"{run_dir}@step{step}"
    if not mc.get("causal", True):  # an encoder's logits at i are not a next-token guess
        raise ConfigError(f"train.teacher: {where} is a masked-LM encoder (model.objective="
                          "mlm); distillation needs a causal teacher")
    name, sha, vocab = _student_tokenizer(cfg)
    teacher_tok = meta.get("tokenizer", "char")
    if (teacher_tok == "char") != (name == "char") or (
            name != "char" and _teacher_tokenizer_sha(meta, where) != sha):
        raise ConfigError(f"train.teacher: {where} was trained with tokenizer {teacher_tok!r}, "
                          f"the student uses {cfg.data.tokenizer!r} (a teacher must share the "
                          "student's tokenizer)")
    if mc["vocab_size"] != vocab:
        raise ConfigError(f"train.teacher: {where} has vocabulary size {mc['vocab_size']}, the "
                          f"student {vocab}")
    if mc["block_size"] != cfg.model.block_size:
        raise ConfigError(f"train.teacher: {where} has block size {mc['block_size']}, the "
                          f"student model.block_size={cfg.model.block_size}")
    return Teacher(run_dir.resolve(), step, path, meta["sha256"], meta.get("rung", ""),
                   meta.get("data_hash"))


def record_teacher(run_dir: Path, teacher: Teacher | None) -> None:
    """Record the teacher's identity in the student's run.json; refuse (ConfigError) when
    the run began with another teacher (a resumed run must distil from the same file)."""
    if teacher is None:
        return
    before = run_info.read(run_dir).get("teacher")
    now = teacher.identity()
    if before is not None:
        changed = [k for k in ("run_dir", "step", "sha256") if before.get(k) != now[k]]
        if changed:
            was = f"{before.get('run_dir')}@step{before.get('step')}"
            raise ConfigError(
                f"{run_dir} was distilled from {was} (sha256 {str(before.get('sha256'))[:12]}), "
                f"but train.teacher now gives {now['run_dir']}@step{now['step']} (sha256 "
                f"{now['sha256'][:12]}); use another run.dir or the original teacher")
    run_info.update(run_dir, teacher=now)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), mean over positions.

    `student` and `teacher` are logits (B, T, vocab); computed in fp32 (like the model's
    cross-entropy) from log-probabilities of both, so no probability underflows to a log 0.
    """
    V = student.size(-1)
    log_s = F.log_softmax(student.float().reshape(-1, V) / temperature, dim=-1)  # (B*T, V)
    log_t = F.log_softmax(teacher.float().reshape(-1, V) / temperature, dim=-1)
    # batchmean: the summed KL divided by B*T, the number of positions
    return temperature ** 2 * F.kl_div(log_s, log_t, reduction="batchmean", log_target=True)


class Distillation:
    """The distillation objective (module docstring): soft targets from a teacher run."""

    name = "distill"

    def __init__(self, teacher: Teacher, alpha: float, temperature: float,
                 device: torch.device):
        self.teacher, self.alpha, self.temperature = teacher, alpha, temperature
        self.model, meta = load_model(teacher.path, device=device)  # eval mode
        if meta["sha256"] != teacher.sha256:
            raise ConfigError(f"train.teacher: {teacher.path} changed while training started")
        self.model.requires_grad_(False)

    @classmethod
    def from_config(cls, cfg: Config, device: torch.device) -> Distillation:
        """The objective of a run with `train.teacher` set."""
        return cls(find_teacher(cfg), cfg.train.kd_alpha, cfg.train.kd_temperature, device)

    def loss(self, model, x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        """a * T^2 * KL(teacher || student) + (1 - a) * CE(student, y), mean over positions."""
        logits, ce = model(x, y)  # (B, T, vocab), the mean next-token cross-entropy
        with torch.no_grad():
            teacher_logits, _ = self.model(x)  # (B, T, vocab)
        soft = kd_loss(logits, teacher_logits, self.temperature)
        return self.alpha * soft + (1.0 - self.alpha) * ce
