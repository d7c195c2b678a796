"""Typed configuration: dataclasses loaded from YAML and overridden by `--section.key=value`.

The override form is exactly what `wandb agent` passes (flat `--model.size=s3` arguments;
nested parameters arrive as a dict literal). Unknown keys are errors that name the key and
the closest valid one; impossible values are refused in `validate()` before anything runs.
YAML is read with `safe_load` and values are coerced by the field's declared type: nothing
from a config or the command line is ever evaluated as code.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from scaling.data.corpus import CorpusSpec


class ConfigError(ValueError):
    """A configuration problem, described in one line."""


@dataclass
class ModelConfig:
    """The network. `size` names a ladder rung; explicit shape fields override it."""

    size: str = "s3"  # rung name from scaling/ladder.py (sets n_layer, d_model, n_head)
    n_layer: int = 0  # transformer blocks (0 = from the rung)
    d_model: int = 0  # residual width (0 = from the rung)
    n_head: int = 0  # attention heads; d_model must be divisible by it (0 = from the rung)
    block_size: int = 128  # context length in tokens
    vocab_size: int = 0  # 0 = from the corpus tokenizer
    pos: str = "rotary"  # positions: rotary (GPT-NeoX/Pythia) | learned | sinusoidal
    dropout: float = 0.0  # dropout on attention/MLP outputs (0 for single-epoch training)
    mlp_ratio: int = 4  # MLP hidden width = mlp_ratio * d_model
    objective: str = "clm"  # clm (next token, the base ladder) | mlm (BERT masked LM: encoders)


@dataclass
class TrainConfig:
    """The optimisation. Rates and batch sizes of 0 come from the ladder's scaling rules."""

    tokens: int = 3_000_000  # training tokens per rung (the identical data budget)
    batch_size: int = 0  # sequences per optimizer step, global (0 = ladder rule)
    lr: float = 0.0  # peak learning rate (0 = ladder rule)
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_frac: float = 0.05  # share of steps with linear warmup
    weight_decay: float = 0.1  # AdamW decoupled weight decay on matrices only
    beta1: float = 0.9  # AdamW beta1
    beta2: float = 0.95  # AdamW beta2
    grad_clip: float = 1.0  # global gradient-norm clip (0 = off)
    ckpt_interval: int = 0  # steps between linear checkpoints (0 = total_steps // 8)
    log_interval: int = 10  # steps between training-log lines
    val_tokens: int = 65_536  # validation tokens scored at every checkpoint
    seed: int = 0  # model init seed (data order is fixed by the corpus, not this)
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    compile: bool = False  # torch.compile the model (slow first step, faster steps; docs/LOG.md)
    teacher: str = ""  # distil from this run: RUN_DIR (last checkpoint) or RUN_DIR@stepN; "" = none
    kd_alpha: float = 0.5  # weight of the distillation term (1 - kd_alpha: the data's CE)
    kd_temperature: float = 2.0  # softmax temperature of the distillation term (Hinton et al. 2015)


@dataclass
class RunConfig:
    """Where the run lives and how it reports."""

    dir: str = ""  # run directory; reruns resume (default: {root}/{size}-{config hash})
    root: str = "runs/default"  # parent of derived run directories (a sweep's directory)
    name: str = ""  # run name in results (default: the directory's name)
    data_root: str = "data"  # where built corpora are cached, keyed by spec hash
    wandb: str = "auto"  # auto (on under a wandb agent) | disabled | offline | online
    wandb_project: str = "scaling"  # wandb project name
    threads: int = 0  # torch CPU threads (0 = torch default)
    evaluate: bool = False  # after training, score every checkpoint on the probe tasks
    tasks: str = "default"  # probe tasks to evaluate: "default" or comma-separated names
    eval_n: int = 0  # instances per probe task (0 = each task's default, 500)


# Fields that may change between the first start of a run and its resumption, because they
# do not change what is trained: where it runs, how it logs, what is evaluated afterwards.
# `scaling train` accepts them changed on resume; the derived run directory's hash leaves
# them out (with the whole run section: run.name does not change what is trained either,
# but results rows carry it, so a resumed run keeps its name).
RESUMABLE_FIELDS = frozenset(
    {("run", k) for k in ("threads", "wandb", "wandb_project", "evaluate", "tasks", "eval_n",
                          "data_root", "dir", "root")}
    | {("train", k) for k in ("device", "compile", "log_interval")})

