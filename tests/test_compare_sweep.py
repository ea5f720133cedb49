"""Checkpoints compared in a sweep's summary: CKA and change per layer against a baseline, difference sheets."""

import json
import shutil
from pathlib import Path
from typing import Dict, List, Optional

import cv2
import numpy as np
import pytest
import torch

from featvis.compare.sketch import SketchWriter
from featvis.data.paths import ASSETS
from featvis.render.draw import scale_bar_rows
from featvis.sweep.checkpoints import compare_checkpoints, pick_baseline, sketch_path
from featvis.sweep.diff import GAP, HEADER_H, LABEL_W, TILE_H, difference
from featvis.sweep.results import RESULT_FILE, JobRecord, load_results
from featvis.sweep.summary import summarize
from tests.helpers import run_cli

CHECKPOINT = ASSETS / "checkpoints" / "demo_pspnet.pth"
LAYERS = ["backbone[0]", "backbone[1]", "backbone[2]"]
IMAGES = ["scene_000", "scene_001"]
P = 64


def _features(seed: int, channels: int = 16) -> Dict[str, Dict[str, np.ndarray]]:
    """stem -> layer -> (P x C) features, and the maps (8 x 8) drawn from them."""
    rng = np.random.default_rng(seed)
    return {stem: {layer: rng.normal(size=(P, channels)).astype(np.float16) for layer in LAYERS}
            for stem in IMAGES}


def _maps(features: Dict[str, Dict[str, np.ndarray]]) -> Dict[str, Dict[str, np.ndarray]]:
    return {stem: {layer: f[:, 0].reshape(8, 8) for layer, f in by_layer.items()}
            for stem, by_layer in features.items()}


def _job(sweep: Path, num: int, checkpoint: str, features: Optional[Dict[str, Dict[str, np.ndarray]]],
         extra: List[str] = (), baseline: Optional[str] = None, status: str = "ok") -> JobRecord:
    """A job folder as a finished job leaves it: result file, .hydra/config.yaml and (given features) a sketch."""
    job_dir = sweep / str(num)
    overrides = [f"model.checkpoint=/ckpts/{checkpoint}", *extra, "backends=[local]"]
    name = ",".join(sorted([f"model.checkpoint={checkpoint}", *extra]))
    record = JobRecord(dir=job_dir, name=name, status=status, num=num, overrides=overrides, images=list(IMAGES),
                       model="demo_pspnet", checkpoint=checkpoint, layers="backbone", reduction="select_max",
                       backends=["local"])
    job_dir.mkdir(parents=True)
    (job_dir / RESULT_FILE).write_text(json.dumps(record.to_json()))
    (job_dir / ".hydra").mkdir()
    (job_dir / ".hydra" / "config.yaml").write_text(f"compare:\n  baseline: {baseline or 'null'}\n")
    if features is not None:
        writer = SketchWriter(pixels=P, seed=0, meta={"checkpoint": checkpoint})
        maps = _maps(features)
        for stem in IMAGES:
            for layer in LAYERS:
                writer.add(stem, layer, features[stem][layer], maps[stem][layer])
        writer.write(job_dir / "featvis")
    return record


def _perturbed(features, layer: str, scale: float = 1.0, seed: int = 7):
    """A copy of `features` whose `layer` is mixed with unrelated noise (the other layers untouched)."""
    rng = np.random.default_rng(seed)
    out = {stem: dict(by_layer) for stem, by_layer in features.items()}
    for stem in out:
        f = out[stem][layer].astype(np.float32)
        out[stem][layer] = (f + scale * rng.normal(size=f.shape)).astype(np.float16)
    return out


def _entries(sweep: Path) -> Dict[tuple, dict]:
    summary = json.loads((sweep / "summary" / "summary.json").read_text())
    return {(e["b"], e["layer"]): e for e in summary["checkpoint_similarity"]}


