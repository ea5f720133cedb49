"""Shared fixtures: configs composed with Hydra's compose API, tiny inputs, clean W&B env."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from featvis.config.paths import ASSETS
from featvis.config.schema import register_configs

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
DEMO_IMAGE = ASSETS / "demo" / "images" / "scene_000.png"  # one of the shipped demo scenes

register_configs()


def compose_cfg(*overrides: str) -> DictConfig:
    """The job config `python run.py <overrides>` would get (without Hydra's runtime)."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("config", overrides=list(overrides))


@pytest.fixture(autouse=True)
def _no_wandb_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test may find a real W&B key or go online."""
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path_factory.getbasetemp() / "no-netrc"))


@pytest.fixture(autouse=True)
def _fresh_model_cache() -> None:
    """Each test loads its models and runs its forward passes itself (the caches are tested on their own)."""
    from featvis.model import cache as model_cache
    from featvis.sweep import shared_forward

    model_cache.clear()
    shared_forward.clear()


def run_planned_sweep(sweep: Path, jobs: List[List[str]], *base: str) -> list:
    """Run `jobs` (override lists, after the `base` overrides) in this process as the jobs of one
    sweep, with the plan Hydra's SweepPlan callback would write; their JobResults."""
    from featvis.config.job import JobInfo
    from featvis.pipeline import job as pipeline
    from featvis.sweep.plan import PLAN_FILE, make_plan

    cfgs = [compose_cfg(*base, *o) for o in jobs]
    sweep.mkdir(parents=True)
    (sweep / PLAN_FILE).write_text(json.dumps({"groups": make_plan(cfgs)}))
    return [pipeline.run(cfg, JobInfo(output_dir=sweep / str(i), overrides=list(o), sweep_dir=sweep))
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
