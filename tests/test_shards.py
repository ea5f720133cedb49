"""Shards: one job's images split among N jobs of a sweep (`-m shards=N`), merged exactly by the summary."""

import json
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from featvis.compare.pairs import pair_numbers
from featvis.compare.sketch import ShardedSketch, Sketch, SketchWriter
from featvis.config.job import JobInfo
from featvis.config.schema import validate
from featvis.data.paths import ASSETS
from featvis.errors import ConfigError
from featvis.sweep import shards
from featvis.sweep.results import RESULT_FILE, JobRecord
from tests.helpers import compose_cfg, run_cli, start_cli, wait_for

CHECKPOINT = ASSETS / "checkpoints" / "demo_pspnet.pth"
SCENES = sorted((ASSETS / "demo" / "images").glob("*.png"))
N_IMAGES = 12


# --- the pieces ---

def test_shards_n_in_a_sweep_adds_the_shard_sweep_once():
    assert shards.expand(["-m", "shards=3", "layers=decoder"]) == [
        "-m", "shards=3", "layers=decoder", "shard=range(0,3)"]
    assert shards.expand(["--multirun", "shards=2"])[-1] == "shard=range(0,2)"
    assert shards.expand(["shards=3"]) == ["shards=3"]  # a single run: its job says how to shard
    assert shards.expand(["-m", "shards=3", "shard=0,2"]) == ["-m", "shards=3", "shard=0,2"]  # the user's own
    assert shards.expand(["-m", "shards=1"]) == ["-m", "shards=1"]


def test_the_shards_cover_the_list_once_in_order():
    for count in (0, 1, 5, 12, 13):
        for n in (1, 2, 3, 5):
            parts = [shards.part(count, i, n) for i in range(n)]
            assert [i for a, b in parts for i in range(a, b)] == list(range(count))
            assert max(b - a for a, b in parts) - min(b - a for a, b in parts) <= 1


def test_a_single_run_with_shards_says_how_to_shard():
    with pytest.raises(ConfigError, match=r"run it as a sweep, python run\.py -m shards=3"):
        shards.check(validate(compose_cfg("shards=3")), multirun=False)
    with pytest.raises(ConfigError, match="no shard"):
        shards.check(validate(compose_cfg("shards=3")), multirun=True)
    shards.check(validate(compose_cfg("shards=3", "shard=2")), multirun=True)
    for bad, words in [("shard=3", "between 0 and shards-1=2"), ("shards=0", "between 1 and"),
                       ("threads=0", "threads=0")]:
        with pytest.raises(ConfigError, match=words):
            validate(compose_cfg("shards=3", bad))
    validate(compose_cfg("shards=3", "normalize.mode=shared"))  # fitted part by part (featvis.pipeline.fits)


def test_jobs_side_by_side_split_the_cores():
    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    local = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
    assert shards.running_at_once(joblib, 2, 6, cpus=16) == 2
    assert shards.running_at_once(joblib, -1, 6, cpus=16) == 6  # one per core, but only 6 jobs
    assert shards.running_at_once(joblib, -2, 40, cpus=16) == 15  # joblib's count: all cores but one
    assert shards.running_at_once(local, None, 6, cpus=16) == 6
    assert shards.running_at_once("hydra._internal.core_plugins.basic_launcher.BasicLauncher", None, 6, 16) == 1
    assert [shards.threads(16, n) for n in (1, 3, 32)] == [16, 5, 1]


def test_a_shard_is_named_and_typed_as_its_job():
    info = JobInfo(output_dir=Path("x"), overrides=["layers=backbone", "shard=1"], swept=["layers", "shard"])
    assert info.name == "layers=backbone,shard=1" and info.job_type == "layers=backbone"
    assert shards.unit_name(info.name) == "layers=backbone"


def _record(tmp_path, shard, status="ok", images=("a",), error=None):
    folder = tmp_path / str(shard)
    return JobRecord(dir=folder, name=f"layers=x,shard={shard}", status=status, num=shard,
                     overrides=["layers=x", f"shard={shard}"], error=error, images=list(images),
                     panels={s: ["input"] for s in images},
                     panel_files={s: {"input": f"featvis/{s}.png"} for s in images},
                     forwards=len(images), shard=shard, shards=3)


