"""W&B extras: interactive masks on the input, per-layer activation statistics, the run's table."""

import json

import cv2
import numpy as np
import pytest

from featvis.backends.wandb import _masks
from featvis.config.job import JobInfo
from featvis.data.paths import ASSETS
from featvis.pipeline import job as pipeline
from tests.helpers import history, job_config, wandb_records, wandb_runs

DEMO_STEMS = sorted(p.stem for p in (ASSETS / "demo" / "images").glob("*.png"))
DEMO_CLASSES = ["background", "circle", "square", "triangle"]
DECODER_MAPS = ["decode_head.psp_modules[0]", "decode_head.psp_modules[1]", "decode_head.psp_modules[2]",
                "decode_head.psp_modules[3]", "decode_head.bottleneck", "decode_head.conv_seg"]
STATS = ["mean", "std", "zero_fraction", "max"]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    out = tmp_path_factory.mktemp("rich")
    result = pipeline.run(job_config(), JobInfo(output_dir=out))  # default: local and wandb
    (run_dir,) = wandb_runs(out / "featvis")
    return out, result, run_dir, wandb_records(run_dir)


def _mask_labels(records, mask):
    """The class labels wandb keeps for `input`'s mask (in the run config's `_wandb` section)."""
    for rec in records:
        if rec.get("type") == "config":
            found = rec["config"]["update"].get("_wandb", {}).get("mask/class_labels", {})
            if f"input_wandb_delimeter_{mask}" in found:
                return found[f"input_wandb_delimeter_{mask}"]["value"]
    return None


