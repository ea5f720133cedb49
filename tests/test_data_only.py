"""Presets and model options are data (issue 11, case 1): no config may name code for Hydra to run.

CLI-level where the promise is that nothing runs (no file created or truncated, exit 1, one
line naming the key and the file); the other refusals through Hydra's compose API, which
goes through the same config loader.
"""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from featvis.config import data_only
from featvis.errors import ConfigError
from tests.helpers import CONF, DEMO_IMAGE, error_line, run_cli


def _team(tmp_path: Path, name: str, body: str) -> Path:
    """A team's search-path folder holding preset/<name>.yaml."""
    team = tmp_path / "team"
    (team / "preset").mkdir(parents=True, exist_ok=True)
    (team / "preset" / f"{name}.yaml").write_text("# @package _global_\n" + body)
    return team


def test_preset_with_builtins_open_creates_no_file_and_names_key_and_file(tmp_path):
    victim, created = tmp_path / "victim.txt", tmp_path / "created.txt"
    victim.write_text("keep me")
    team = _team(tmp_path, "evil", "hydra:\n  callbacks:\n"
                 f"    wipe:\n      _target_: builtins.open\n      _args_: [{victim}, w]\n"
                 f"    make:\n      _target_: builtins.open\n      _args_: [{created}, w]\n")
    out = tmp_path / "out"
    proc = run_cli(f"hydra.searchpath=[file://{team}]", "+preset=evil", f"image={DEMO_IMAGE}",
                   "backends=[local]", f"hydra.run.dir={out}")
    assert proc.returncode == 1
    line = error_line(proc)
    assert "hydra.callbacks.wipe._target_='builtins.open'" in line
    assert str(team / "preset" / "evil.yaml") in line
    assert victim.read_text() == "keep me" and not created.exists()
    assert not (out / "featvis").exists() and not (out / "featvis.partial").exists()


def test_preset_cannot_run_a_python_file_through_config_fromfile(tmp_path):
    marker = tmp_path / "ran.txt"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    team = _team(tmp_path, "fromfile", "hydra:\n  callbacks:\n    x:\n"
                 f"      _target_: mmengine.config.Config.fromfile\n      _args_: [{evil}]\n")
    proc = run_cli(f"hydra.searchpath=[file://{team}]", "+preset=fromfile", f"image={DEMO_IMAGE}",
                   "backends=[local]", f"hydra.run.dir={tmp_path / 'out'}")
    assert proc.returncode == 1
    line = error_line(proc)
    assert "hydra.callbacks.x._target_" in line and "fromfile.yaml" in line
    assert not marker.exists()


@pytest.fixture
def installed():
    data_only.install()
    yield
    data_only.uninstall()


def _compose(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def test_the_default_config_and_featvis_callbacks_pass(installed):
    cfg = _compose()  # conf/config.yaml names featvis's callbacks; Hydra's logging and plugins pass too
    assert {"sweep_plan", "sweep_summary"} <= set(cfg.hydra.callbacks)
    assert {"SweepPlan", "SweepSummary"} <= set(data_only.featvis_callbacks())


@pytest.mark.parametrize("body, key", [
    ("backends:\n  local:\n    kwargs:\n      x: {_target_: os.system, _args_: [id]}\n",
     "backends.local.kwargs.x._target_"),
    ("hydra:\n  callbacks:\n    sweep_plan:\n      _target_: featvis.sweep.callbacks.write_plan\n",
     "hydra.callbacks.sweep_plan._target_"),
    ("hydra:\n  callbacks:\n    sweep_plan:\n      _args_: [x]\n", "hydra.callbacks.sweep_plan._args_"),
    ("hydra:\n  job_logging:\n    handlers:\n      file:\n        class: mmengine.config.Config.fromfile\n",
     "hydra.job_logging.handlers.file.class"),
    ("hydra:\n  job_logging:\n    formatters:\n      simple:\n        (): builtins.exec\n",
     "hydra.job_logging.formatters.simple.()"),
    ("hydra:\n  job_logging:\n    handlers:\n      file:\n        mode: w\n", "hydra.job_logging.handlers.file.mode"),
    ("hydra:\n  job:\n    env_set:\n      LD_PRELOAD: /tmp/evil.so\n", "hydra.job.env_set.LD_PRELOAD"),
])
def test_code_in_a_preset_is_refused_naming_key_and_file(tmp_path, installed, body, key):
    team = _team(tmp_path, "bad", body)
    with pytest.raises(ConfigError) as err:
        _compose(f"hydra.searchpath=[file://{team}]", "+preset=bad")
    assert f"{key}=" in str(err.value) and str(team / "preset" / "bad.yaml") in str(err.value)


def test_code_on_the_command_line_is_refused_naming_the_override(installed):
    with pytest.raises(ConfigError, match=r"hydra\.callbacks\.x\._target_='builtins\.print' in the command-line "
                                          r"override '\+hydra\.callbacks\.x\._target_=builtins\.print'"):
        _compose("+hydra.callbacks.x._target_=builtins.print")