def test_identical_sketches_give_cka_1_and_no_change(tmp_path):
    sweep = tmp_path / "sweep"
    feats = _features(0)
    _job(sweep, 0, "a.pth", feats)
    _job(sweep, 1, "b.pth", feats)
    comparison = compare_checkpoints(sweep, load_results(sweep))
    (group,) = comparison.groups
    assert group.baseline.num == 0 and [j.num for j in group.jobs] == [1]
    assert [s.layer for s in comparison.similarities] == LAYERS
    for s in comparison.similarities:
        assert (s.a, s.b) == ("model.checkpoint=a.pth", "model.checkpoint=b.pth")
        assert abs(s.cka - 1.0) < 1e-5 and s.change == 0.0


def test_a_perturbed_layer_lowers_cka_and_raises_change_for_that_layer_only(tmp_path):
    sweep = tmp_path / "sweep"
    feats = _features(0)
    _job(sweep, 0, "a.pth", feats)
    _job(sweep, 1, "b.pth", _perturbed(feats, "backbone[1]"))
    summarize(sweep)
    entries = _entries(sweep)
    assert set(entries) == {("model.checkpoint=b.pth", layer) for layer in LAYERS}
    for key, e in entries.items():
        assert set(e) == {"a", "b", "layer", "cka", "change", "cka_unbiased"} and e["a"] == "model.checkpoint=a.pth"
        if key[1] == "backbone[1]":
            assert e["cka"] < 0.9 and e["change"] > 0.3
        else:
            assert abs(e["cka"] - 1.0) < 1e-5 and e["change"] == 0.0
    summary = json.loads((sweep / "summary" / "summary.json").read_text())
    ranking = summary["checkpoint_ranking"]
    assert [r["layer"] for r in ranking][0] == "backbone[1]"  # the largest change first
    assert summary["checkpoint_errors"] == [] and summary["checkpoint_cka"] == "checkpoint_cka.png"

    index = (sweep / "summary" / "index.html").read_text()
    assert "Checkpoints compared" in index and '<table class="ranking">' in index
    first_row = index.split('<table class="ranking">')[1].split("</tr>")[1]
    assert "backbone[1]" in first_row and "b.pth" in index
    assert "diff_scene_000.png" in index and "checkpoint_cka.png" in index
    cka = cv2.imread(str(sweep / "summary" / "checkpoint_cka.png"))
    assert cka is not None and cka.shape[0] > 50


def test_rank_by_change_with_several_checkpoints_and_the_sheet_layout(tmp_path):
    sweep = tmp_path / "sweep"
    feats = _features(0)
    _job(sweep, 0, "a.pth", feats)
    _job(sweep, 1, "b.pth", _perturbed(feats, "backbone[2]", 0.2))
    _job(sweep, 2, "c.pth", _perturbed(feats, "backbone[0]", 2.0))
    summarize(sweep)
    summary = json.loads((sweep / "summary" / "summary.json").read_text())
    ranking = summary["checkpoint_ranking"]
    assert [r["layer"] for r in ranking] == ["backbone[0]", "backbone[2]", "backbone[1]"]
    assert ranking[0]["by_job"]["model.checkpoint=c.pth"]["change"] > 1.0
    assert ranking[-1]["change"] == 0.0

    # a difference sheet per image: a header row, then a row per layer; a column per compared checkpoint
    sheets = summary["diff_sheets"]
    assert sorted(sheets) == IMAGES
    info = sheets["scene_000"]
    assert info["rows"] == LAYERS and info["cols"] == ["b.pth", "c.pth"]
    assert info["ranges"]["backbone[1]"] == 0.0 and info["ranges"]["backbone[0]"] > 0
    picture = cv2.imread(str(sweep / "summary" / info["file"]))
    w = TILE_H  # 8 x 8 maps: square tiles
    row_h = TILE_H + scale_bar_rows(TILE_H, w)
    assert picture.shape[:2] == (HEADER_H + 3 * (row_h + GAP), LABEL_W + 2 * (w + GAP))
    assert tuple(info["size"]) == picture.shape[:2]