def test_the_summary_reads_a_jobs_shards_as_one_job(tmp_path):
    other = JobRecord(dir=tmp_path / "9", name="layers=y", status="ok", num=9, overrides=["layers=y"])
    records = [_record(tmp_path, 0, images=("a", "b")), other, _record(tmp_path, 1, images=("c",)),
               _record(tmp_path, 2, images=("d",))]
    merged, kept = shards.merge(records)
    assert kept is other
    assert (merged.name, merged.status, merged.images, merged.forwards) == ("layers=x", "ok", ["a", "b", "c", "d"], 4)
    assert merged.overrides == ["layers=x"] and merged.parts == [tmp_path / "0", tmp_path / "1", tmp_path / "2"]
    assert merged.picture("c", "input") == tmp_path / "1" / "featvis" / "c.png"
    failed, _ = shards.merge([_record(tmp_path, 0), _record(tmp_path, 1, "failed", error="no image decodes"),
                              _record(tmp_path, 2), other])
    assert failed.status == "failed" and failed.error == "shard 1 of 3: no image decodes"
    (waiting,) = shards.merge([_record(tmp_path, 0), _record(tmp_path, 2)])
    assert waiting.status == "incomplete" and "1 of 3 shards have not finished (shard 1)" in waiting.error


def test_sharded_sketches_give_the_unsharded_numbers_exactly(tmp_path):
    rng = np.random.default_rng(0)
    stems = [f"im_{i}" for i in range(7)]
    feats = {side: {s: rng.normal(size=(64, 12)).astype(np.float16) for s in stems} for side in "ab"}

    def write(folder, side, chosen):
        writer = SketchWriter(pixels=64, seed=0)
        for s in chosen:
            writer.add(s, "layer", feats[side][s], None)
        return writer.write(folder)

    whole = {side: Sketch(write(tmp_path / side, side, stems)) for side in "ab"}
    cuts = [shards.part(len(stems), i, 3) for i in range(3)]
    parts = {side: ShardedSketch([write(tmp_path / f"{side}{i}", side, stems[a:b]) for i, (a, b) in enumerate(cuts)])
             for side in "ab"}
    assert parts["a"].images == stems
    one, merged = pair_numbers(whole["a"], whole["b"], "layer"), pair_numbers(parts["a"], parts["b"], "layer")
    assert abs(one[0] - merged[0]) < 1e-9 and abs(one[1] - merged[1]) < 1e-9


def test_parts_of_a_scale_merge_into_the_whole_ones():
    from featvis.reduce.pca_basis import PcaBasis
    from featvis.render.scales import SharedRange

    rng = np.random.default_rng(1)
    maps = [torch.from_numpy(rng.normal(size=(6, 9, 11)).astype(np.float32) + i) for i in range(5)]
    whole, parts = PcaBasis(), [PcaBasis(), PcaBasis()]
    ranges, range_parts = SharedRange(), [SharedRange(), SharedRange()]
    for i, m in enumerate(maps):
        whole.update(m)
        parts[i >= 2].update(m)
        ranges.update(m)
        range_parts[i >= 2].update(m)
    merged, merged_range = PcaBasis(), SharedRange()
    for part, range_part in zip(parts, range_parts):
        merged.merge(part.state())
        merged_range.merge(range_part.state())
    assert merged.count == whole.count
    assert np.allclose(merged.state()["scatter"], whole.state()["scatter"], rtol=0, atol=1e-9)
    assert torch.allclose(merged.fit().components, whole.fit().components, atol=1e-9)
    assert merged_range.range() == ranges.range() and merged_range.count == ranges.count


# --- end to end: 12 images, 2 checkpoints, 3 shards, against the unsharded sweep ---