# Fields that make a run an intervention on the ladder (scaling/distill.py, scaling/mlm.py).
# While every one of them is at its default, Config.to_dict leaves them all out, so a base
# run's config.yaml, checkpoints and derived directory (its hash) are what they were before
# these fields existed: runs trained before them resume, and are found, where they are.
INTERVENTION_FIELDS = frozenset({("train", "teacher"), ("train", "kd_alpha"),
                                 ("train", "kd_temperature"), ("model", "objective")})


@dataclass
class Config:
    """A whole run: model, data, train and run sections."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: CorpusSpec = field(default_factory=CorpusSpec)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> Config:
        """Refuse impossible values with a one-line ConfigError; return self."""
        m, t, r = self.model, self.train, self.run
        if m.pos not in ("learned", "rotary", "sinusoidal"):
            raise ConfigError(f"model.pos={m.pos!r}: must be learned, rotary or sinusoidal")
        for name in ("n_layer", "d_model", "n_head", "vocab_size"):
            if getattr(m, name) < 0:
                raise ConfigError(f"model.{name}={getattr(m, name)}: must be positive")
        if m.d_model and m.n_head and m.d_model % m.n_head:
            raise ConfigError(
                f"model.d_model={m.d_model} is not divisible by model.n_head={m.n_head}")
        if m.pos == "rotary" and m.d_model and m.n_head and (m.d_model // m.n_head) % 2:
            raise ConfigError("model.pos=rotary needs an even head size (d_model / n_head)")
        if m.block_size < 2:
            raise ConfigError(f"model.block_size={m.block_size}: must be at least 2")
        if not 0.0 <= m.dropout < 1.0:
            raise ConfigError(f"model.dropout={m.dropout}: must be in [0, 1)")
        if m.objective not in ("clm", "mlm"):
            raise ConfigError(f"model.objective={m.objective!r}: must be clm or mlm")
        if m.objective == "mlm" and getattr(t, "teacher", ""):
            raise ConfigError("model.objective=mlm cannot distil from train.teacher: "
                              "distillation trains a causal student on a causal teacher")
        if t.tokens <= 0:
            raise ConfigError(f"train.tokens={t.tokens}: must be positive")
        if t.lr < 0:
            raise ConfigError(f"train.lr={t.lr}: must not be negative")
        if t.batch_size < 0:
            raise ConfigError(f"train.batch_size={t.batch_size}: must not be negative")
        if not 0.0 <= t.warmup_frac < 1.0:
            raise ConfigError(f"train.warmup_frac={t.warmup_frac}: must be in [0, 1)")
        if not 0.0 <= t.min_lr_ratio <= 1.0:
            raise ConfigError(f"train.min_lr_ratio={t.min_lr_ratio}: must be in [0, 1]")
        if t.val_tokens <= 0:
            raise ConfigError(f"train.val_tokens={t.val_tokens}: must be positive")
        if t.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"train.device={t.device!r}: must be auto, cpu or cuda")
        if t.dtype not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"train.dtype={t.dtype!r}: must be auto, fp32 or bf16")
        self._validate_distillation()
        if r.wandb not in ("auto", "disabled", "offline", "online"):
            raise ConfigError(
                f"run.wandb={r.wandb!r}: must be auto, disabled, offline or online")
        try:
            self.data.validate()
        except ValueError as exc:
            raise ConfigError(f"data: {exc}") from exc
        self._validate_names()
        return self

    def _validate_names(self) -> None:
        """A rung or probe-task name that does not exist fails here, before any corpus is
        built or run directory made (both registries are imported late: they pull in torch
        and the task generators, which reading a config does not need otherwise)."""
        from scaling import ladder
        from scaling.tasks import UnknownTaskError, get_tasks

        try:
            ladder.rung(self.model.size)
        except ValueError as exc:
            raise ConfigError(f"model.size: {exc}") from None
        try:
            get_tasks(self.run.tasks)
        except UnknownTaskError as exc:
            raise ConfigError(f"run.tasks: {exc}") from None

    def _validate_distillation(self) -> None:
        """The distillation settings' values (whether the teacher exists and fits the
        student is checked by `scaling.distill.find_teacher` when training starts: a config
        may name a teacher that a sweep has yet to train)."""
        import math

        t = self.train
        if not (math.isfinite(t.kd_alpha) and 0.0 <= t.kd_alpha <= 1.0):
            raise ConfigError(f"train.kd_alpha={t.kd_alpha}: must be in [0, 1]")
        if not (math.isfinite(t.kd_temperature) and t.kd_temperature > 0):
            raise ConfigError(f"train.kd_temperature={t.kd_temperature}: must be positive")
        if not t.teacher:
            for name in ("kd_alpha", "kd_temperature"):
                if getattr(t, name) != _field_default(TrainConfig, name):
                    raise ConfigError(f"train.{name}={getattr(t, name)} needs a teacher "
                                      "(train.teacher=RUN_DIR or RUN_DIR@stepN)")
            return
        from scaling import run_info

        try:
            run_info.parse_checkpoint_spec(t.teacher)
        except ValueError as exc:
            raise ConfigError(f"train.teacher={exc}") from None

    def intervention(self) -> str | None:
        """The results schema's `intervention` tag of this run (e.g. `distill:s6`, `mlm`);
        None for the base ladder, whose rows leave the column out."""
        if self.train.teacher:
            from scaling import run_info

            run_dir, _ = run_info.parse_checkpoint_spec(self.train.teacher)
            rung = run_info.read(run_dir).get("rung")
            if not rung:
                raise ConfigError(f"train.teacher={self.train.teacher!r}: {run_dir} has no "
                                  "run.json naming its rung")
            return f"distill:{rung}"
        if self.model.objective == "mlm":
            return "mlm"
        return None

    def run_dir(self) -> Path:
        """The run directory: run.dir if set, else derived from what is trained.

        The derived name is `{model.size}-{hash}` where the hash covers the model, data and
        train sections less RESUMABLE_FIELDS (which do not change what is trained), so every
        distinct configuration of a sweep gets its own directory and re-launching the same
        configuration (a local re-run or a wandb agent) resumes it.
        """
        if self.run.dir:
            return Path(self.run.dir)
        import hashlib
        import json

        trained = {section: {k: v for k, v in values.items()
                             if (section, k) not in RESUMABLE_FIELDS}
                   for section, values in self.to_dict().items() if section != "run"}
        digest = hashlib.sha256(json.dumps(trained, sort_keys=True).encode()).hexdigest()[:8]
        return Path(self.run.root) / f"{self.model.size}-{digest}"

    def to_dict(self) -> dict:
        """Plain nested dict (for YAML/JSON dumps, checkpoints and wandb); without the
        INTERVENTION_FIELDS while all of them are at their defaults."""
        out = dataclasses.asdict(self)
        if all(out[s][k] == _field_default(type(getattr(self, s)), k)
               for s, k in INTERVENTION_FIELDS):
            for s, k in INTERVENTION_FIELDS:
                del out[s][k]
        return out


def with_intervention_defaults(config: dict) -> dict:
    """A config dict (Config.to_dict, a run's config.yaml) with the INTERVENTION_FIELDS it
    leaves out set to their defaults, so that two such dicts compare field by field."""
    out = {section: dict(values) if isinstance(values, dict) else values
           for section, values in config.items()}
    for s, k in INTERVENTION_FIELDS:
        out.setdefault(s, {}).setdefault(k, _field_default(_field_types(Config)[s], k))
    return out


def _field_default(cls, name: str):
    """The default value of the dataclass field `name` of `cls`."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _coerce(value, typ, key: str):
    """Convert a YAML or command-line value to the field's declared type."""
    origin = typing.get_origin(typ)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}={value!r}: expected true or false")
    if typ is int:
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value!r}: expected an integer") from None
        if isinstance(value, bool) or not as_float.is_integer():
            raise ConfigError(f"{key}={value!r}: expected an integer")
        return int(as_float)
    if typ is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value!r}: expected a number") from None
    if typ is str:
        return str(value)
    if origin is dict or typ is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)  # wandb passes nested parameters as a dict literal
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={value!r}: expected a mapping")
        return value
    return value