def test_the_diff_sheet_colours_no_change_white_and_shares_one_range_per_layer(tmp_path):
    sweep = tmp_path / "sweep"
    feats = _features(0)
    _job(sweep, 0, "a.pth", feats)
    _job(sweep, 1, "b.pth", feats)
    shifted = {s: {k: (v.astype(np.float32) + 1.0).astype(np.float16) for k, v in d.items()} for s, d in feats.items()}
    _job(sweep, 2, "c.pth", shifted)
    summarize(sweep)
    info = json.loads((sweep / "summary" / "summary.json").read_text())["diff_sheets"]["scene_000"]
    assert all(abs(m - 1.0) < 1e-2 for m in info["ranges"].values())  # c: +1 everywhere, b: 0: one range, ±1
    rgb = cv2.cvtColor(cv2.imread(str(sweep / "summary" / info["file"])), cv2.COLOR_BGR2RGB)
    y = HEADER_H + GAP + TILE_H // 2
    b_cell = rgb[y, LABEL_W + GAP + TILE_H // 2]
    c_cell = rgb[y, LABEL_W + 2 * (GAP + TILE_H) - TILE_H // 2]
    assert tuple(b_cell) == (247, 247, 247)  # no change: the diverging scale's neutral white
    assert c_cell[0] > c_cell[2] + 50 and c_cell[1] < 40  # +1 at the top of [-1, 1]: dark red


def test_difference_resizes_to_the_baseline_map():
    a = np.zeros((4, 6), np.float16)
    b = np.ones((8, 12), np.float16)
    d = difference(a, b)
    assert d.shape == (4, 6) and np.allclose(d, 1.0)


def test_baseline_from_the_config_by_checkpoint_file_or_job_name(tmp_path):
    sweep = tmp_path / "sweep"
    feats = _features(0)
    _job(sweep, 0, "a.pth", feats, baseline="b.pth")
    _job(sweep, 1, "b.pth", _perturbed(feats, "backbone[0]"), baseline="b.pth")
    _job(sweep, 2, "c.pth", feats, baseline="b.pth")
    (group,) = compare_checkpoints(sweep, load_results(sweep)).groups
    assert group.baseline.checkpoint == "b.pth" and [j.num for j in group.jobs] == [0, 2]
    jobs = load_results(sweep)
    assert pick_baseline(jobs, "/ckpts/c.pth").num == 2  # as given on the command line
    assert pick_baseline(jobs, "model.checkpoint=a.pth").num == 0  # a job name
    assert pick_baseline(jobs, None).num == 0
    with pytest.raises(ValueError, match="compare.baseline='nope.pth' names none"):
        pick_baseline(jobs, "nope.pth")
    # summarize's own baseline wins over the jobs' config
    summarize(sweep, baseline="c.pth")
    assert {e["a"] for e in _entries(sweep).values()} == {"model.checkpoint=c.pth"}


def test_a_baseline_naming_no_job_is_one_line_in_the_summary(tmp_path):
    sweep = tmp_path / "sweep"
    feats = _features(0)
    _job(sweep, 0, "a.pth", feats, baseline="nope.pth")
    _job(sweep, 1, "b.pth", feats, baseline="nope.pth")
    summarize(sweep)
    summary = json.loads((sweep / "summary" / "summary.json").read_text())
    assert summary["checkpoint_similarity"] == []
    (error,) = summary["checkpoint_errors"]
    assert "nope.pth" in error and "a.pth" in error
    assert "nope.pth" in (sweep / "summary" / "index.html").read_text()


def test_jobs_are_grouped_by_their_other_overrides(tmp_path):
    sweep = tmp_path / "sweep"
    feats = _features(0)
    _job(sweep, 0, "a.pth", feats, extra=["layers=backbone"])
    _job(sweep, 1, "a.pth", feats, extra=["layers=decoder"])
    _job(sweep, 2, "b.pth", feats, extra=["layers=backbone"])
    _job(sweep, 3, "b.pth", feats, extra=["layers=decoder"])
    comparison = compare_checkpoints(sweep, load_results(sweep))
    assert [(g.baseline.num, [j.num for j in g.jobs]) for g in comparison.groups] == [(0, [2]), (1, [3])]
    assert comparison.columns() == ["b.pth"]
    rows, cols, values = comparison.cka_matrix()
    assert rows[0] == "backbone[0] [layers=backbone]" and len(rows) == 6 and values.shape == (6, 1)


def test_sweeps_without_sketches_are_summarized_as_before(tmp_path):
    sweep = tmp_path / "sweep"
    _job(sweep, 0, "a.pth", None)
    _job(sweep, 1, "b.pth", None)
    _job(sweep, 2, "c.pth", _features(0), status="failed")  # a failed job's sketch is not compared
    shutil.rmtree(sweep / "2" / ".hydra")
    summarize(sweep)
    summary = json.loads((sweep / "summary" / "summary.json").read_text())
    assert not [k for k in summary if k.startswith("checkpoint") or k == "diff_sheets"]
    assert "Checkpoints compared" not in (sweep / "summary" / "index.html").read_text()
    assert not list((sweep / "summary").glob("diff_*.png"))


def test_the_numbers_are_computed_once_per_pair_of_files(tmp_path, monkeypatch):
    from featvis.sweep import checkpoints

    sweep = tmp_path / "sweep"
    feats = _features(0)
    _job(sweep, 0, "a.pth", feats)
    _job(sweep, 1, "b.pth", feats)
    calls = []
    real = checkpoints.pair_numbers
    monkeypatch.setattr(checkpoints, "pair_numbers", lambda *a: calls.append(a[2]) or real(*a))
    compare_checkpoints(sweep, load_results(sweep))
    assert calls == LAYERS
    _job(sweep, 2, "c.pth", feats)
    compare_checkpoints(sweep, load_results(sweep))  # the summary after the next job: only its numbers
    assert calls == LAYERS * 2


# --- end to end: a real sweep over the demo model's checkpoint, a copy, and a copy with layer3 perturbed ---

def _perturb_layer3(src: Path, dst: Path) -> None:
    checkpoint = torch.load(src, map_location="cpu", weights_only=True)
    state = checkpoint["state_dict"]
    generator = torch.Generator().manual_seed(0)
    for key in [k for k in state if k.startswith("backbone.layer3.") and k.endswith("conv1.weight")]:
        weight = state[key]
        state[key] = weight + 0.5 * weight.std() * torch.randn(weight.shape, generator=generator)
    torch.save(checkpoint, dst)


def test_sweep_over_checkpoints_compares_them_layer_by_layer(tmp_path):
    """Needs the job side (featvis.pipeline writing `<job>/featvis/sketch.npz` when the sweep varies
    model.checkpoint): until jobs write sketches, it fails at the first assertion on the sketches."""
    same = tmp_path / "same.pth"
    shutil.copy(CHECKPOINT, same)
    noisy = tmp_path / "noisy.pth"
    _perturb_layer3(CHECKPOINT, noisy)
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", f"model.checkpoint={CHECKPOINT},{same},{noisy}", "layers=backbone", "max_images=2",
                   "backends=[local,wandb]", "wandb.mode=offline", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr
    jobs = load_results(sweep)
    assert [j.status for j in jobs] == ["ok"] * 3
    assert all(sketch_path(j).is_file() for j in jobs), "jobs wrote no sketch: the job side is not there yet"

    summary = json.loads((sweep / "summary" / "summary.json").read_text())
    entries = {(e["b"], e["layer"]): e for e in summary["checkpoint_similarity"]}
    layers = sorted({layer for _, layer in entries})
    assert layers == ["backbone[0]", "backbone[1]", "backbone[2]", "backbone[3]"]
    assert {e["a"] for e in entries.values()} == {"model.checkpoint=demo_pspnet.pth"}
    for layer in layers:
        copy = entries[("model.checkpoint=same.pth", layer)]
        assert abs(copy["cka"] - 1.0) < 1e-5 and copy["change"] == 0.0
        perturbed = entries[("model.checkpoint=noisy.pth", layer)]
        if layer in ("backbone[0]", "backbone[1]"):  # before layer3: untouched
            assert abs(perturbed["cka"] - 1.0) < 1e-5 and perturbed["change"] == 0.0
        else:  # layer3 and after
            assert perturbed["cka"] < 1.0 - 1e-3 and perturbed["change"] > 1e-2
    assert {r["layer"] for r in summary["checkpoint_ranking"][:2]} == {"backbone[2]", "backbone[3]"}
    for layer in layers:  # the unbiased estimator agrees where the features are the same
        assert abs(entries[("model.checkpoint=same.pth", layer)]["cka_unbiased"] - 1.0) < 1e-5
    # per ground-truth class (the demo scenes have masks): a copy is the same for every class present
    by_class = [e for e in summary["class_similarity"] if e["b"] == "model.checkpoint=same.pth"]
    named = {e["class"] for e in by_class}
    assert len(named) >= 3 and named <= {"background", "circle", "square", "triangle"}, named
    for e in by_class:
        assert (e["note"] is not None and e["cka_unbiased"] is None) or abs(e["cka_unbiased"] - 1.0) < 1e-5, e
    moved = {(e["layer"], e["class"]): e["cka_unbiased"] for e in summary["class_similarity"]
             if e["b"] == "model.checkpoint=noisy.pth" and e["cka_unbiased"] is not None}
    assert all(abs(v - 1) < 1e-5 for (layer, _), v in moved.items() if layer == "backbone[0]")
    assert any(v < 1 - 1e-3 for (layer, _), v in moved.items() if layer == "backbone[3]")
    assert "By class" in (sweep / "summary" / "index.html").read_text()
    separable = {(e["job"], e["layer"]) for e in summary["class_separability"]}
    assert separable == {(j.name, layer) for j in jobs for layer in layers}
    assert all((sweep / "summary" / f).is_file() for f in summary["embeddings"].values())
    assert sorted(summary["diff_sheets"]) == [j for j in jobs[0].images]
    assert (sweep / "summary" / summary["diff_sheets"][jobs[0].images[0]]["file"]).is_file()

    # the baseline ran first: each later job's own W&B run has its CKA against it, as the summary has
    from tests.helpers import history, wandb_records, wandb_runs

    (run_dir,) = wandb_runs(jobs[2].dir / "featvis")
    logged = {k: v for row in history(wandb_records(run_dir)) for k, v in row.items() if k.startswith("cka/")}
    assert sorted(logged) == [f"cka/{layer}" for layer in layers]
    for layer in layers:
        assert abs(logged[f"cka/{layer}"] - entries[("model.checkpoint=noisy.pth", layer)]["cka"]) < 1e-6
    (first,) = wandb_runs(jobs[0].dir / "featvis")
    assert not any(k.startswith("cka/") for row in history(wandb_records(first)) for k in row)  # the baseline


def test_the_wandb_summary_run_gets_the_cka_table_heatmap_diffs_and_scalars(tmp_path):
    from featvis.sweep.results import WandbSettings
    from tests.helpers import history, wandb_records, wandb_runs

    sweep = tmp_path / "sweep"
    feats = _features(0)
    for num, (checkpoint, f) in enumerate([("a.pth", feats), ("b.pth", _perturbed(feats, "backbone[1]"))]):
        record = _job(sweep, num, checkpoint, f)
        record.backends, record.wandb = ["local", "wandb"], WandbSettings(mode="offline")
        (record.dir / RESULT_FILE).write_text(json.dumps(record.to_json()))
    summarize(sweep, wandb_run=True)
    (run_dir,) = wandb_runs(sweep / "summary" / "wandb")
    (row,) = history(wandb_records(run_dir))
    assert row["checkpoint_cka._type"] == "table-file"
    assert row["checkpoint_cka_heatmap._type"] == "image-file"
    assert row["checkpoint_diff/scene_000._type"] == "image-file"
    assert abs(row["cka/b.pth/backbone[0]"] - 1.0) < 1e-5 and row["cka/b.pth/backbone[1]"] < 0.9


def test_a_damaged_sketch_is_one_line_not_a_failed_summary(tmp_path):
    sweep = tmp_path / "sweep"
    feats = _features(0)
    _job(sweep, 0, "a.pth", feats)
    _job(sweep, 1, "b.pth", feats)
    _job(sweep, 2, "c.pth", feats)
    sketch_path(load_results(sweep)[2]).write_bytes(b"not a zip file")
    summarize(sweep)
    summary = json.loads((sweep / "summary" / "summary.json").read_text())
    (error,) = summary["checkpoint_errors"]
    assert error.startswith("model.checkpoint=c.pth: its sketch cannot be read")
    assert {e["b"] for e in summary["checkpoint_similarity"]} == {"model.checkpoint=b.pth"}
