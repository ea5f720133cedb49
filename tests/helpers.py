"""What the tests share: configs composed as run.py composes them, featvis run as a user runs it, the
records of an offline W&B run, tiny inputs. Imported by test modules and benchmarks; fixtures are in
conftest.py. Not a test module: pytest collects nothing here.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Dict, List

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from featvis.config.schema import register_configs
from featvis.data.paths import ASSETS

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
DEMO_IMAGE = ASSETS / "demo" / "images" / "scene_000.png"  # one of the shipped demo scenes

register_configs()


def compose_cfg(*overrides: str) -> DictConfig:
    """The job config `python run.py <overrides>` would get (without Hydra's runtime)."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("config", overrides=list(overrides))


def job_config(*overrides: str):
    """The typed job Config the command line hands to featvis.pipeline (composed, then validated)."""
    from featvis.config.schema import validate

    return validate(compose_cfg(*overrides))


def run_planned_sweep(sweep: Path, jobs: List[List[str]], *base: str) -> list:
    """Run `jobs` (override lists, after the `base` overrides) in this process as the jobs of one
    sweep, with the plan Hydra's SweepPlan callback would write; their JobResults."""
    from featvis.config.job import JobInfo
    from featvis.config.schema import validate
    from featvis.pipeline import job as pipeline
    from featvis.sweep.plan import PLAN_FILE, make_plan

    cfgs = [compose_cfg(*base, *o) for o in jobs]
    sweep.mkdir(parents=True)
    (sweep / PLAN_FILE).write_text(json.dumps({"groups": make_plan(cfgs)}))
    return [pipeline.run(validate(cfg), JobInfo(output_dir=sweep / str(i), overrides=list(o), sweep_dir=sweep))
            for i, (cfg, o) in enumerate(zip(cfgs, jobs))]


def cli_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WANDB_", "HYDRA_", "FEATVIS_")) and k != "NETRC"}
    env["NETRC"] = "/nonexistent/netrc"
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess:
    """`python run.py <args>` in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, env=cli_env(**env),
                          capture_output=True, text=True, timeout=600)


def error_line(proc: subprocess.CompletedProcess, code: int = 1) -> str:
    """The one line a failed `run.py` printed: exit `code`, exactly one `featvis: error: ` line, no traceback."""
    assert proc.returncode == code, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("featvis: error: "), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    return lines[0]


def wandb_records(run_dir: Path) -> List[dict]:
    """Every record of an offline W&B run, read back with `wandb leet inspect --json`."""
    wandb_bin = Path(sys.executable).with_name("wandb")
    out = subprocess.run([str(wandb_bin), "leet", "inspect", "--json", str(run_dir)],
                         capture_output=True, text=True, check=True, timeout=120)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def wandb_runs(root: Path) -> List[Path]:
    """The offline W&B run folders under `root`."""
    return sorted(p.parent for p in root.rglob("offline-run-*/run-*.wandb"))


def history(records: List[dict]) -> List[dict]:
    return [r["history"]["item"] for r in records if r.get("type") == "history"]


def run_record(records: List[dict]) -> dict:
    return next(r["run"] for r in records if r.get("type") == "run")


def exit_code(records: List[dict]) -> int:
    return next(r["exit"].get("exit_code", 0) for r in records if r.get("type") == "exit")


WAIT_S = 300  # how long to wait for a started process to reach a point: generous, never a timing assertion


def demo_copies(folder: Path, n: int, prefix: str = "img") -> Path:
    """`n` copies of the demo scene: a job long enough to be caught in the middle."""
    folder.mkdir(parents=True)
    data = DEMO_IMAGE.read_bytes()
    for i in range(n):
        (folder / f"{prefix}_{i:03d}.png").write_bytes(data)
    return folder


def start_cli(*args: str) -> subprocess.Popen:
    """`python run.py <args>` started, not waited for."""
    return subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(proc: subprocess.Popen, ready, what: str) -> None:
    """Poll `ready()` until it holds; fail the test if the process ends first or WAIT_S pass."""
    deadline = time.monotonic() + WAIT_S
    while not ready():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the job ended (exit {proc.returncode}) before {what}: {err[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} within {WAIT_S} s")
        time.sleep(0.05)


def png_header_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG (under 100 bytes) whose IHDR claims width x height 1-bit pixels: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def listing_table(text: str) -> Dict[str, List[str]]:
    """{module name: [type, output, presets]} from a mode=list table (columns: 2+ spaces apart)."""
    header, body, footer = text.split("\n\n")
    lines = body.splitlines()
    assert re.split(r"\s{2,}", lines[0].strip()) == ["module", "type", "output", "presets"]
    rows = {}
    for line in lines[1:]:
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells[1:] + [""] * (4 - len(cells))
    return rows
