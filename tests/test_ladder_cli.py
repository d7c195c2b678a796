"""`scaling ladder --list` and the plan printed before the main job starts."""

import pytest

from scaling import ladder
from scaling.ladder_cli import SWEEPS_DIR, PRESETS, main, print_plan
from scaling.sweep import load_sweep


def test_list_prints_every_rung(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for rung in ladder.LADDERS["cpu"]:
        assert f"\n{rung} " in out
    assert "FLOPs/token" in out


def test_plan_estimates_time_for_every_preset(capsys):
    for preset in PRESETS.values():
        sweep = load_sweep(SWEEPS_DIR / preset)
        seconds = print_plan(sweep, peak=100e9)
        assert seconds > 0
    out = capsys.readouterr().out
    assert "estimated training time" in out and "s6" in out


def test_jobs_below_one_is_a_one_line_error(capsys):
    assert main(["--preset", "tiny", "--jobs", "0"]) == 2
    assert "--jobs must be at least 1" in capsys.readouterr().err


def test_only_the_study_and_the_default_ladder_report_into_reports():
    from pathlib import Path

    from scaling.config import load_config
    from scaling.ladder_cli import DEFAULT_ROOT, STUDY_ROOT, report_dir
    from scaling.sweep import run_args

    sweeps = {p: load_sweep(SWEEPS_DIR / f) for p, f in PRESETS.items()}
    names = {p: sw.name for p, sw in sweeps.items()}
    for preset in ("cpu", "seeds"):  # the committed ladder report shows the runs in DEFAULT_ROOT
        assert load_config(None, run_args(sweeps[preset].runs[0])).run.root == str(DEFAULT_ROOT)
    assert load_config(None, run_args(sweeps["study"].runs[0])).run.root == str(STUDY_ROOT)
    assert report_dir(names["study"], STUDY_ROOT) == Path("reports")
    assert (report_dir(names["cpu"], DEFAULT_ROOT) == report_dir(names["seeds"], DEFAULT_ROOT)
            == Path("reports/ladder"))
    other = Path("runs/x")
    assert report_dir(names["quick"], other) == report_dir(names["tiny"], other) == other / "report"
    # A copy of a committed sweep with another run root does not overwrite a committed report.
    assert report_dir(names["cpu"], Path("/tmp/elsewhere")) == Path("/tmp/elsewhere/report")
    assert report_dir(names["study"], Path("/tmp/elsewhere")) == Path("/tmp/elsewhere/report")


def test_study_ladder_has_two_one_block_rungs_below_s2():
    from scaling import ladder

    shapes = [ladder.rung(name) for name in ladder.LADDERS["study"]]
    assert [r.n_layer for r in shapes[:2]] == [1, 1] and shapes[2].n_layer == 2
    sizes = [r["nonembed_params"] for r in ladder.describe(ladder.LADDERS["study"])]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    for bad in ("s", "s-1", "s01", "sx", "m3"):
        with pytest.raises(ValueError, match="rungs are named"):
            ladder.rung(bad)


def test_done_message_counts_only_the_runs_done_now(tmp_path):
    import json

    from scaling.ladder_cli import done_message

    dirs = [tmp_path / name for name in ("a", "b", "c")]
    for d, seconds in zip(dirs, (60.0, 120.0, 600.0)):
        d.mkdir()
        (d / "run.json").write_text(json.dumps({"train_seconds": seconds,
                                                "eval_seconds": seconds / 2}))
    outcome = {str(dirs[0]): "finished", str(dirs[1]): "finished", str(dirs[2]): "skipped"}
    line = done_message(dirs, outcome, wall_seconds=150.0, report_seconds=3.0)
    assert "2 run(s) done now (train 3.0 min, eval 1.5 min" in line
    assert "1 finished run(s) reused" in line and "ladder done in 2.5 min" in line


def test_an_interrupted_ladder_writes_no_report(capsys, monkeypatch):
    from scaling import ladder_cli, sweep

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "run_sweep", interrupted)
    monkeypatch.setattr(ladder_cli, "_peak_flops", lambda: 100e9)
    assert main(["--preset", "tiny"]) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("interrupted: ") and "no report was written" in err