@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """12 different images (the scenes, flipped and shifted), the demo checkpoint and one with layer3 perturbed,
    and the unsharded sweep's summary."""
    root = tmp_path_factory.mktemp("split")
    images = root / "images"
    images.mkdir()
    for i in range(N_IMAGES):
        img = cv2.imread(str(SCENES[i % len(SCENES)]))
        img = img[:, ::-1] if (i // 3) % 2 else img
        img = np.roll(img, 7 * i, axis=0) if i >= 6 else img
        cv2.imwrite(str(images / f"im_{i:02d}.png"), np.ascontiguousarray(img))
    noisy = root / "noisy.pth"
    checkpoint = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    generator = torch.Generator().manual_seed(0)
    for key in [k for k in checkpoint["state_dict"] if k.startswith("backbone.layer3.") and k.endswith("conv1.weight")]:
        weight = checkpoint["state_dict"][key]
        checkpoint["state_dict"][key] = weight + 0.5 * weight.std() * torch.randn(weight.shape, generator=generator)
    torch.save(checkpoint, noisy)
    args = ["-m", f"model.checkpoint={CHECKPOINT},{noisy}", "layers=backbone", f"image={images}", "gt_mask=null",
            "backends=[local]"]
    proc = run_cli(*args, f"hydra.sweep.dir={root / 'whole'}")
    assert proc.returncode == 0, proc.stderr
    return {"root": root, "images": images, "args": args, "whole": _summary(root / "whole")}


def _summary(sweep: Path) -> dict:
    return json.loads((sweep / "summary" / "summary.json").read_text())


def _numbers(summary: dict) -> dict:
    return {(e["b"], e["layer"]): (e["cka"], e["change"]) for e in summary["checkpoint_similarity"]}


def _assert_same_as_unsharded(sweep: Path, split: dict) -> dict:
    summary, whole = _summary(sweep), split["whole"]
    assert [(j["name"], j["status"]) for j in summary["jobs"]] == [(j["name"], "ok") for j in whole["jobs"]]
    for job in summary["jobs"]:  # every image exactly once per checkpoint, in the list's order
        assert job["images"] == [f"im_{i:02d}" for i in range(N_IMAGES)]
        assert len(job["parts"]) == 3
    mine, theirs = _numbers(summary), _numbers(whole)
    assert sorted(mine) == sorted(theirs) and len(mine) == 4  # 4 backbone stages against the baseline
    for key, (cka, change) in theirs.items():
        assert abs(mine[key][0] - cka) < 1e-9 and abs(mine[key][1] - change) < 1e-9, key
    for stem in whole["sheets"]:  # one contact sheet per image, the same pixels
        assert (sweep / "summary" / f"contact_{stem}.png").read_bytes() == (
            split["root"] / "whole" / "summary" / f"contact_{stem}.png").read_bytes()
    return summary


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_a_sharded_sweep_equals_the_unsharded_one(split, launcher):
    sweep = split["root"] / f"sharded_{launcher}"
    more = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
    proc = run_cli(*split["args"], "shards=3", f"hydra/launcher={launcher}", *more, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr
    _assert_same_as_unsharded(sweep, split)
    listed = list((sweep / "featvis_inputs").glob("*.json"))
    assert len(listed) == 1  # one input list for the sweep, read by all six shard jobs
    drawn = [json.loads((sweep / str(n) / RESULT_FILE).read_text())["images"] for n in range(6)]
    assert [len(d) for d in drawn] == [4] * 6


def test_a_stopped_sharded_sweep_launched_again_draws_only_what_is_missing(split):
    sweep = split["root"] / "resumed"
    args = [*split["args"], "shards=3", f"hydra.sweep.dir={sweep}"]
    first = start_cli(*args)
    pieces = sweep / "3" / "featvis.partial" / ".pieces"
    wait_for(first, lambda: (pieces / "0.json").exists(), "the fourth shard job's first whole image")
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 130, err
    done = {n for n in range(6) if (sweep / str(n) / RESULT_FILE).exists()
            and json.loads((sweep / str(n) / RESULT_FILE).read_text())["status"] == "ok"}
    assert {0, 1, 2} <= done and 5 not in done  # stopped in the fourth job (or just after it)
    staged = sweep / "3" / "featvis.partial" / "local"
    whole = sorted(int(p.stem) for p in pieces.glob("*.json") if p.stem.isdigit()) if 3 not in done else []
    assert whole == list(range(len(whole)))  # pieces of the images drawn in order, nothing else
    kept_files = {p: p.stat().st_mtime_ns for i in whole for p in (staged / f"im_{i:02d}").glob("**/*.png")}
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    kept = [n for n in range(6) if "drawn by an earlier launch of this sweep (" in _job_log(sweep / str(n))]
    assert kept == sorted(done)
    if whole:  # the stopped shard draws only its images that were not whole
        assert f"{len(whole)} of 4 images were drawn by an earlier launch of this sweep" in _job_log(sweep / "3")
        record = json.loads((sweep / "3" / RESULT_FILE).read_text())
        assert record["forwards"] == 4 - len(whole) and len(record["images"]) == 4
        moved = {sweep / "3" / "featvis" / p.relative_to(sweep / "3" / "featvis.partial"): t
                 for p, t in kept_files.items()}
        assert kept_files and all(p.stat().st_mtime_ns == t for p, t in moved.items())  # not drawn again
        assert not (sweep / "3" / "featvis" / ".pieces").exists()
        lines = [json.loads(line) for line in (sweep / "3" / "featvis" / "local" / "scalars.jsonl").open()]
        stats = [line["step"] for line in lines if any(key.startswith("stats/") for key in line)]
        assert stats == [0, 1, 2, 3]  # the earlier launch's whole images' lines kept, nothing twice
    summary = _assert_same_as_unsharded(sweep, split)
    assert summary["stopped"] is None


@pytest.mark.parametrize("scale", [["normalize.mode=shared"], ["reduction=pca_rgb", "reduction.shared_basis=true"]],
                         ids=["shared_range", "pca_shared_basis"])
def test_a_scale_over_the_whole_split_is_fitted_by_the_shards_then_drawn(split, scale):
    base = ["-m", f"model.checkpoint={CHECKPOINT}", "layers=backbone", f"image={split['images']}", "gt_mask=null",
            "backends=[local]", *scale]
    tag = "pca" if "pca" in scale[0] else "range"
    whole = split["root"] / f"whole_{tag}"
    assert run_cli(*base, f"hydra.sweep.dir={whole}").returncode == 0
    sweep = split["root"] / f"sharded_{tag}"
    args = [*base, "shards=3", f"hydra.sweep.dir={sweep}"]
    first = run_cli(*args)  # the basic launcher: shards 0 and 1 fit and wait, shard 2 finds every part and draws
    assert first.returncode == 4, first.stderr
    waiting = [line for line in first.stderr.splitlines() if "launch the same sweep again" in line]
    assert len(waiting) == 2 and not [line for line in first.stderr.splitlines() if "error" in line], first.stderr
    (job,) = _summary(sweep)["jobs"]
    assert job["status"] == "incomplete" and "launch the same sweep again" in job["error"]
    assert sorted(p.name for p in (sweep / "featvis_fits").glob("*/*.npz")) == ["0.npz", "1.npz", "2.npz"]
    assert not (sweep / "0" / "featvis").exists() and (sweep / "2" / "featvis").is_dir()
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    (job,) = _summary(sweep)["jobs"]
    assert job["status"] == "ok" and job["images"] == [f"im_{i:02d}" for i in range(N_IMAGES)]
    largest = 0
    for n, stem in enumerate(job["images"]):
        mine = sweep / str(n // 4) / "featvis" / "local" / stem
        theirs = whole / "0" / "featvis" / "local" / stem
        files = sorted(p.relative_to(theirs) for p in theirs.glob("featmap/*.png"))
        assert len(files) == 4
        for rel in files:
            a, b = cv2.imread(str(mine / rel)), cv2.imread(str(theirs / rel))
            largest = max(largest, int(np.abs(a.astype(int) - b.astype(int)).max()))
    # min and max merge exactly; the basis's moments merge to float64 rounding, which may move a colour by 1
    assert largest == 0 if tag == "range" else largest <= 1, largest


def _job_log(folder: Path) -> str:
    return "".join(p.read_text() for p in folder.glob("*.log"))


def test_a_failed_shard_fails_its_job_and_the_sweep(split):
    broken = split["root"] / "broken"
    broken.mkdir()
    for path in sorted(split["images"].iterdir()):
        data = path.read_bytes()
        stem = int(path.stem.split("_")[1])
        (broken / path.name).write_bytes(data[: len(data) // 2] if 4 <= stem < 8 else data)  # shard 1's: truncated
    sweep = split["root"] / "failing"
    proc = run_cli("-m", f"model.checkpoint={CHECKPOINT}", "layers=backbone", f"image={broken}", "gt_mask=null",
                   "backends=[local]", "shards=3", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 1, proc.stderr
    (job,) = _summary(sweep)["jobs"]
    assert job["status"] == "failed" and job["error"].startswith("shard 1 of 3: "), job["error"]
    assert [line for line in proc.stderr.splitlines() if "shard=1" in line], proc.stderr


def test_a_job_takes_its_threads_and_gives_them_back(tmp_path, monkeypatch):
    from featvis.pipeline import job as pipeline
    from tests.helpers import DEMO_IMAGE, job_config

    real, seen = torch.set_num_threads, []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: seen.append(n) or real(n))
    before = torch.get_num_threads()
    wanted = 1 if before > 1 else 2
    pipeline.run(job_config(f"threads={wanted}", f"image={DEMO_IMAGE}", "backends=[local]"),
                 JobInfo(output_dir=tmp_path))
    assert seen == [wanted, before] and torch.get_num_threads() == before