def _field_types(cls) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _closest(name: str, options) -> str:
    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _set(cfg: Config, dotted: str, value) -> None:
    parts = dotted.split(".")
    sections = _field_types(Config)
    if len(parts) != 2:
        raise ConfigError(f"unknown key {dotted!r}: use section.key with a section in "
                          f"{', '.join(sections)}{_closest(parts[0], sections)}")
    section, key = parts
    if section not in sections:
        raise ConfigError(f"unknown section {section!r} in {dotted!r}{_closest(section, sections)}")
    obj = getattr(cfg, section)
    types = _field_types(type(obj))
    if key not in types:
        valid = [f"{section}.{k}" for k in types]
        raise ConfigError(f"unknown key {dotted!r}{_closest(dotted, valid)}")
    setattr(obj, key, _coerce(value, types[key], dotted))


def from_dict(data: dict, cfg: Config | None = None) -> Config:
    """Apply a nested mapping ({section: {key: value}}) onto a Config."""
    cfg = cfg or Config()
    if not isinstance(data, dict):
        raise ConfigError("config must be a mapping of sections (model, data, train, run)")
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(f"section {section!r} must be a mapping of keys to values")
        for key, value in values.items():
            _set(cfg, f"{section}.{key}", value)
    return cfg


def load_yaml(path: str | Path) -> dict:
    """Read a YAML config file with safe_load; one-line errors for missing or bad files."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {yaml_problem(path, exc)}") from None
    return data


def settings_help() -> str:
    """Every config field as `--section.key=DEFAULT  meaning`, generated from the dataclasses
    (the meaning is each field's one-line comment in its class's source)."""
    import inspect

    lines = []
    for section, cls in (("model", ModelConfig), ("data", CorpusSpec), ("train", TrainConfig),
                         ("run", RunConfig)):
        comments = _field_comments(inspect.getsource(cls))
        lines.append(f"{section}:")
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if isinstance(default, dict):
                default = "{...}"
            flag = f"  --{section}.{f.name}={default}"
            lines.append(f"{flag:<34} {comments.get(f.name, '')}".rstrip())
    return "\n".join(lines)


def _field_comments(source: str) -> dict[str, str]:
    """field name -> its comment: the one after it on its line, else the comment lines
    right above it."""
    import re

    out, above = {}, []
    for line in source.splitlines():
        comment = re.fullmatch(r"\s*# (.*)", line)
        field_line = re.fullmatch(r"\s+(\w+): [^#]*?(?:  # (.*))?", line)
        if comment:
            above.append(comment.group(1))
        elif field_line:
            out[field_line.group(1)] = field_line.group(2) or " ".join(above)
            above = []
        else:
            above = []
    return out


def yaml_problem(path: str | Path, exc: yaml.YAMLError) -> str:
    """'PATH is not valid YAML, line L column C: what is wrong', on one line (the parser's
    own message spans several lines and points at the spot with a caret)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
    return f"{path} is not valid YAML{where}: {problem}"