def test_input_carries_prediction_and_ground_truth_masks_with_class_names(job):
    out, _, run_dir, records = job
    rows = history(records)
    assert len(rows) == len(DEMO_STEMS)
    for row in rows:
        assert row["input._type"] == "image-file"
        for mask in ("prediction", "ground_truth"):
            assert row[f"input.masks.{mask}._type"] == "mask"
            assert (run_dir / "files" / row[f"input.masks.{mask}.path"]).is_file()
    expected = {str(i): name for i, name in enumerate(DEMO_CLASSES)}
    assert _mask_labels(records, "prediction") == expected
    assert _mask_labels(records, "ground_truth") == expected
    # the mask PNG holds the label map: it equals the shipped ground truth
    gt = cv2.imread(str(ASSETS / "demo" / "masks" / f"{DEMO_STEMS[0]}.png"), cv2.IMREAD_UNCHANGED)
    logged = cv2.imread(str(run_dir / "files" / rows[0]["input.masks.ground_truth.path"]), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(logged, gt)
    # the overlay panels other backends need are still there
    assert "ground_truth._type" in rows[0] and "prediction._type" in rows[0]


def test_activation_stats_in_every_row_equal_the_layer_output(job):
    from mmseg.apis import inference_model

    from featvis.model.load import load_model

    _, _, _, records = job
    rows = history(records)
    for row in rows:
        for layer in DECODER_MAPS:
            for stat in STATS:
                assert isinstance(row[f"stats/{layer}/{stat}"], (int, float)), (layer, stat)  # 0.0 reads back as 0
    loaded = load_model("featvis::configs/demo_pspnet.py", "featvis::checkpoints/demo_pspnet.pth", "cpu")
    seen = []
    handle = loaded.model.decode_head.bottleneck.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    try:
        for stem, row in zip(DEMO_STEMS, rows):
            seen.clear()
            inference_model(loaded.model, cv2.imread(str(ASSETS / "demo" / "images" / f"{stem}.png")))
            (feat,) = seen
            feat = feat[0].double()
            assert row["stats/decode_head.bottleneck/mean"] == pytest.approx(float(feat.mean()), rel=1e-5)
            assert row["stats/decode_head.bottleneck/max"] == pytest.approx(float(feat.max()), rel=1e-6)
            assert row["stats/decode_head.bottleneck/std"] == pytest.approx(float(feat.std(correction=0)), rel=1e-4)
            zero_fraction = float((feat == 0).double().mean())
            assert row["stats/decode_head.bottleneck/zero_fraction"] == pytest.approx(zero_fraction)
    finally:
        handle.remove()
    assert 0 < rows[0]["stats/decode_head.bottleneck/zero_fraction"] < 1  # after a ReLU: some exact zeros


def test_local_backend_writes_the_stats_as_scalars(job):
    out, _, _, _ = job
    lines = [json.loads(line) for line in (out / "featvis" / "local" / "scalars.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(len(DEMO_STEMS)))
    assert "stats/decode_head.conv_seg/max" in lines[0]


def test_run_table_has_one_row_per_image_with_maps_and_stats(job):
    _, _, run_dir, records = job
    (table_file,) = (run_dir / "files" / "media" / "table").rglob("*.table.json")
    table = json.loads(table_file.read_text())
    expected = ["image_id", "input"]
    for layer in DECODER_MAPS:
        expected += [f"featmap/{layer}", *(f"stats/{layer}/{s}" for s in STATS)]
    assert table["columns"] == expected
    assert len(table["data"]) == len(DEMO_STEMS)
    assert [r[0] for r in table["data"]] == DEMO_STEMS
    rows = history(records)
    col = expected.index("stats/decode_head.bottleneck/mean")
    assert [r[col] for r in table["data"]] == pytest.approx([r["stats/decode_head.bottleneck/mean"] for r in rows])
    summary = {}
    for rec in records:
        if rec.get("type") == "summary":
            summary.update(rec["summary"]["update"])
    assert summary["featvis/table"]["_type"] == "table-file"
    assert len(history(records)) == len(DEMO_STEMS)  # the table adds no history row


def test_masks_name_the_ignore_index_and_keep_values_valid():
    gt = np.array([[0, 1, 255], [3, 255, 2]], dtype=np.uint8)
    pred = np.array([[0, 1, 2], [3, 3, 2]], dtype=np.int64)
    masks = _masks(pred, gt, DEMO_CLASSES)
    assert masks["ground_truth"]["class_labels"] == {0: "background", 1: "circle", 2: "square",
                                                    3: "triangle", 255: "ignore"}
    assert masks["prediction"]["mask_data"].dtype == np.uint8
    assert np.array_equal(masks["ground_truth"]["mask_data"], gt)
    assert _masks(pred, None, DEMO_CLASSES).keys() == {"prediction"}
    assert _masks(np.full((2, 2), 300), None, DEMO_CLASSES) == {}  # not a valid wandb mask: left out


def test_ground_truth_with_ignore_label_is_logged(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    stem = DEMO_STEMS[0]
    (images / f"{stem}.png").write_bytes((ASSETS / "demo" / "images" / f"{stem}.png").read_bytes())
    gt = cv2.imread(str(ASSETS / "demo" / "masks" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
    gt[:10] = 255  # mmseg's ignore index
    cv2.imwrite(str(masks / f"{stem}.png"), gt)
    out = tmp_path / "out"
    pipeline.run(job_config(f"image={images}", f"gt_mask={masks}", "backends=[wandb]",
                             "layers.names=[decode_head.bottleneck]"), JobInfo(output_dir=out))
    (run_dir,) = wandb_runs(out / "featvis")
    records = wandb_records(run_dir)
    (row,) = history(records)
    logged = cv2.imread(str(run_dir / "files" / row["input.masks.ground_truth.path"]), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(logged, gt)
    assert _mask_labels(records, "ground_truth")["255"] == "ignore"


def test_gradcam_logs_no_stats(tmp_path):
    pipeline.run(job_config("reduction=gradcam", "reduction.target_class=circle", "backends=[wandb]",
                             "layers.names=[decode_head.bottleneck]",
                             f"image={ASSETS}/demo/images/{DEMO_STEMS[0]}.png"),
                 JobInfo(output_dir=tmp_path))
    (run_dir,) = wandb_runs(tmp_path / "featvis")
    records = wandb_records(run_dir)
    (row,) = history(records)
    assert "featmap/decode_head.bottleneck._type" in row
    assert not any(k.startswith("stats/") for k in row)
    (table_file,) = (run_dir / "files" / "media" / "table").rglob("*.table.json")
    assert json.loads(table_file.read_text())["columns"] == ["image_id", "input", "featmap/decode_head.bottleneck"]
