"""The public model presets: real mmseg configs from the wheel, random weights (no downloads here)."""

import cv2
import numpy as np
import pytest

from featvis.model.load import load_model
from featvis.record.layers import select_layers
from featvis.render.draw import scale_bar_rows
from tests.helpers import compose_cfg, run_cli

PUBLIC = ["ann", "pspnet", "deeplabv3", "segformer"]


@pytest.mark.parametrize("model", PUBLIC)
def test_presets_name_real_modules_of_the_model(model):
    cfg = compose_cfg(f"model={model}")
    loaded = load_model(cfg.model.config, None, "cpu")
    assert not any("SyncBatchNorm" in type(m).__name__ for m in loaded.model.modules())  # reverted on CPU
    assert len(loaded.dataset_meta["classes"]) == 19  # Cityscapes, from the config's dataset
    for preset, names in cfg.model.layer_presets.items():
        assert select_layers(loaded.model, list(names)), preset


@pytest.mark.slow
def test_ann_decoder_end_to_end_with_random_weights(tmp_path):
    image = tmp_path / "street.png"
    rng = np.random.default_rng(0)
    cv2.imwrite(str(image), rng.integers(0, 255, (64, 128, 3), dtype=np.uint8))
    out = tmp_path / "X"
    proc = run_cli("model=ann", "layers=decoder", "model.checkpoint=null", f"image={image}",
                   "backends=[local]", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr
    assert "RANDOM weights" in proc.stdout
    folder = out / "featvis" / "local" / "street"
    maps = sorted(p.name for p in (folder / "featmap").iterdir())
    assert maps == ["decode_head.bottleneck.png", "decode_head.context.png", "decode_head.conv_seg.png",
                    "decode_head.fusion.png"]
    drawn = cv2.imread(str(folder / "featmap" / "decode_head.context.png"))
    assert drawn.shape == (64 + scale_bar_rows(64, 128), 128, 3)  # the map, its colour scale below
    assert (folder / "prediction.png").is_file() and not (folder / "ground_truth.png").exists()
