"""Config files are read within bounds (featvis.config.bounded): size, YAML alias expansion, nesting,
defaults loops, files that are not files, and a stop signal while Hydra composes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from featvis.config.bounded import MAX_NODES, check_file, check_text, expanded_nodes
from featvis.errors import ConfigError
from tests.helpers import ROOT, cli_env, error_line, run_cli

LAUGHS = "\n".join(["# @package _global_", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
                   + [f"{x}: &{x} [{', '.join([f'*{p}'] * 9)}]" for p, x in zip("abcdef", "bcdefg")]) + "\n"


def _preset(folder: Path, name: str, text: str) -> Path:
    path = folder / "preset" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _run(conf: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return run_cli(f"hydra.searchpath=[file://{conf}]", "backends=[local]", *args, **env)


def test_a_billion_laughs_preset_is_refused_at_once(tmp_path):
    assert len(LAUGHS) < 600  # 9**7 = 4.8 million values once expanded
    path = _preset(tmp_path, "laughs", LAUGHS)
    start = time.monotonic()
    proc = _run(tmp_path, "+preset=laughs")
    line = error_line(proc)
    assert str(path) in line and "expands to more than 100,000 values" in line
    assert time.monotonic() - start < 60  # before: over 6 minutes at 100% CPU


def test_a_preset_over_the_size_limit_is_refused(tmp_path):
    big = "# @package _global_\nblob:\n" + "".join(f"  key_{i:06d}: value_{i:06d}\n" for i in range(12000))
    path = _preset(tmp_path, "big", big)
    assert path.stat().st_size > 256 * 1024
    line = error_line(_run(tmp_path, "+preset=big"))
    assert str(path) in line and "more than the 256 KiB a featvis config may be" in line
    assert "FEATVIS_MAX_CONFIG_KIB" in line


def test_a_preset_that_is_a_fifo_is_not_opened(tmp_path):
    (tmp_path / "preset").mkdir()
    os.mkfifo(tmp_path / "preset" / "pipe.yaml")  # opening it would block for ever
    line = error_line(_run(tmp_path, "+preset=pipe"))
    assert "Could not find 'preset/pipe'" in line  # Hydra lists regular files only
    with pytest.raises(ConfigError, match="is a FIFO"):  # and featvis refuses one, should Hydra ever ask
        check_file(str(tmp_path / "preset" / "pipe.yaml"))


def test_a_defaults_loop_names_both_files(tmp_path):
    a = _preset(tmp_path, "loop_a", "# @package _global_\ndefaults:\n  - loop_b\n")
    b = _preset(tmp_path, "loop_b", "# @package _global_\ndefaults:\n  - loop_a\n")
    line = error_line(_run(tmp_path, "+preset=loop_a"))
    assert line == (f"featvis: error: a defaults loop: preset/loop_a ({a}) includes preset/loop_b ({b}), which "
                    "includes preset/loop_a again; Hydra would include them forever: remove one of these "
                    "defaults entries")


def test_deep_nesting_is_refused():
    with pytest.raises(ConfigError, match="more than 64 levels deep"):
        check_text(b"a: " + b"[" * 65 + b"]" * 65, "deep.yaml")
    with pytest.raises(ConfigError, match="more than 64 levels deep"):
        check_text(b"a: " + b"[" * 5000 + b"]" * 5000, "deeper.yaml")  # past libyaml's own limit
    check_text(b"a: " + b"[" * 60 + b"]" * 60, "fine.yaml")


def test_alias_expansion_is_counted_as_omegaconf_builds_it():
    nodes, depth = expanded_nodes(yaml.compose("a: &x [1, 2]\nb: [*x, *x]\n"), MAX_NODES)
    # root mapping, 2 keys, the list x (3 nodes) once under a and twice under b's list
    assert nodes == 1 + 2 + 3 + (1 + 3 + 3) and depth == 4  # mapping > b's list > x > 1
    with pytest.raises(ConfigError, match="expands to more than"):
        check_text(b"a: &x [1, *x]\n", "cycle.yaml")  # an alias inside itself never ends
    # values written out are bounded by the file's size, not counted as aliases: 120,001 nodes pass
    check_text("".join(f"k{i}: v\n" for i in range(60000)).encode(), "long.yaml")
    with pytest.raises(ConfigError, match="through its YAML aliases"):  # and aliases still count
        check_text(("".join(f"k{i}: v\n" for i in range(60000)) + "a: &x [" + "1," * 999 + "1]\n"
                    + "b: [" + "*x," * 200 + "*x]\n").encode(), "long_and_aliased.yaml")
    for conf in (ROOT / "conf").rglob("*.yaml"):  # featvis's own configs pass, far below the limits
        check_text(conf.read_bytes(), str(conf))
        assert expanded_nodes(yaml.compose(conf.read_text()) or yaml.ScalarNode("", ""), MAX_NODES)[0] < 200


DRIVER = """
import runpy, sys
import featvis.cli  # the slow imports, before "ready"
sys.argv = ["run.py", *sys.argv[1:]]
print("ready", flush=True)
runpy.run_path({run!r}, run_name="__main__")
"""


def test_sigterm_stops_a_long_composition(tmp_path):
    # a preset allowed by a raised limit, which takes OmegaConf tens of seconds to build
    big = "# @package _global_\nblob:\n" + "".join(f"  key_{i:06d}: value_{i:06d}\n" for i in range(60000))
    _preset(tmp_path, "slow", big)
    env = {**cli_env(), "FEATVIS_MAX_CONFIG_KIB": "8192", "FEATVIS_STOP_GRACE": "5"}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER.format(run=str(ROOT / "run.py")), f"hydra.searchpath=[file://{tmp_path}]",
                             "+preset=slow", "backends=[local]"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    # Hydra is composing once the process has spent more CPU than its start takes (under 1 s: no torch
    # is imported before a job runs); a fixed sleep was too short on a loaded machine
    busy = psutil.Process(proc.pid)
    deadline = time.monotonic() + 60
    while sum(busy.cpu_times()[:2]) < 2.5 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert time.monotonic() - start < 30
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("featvis: terminated (SIGTERM): "), err
