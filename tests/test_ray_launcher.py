"""A 2x2 sweep under Hydra's Ray launcher (`hydra/launcher=ray`: a local Ray instance, no cluster).

Needs hydra-ray-launcher (ray, cloudpickle<3), which is not in featvis's pinned stack:
install it into a separate environment and run this file with that interpreter.
"""

import json

import pytest

from featvis.sweep.results import load_results
from tests.helpers import DEMO_IMAGE, run_cli, wandb_runs

RAY = ("hydra/launcher=ray",
       "+hydra.launcher.ray.init.num_cpus=2",  # two jobs at a time, as joblib's n_jobs=2
       "+hydra.launcher.ray.init.include_dashboard=false")  # no dashboard process or port on a small machine
EXPECTED_NAMES = sorted(f"layers={layers},reduction={reduction}"
                        for layers in ("decoder", "backbone") for reduction in ("select_max", "std"))


@pytest.mark.slow  # about 20 s on 2 CPU cores: Ray starts its local instance and worker processes
def test_2x2_sweep_under_ray(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher",
                        reason="hydra-ray-launcher is not installed (pip install hydra-ray-launcher)")
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "layers=decoder,backbone", "reduction=select_max,std", f"image={DEMO_IMAGE}",
                   "backends=[local,wandb]", *RAY, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr

    # every job ran in a Ray worker and wrote its result file, pictures and offline W&B run
    results = load_results(sweep)
    assert [r.status for r in results] == ["ok"] * 4
    assert sorted(r.name for r in results) == EXPECTED_NAMES
    for r in results:
        assert r.images == ["scene_000"] and r.error is None
        assert (r.dir / "featvis" / "local" / "scene_000" / "prediction.png").is_file()
    job_runs = [d for d in wandb_runs(sweep) if (sweep / "summary") not in d.parents]
    assert sorted(d.parents[2].name for d in job_runs) == ["0", "1", "2", "3"]  # <job>/featvis/wandb/offline-run-*

    # the summary lists the four jobs, with one offline W&B summary run
    summary = json.loads((sweep / "summary" / "summary.json").read_text())
    assert summary["counts"] == {"ok": 4} and len(summary["jobs"]) == 4
    assert sorted(j["name"] for j in summary["jobs"]) == EXPECTED_NAMES
    assert (sweep / "summary" / "contact_scene_000.png").is_file()
    assert len([d for d in wandb_runs(sweep) if (sweep / "summary") in d.parents]) == 1
