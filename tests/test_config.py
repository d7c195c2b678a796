"""Config: YAML + overrides, unknown keys, impossible values, one-line CLI errors."""

import dataclasses
import subprocess
import sys

import pytest

from scaling.config import (
    RESUMABLE_FIELDS,
    Config,
    ConfigError,
    ModelConfig,
    RunConfig,
    TrainConfig,
    load_config,
    parse_overrides,
)


def test_overrides_coerce_by_type(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("model:\n  size: s2\ntrain:\n  lr: 0.003\n")
    cfg = load_config(cfg_file, ["--train.tokens=2e6", "--train.compile=true",
                                 "--model.pos", "rotary", "--run.dir=x/y"])
    assert cfg.model.size == "s2" and cfg.train.lr == 0.003
    assert cfg.train.tokens == 2_000_000 and isinstance(cfg.train.tokens, int)
    assert cfg.train.compile is True and cfg.model.pos == "rotary" and cfg.run.dir == "x/y"


def test_nested_dict_literal_as_wandb_passes_it():
    cfg = load_config(None, ["--data.mix={'addition': 0.5, 'copy': 0.5}"])
    assert cfg.data.mix == {"addition": 0.5, "copy": 0.5}


@pytest.mark.parametrize("args, message", [
    (["--model.sise=s2"], "did you mean 'model.size'"),
    (["--trian.lr=0.1"], "did you mean 'train'"),
    (["--model.d_model=50", "--model.n_head=4"], "not divisible"),
    (["--train.tokens=0"], "train.tokens=0"),
    (["--train.lr=-1"], "train.lr=-1.0"),
    (["--train.tokens=abc"], "expected an integer"),
    (["--train.batch_size=1.5"], "expected an integer"),
    (["--run.wandb=cloud"], "run.wandb"),
    (["size=s2"], "overrides look like"),
    (["--nonsense=1"], "unknown option --nonsense"),
    (["--modle={'size': 's1'}"], "did you mean 'model'"),
])
def test_bad_values_are_refused(args, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
        load_config(None, args)


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("model:\n  size: s2\n   n_layer: 3\n")  # the third line is indented wrong
    with pytest.raises(ConfigError, match=r"not valid YAML, line 3 column \d+: ") as exc:
        load_config(bad)
    assert "\n" not in str(exc.value)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("modle:\n  size: s2\n")
    with pytest.raises(ConfigError, match="did you mean 'model'"):
        load_config(unknown)


def test_parse_overrides_forms():
    assert parse_overrides(["--a.b=1", "--c.d", "2"]) == {"a.b": "1", "c.d": "2"}


@pytest.mark.parametrize("args", [
    ["train", "--model.sise=s2"],
    ["train", "--train.tokens=-5"],
    ["train", "--model.size=big"],
    ["train", "--run.evaluate=true", "--run.tasks=copy_5"],
    ["nonsense"],
])
def test_cli_errors_are_one_line_with_nonzero_exit(args, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "scaling.cli", *args,
                           f"--run.dir={tmp_path}/r", f"--run.data_root={tmp_path}/d"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert not (tmp_path / "r" / "checkpoints").exists()  # nothing half-written
    assert not (tmp_path / "d").exists()  # refused before any corpus was built


def test_train_help_lists_every_setting_with_default_and_meaning():
    import dataclasses

    from scaling.config import settings_help
    from scaling.train import build_parser

    text = build_parser().format_help()
    assert settings_help() in text
    lines = {line.split()[0]: line for line in settings_help().splitlines()
             if line.startswith("  --")}
    for section, cls in (("model", ModelConfig), ("train", TrainConfig), ("run", RunConfig)):
        for f in dataclasses.fields(cls):
            key = next(k for k in lines if k.startswith(f"--{section}.{f.name}="))
            assert key == f"--{section}.{f.name}={f.default}"
            assert len(lines[key].split()) > 1, f"{section}.{f.name} has no meaning in --help"


# A changed value for every resumable field (run.dir aside: it names the directory itself).
RESUMABLE_EXAMPLES = {
    "run.threads": "2", "run.wandb": "disabled", "run.wandb_project": "other",
    "run.evaluate": "true", "run.tasks": "copy_4", "run.eval_n": "3",
    "run.data_root": "elsewhere", "run.root": "elsewhere", "train.device": "cpu",
    "train.compile": "true", "train.log_interval": "3"}


def test_resumable_fields_are_fields_and_leave_the_derived_run_directory_alone():
    """One list says what may change on resume (train.py) and what the run directory's hash
    leaves out (config.py); a field outside it names another directory."""
    cfg = Config()
    for section, key in RESUMABLE_FIELDS:
        assert key in {f.name for f in dataclasses.fields(getattr(cfg, section))}
    assert {f"{s}.{k}" for s, k in RESUMABLE_FIELDS} == set(RESUMABLE_EXAMPLES) | {"run.dir"}
    base = load_config(None, []).run_dir()
    for key, value in RESUMABLE_EXAMPLES.items():
        assert load_config(None, [f"--{key}={value}"]).run_dir().name == base.name, key
    for key, value in {"train.lr": "0.1", "train.seed": "1", "data.seed": "1"}.items():
        assert load_config(None, [f"--{key}={value}"]).run_dir().name != base.name, key