def parse_overrides(args: list[str]) -> dict[str, str]:
    """Turn `--section.key=value` (or `--section.key value`) arguments into a dict."""
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or ("." not in arg.split("=")[0] and "=" not in arg):
            raise ConfigError(f"unexpected argument {arg!r}: "
                              "overrides look like --section.key=value")
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
        else:
            if i + 1 >= len(args):
                raise ConfigError(f"override {arg!r} has no value")
            key, value = arg[2:], args[i + 1]
            i += 1
        out[key] = value
        i += 1
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Build a validated Config: defaults, then the YAML file, then command-line overrides."""
    cfg = Config()
    if path:
        cfg = from_dict(load_yaml(path), cfg)
    for key, value in parse_overrides(overrides or []).items():
        if "." not in key:  # a nested wandb parameter: --section={'key': value, ...}
            sections = _field_types(Config)
            if key not in sections:
                raise ConfigError(f"unknown option --{key}{_closest(key, sections)}; config "
                                  "fields are set as --section.key=value (e.g. --model.size=s3)")
            parsed = yaml.safe_load(value) if isinstance(value, str) else value
            if not isinstance(parsed, dict):
                raise ConfigError(f"--{key}={value!r}: a section override must be a mapping")
            from_dict({key: parsed}, cfg)
        else:
            _set(cfg, key, value)
    return cfg.validate()
