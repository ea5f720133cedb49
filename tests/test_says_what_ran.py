"""The saved config and the sweep's records say what ran: layers.names given means no preset ran."""

import json

import pytest
import yaml

from featvis.config import data_only
from tests.helpers import DEMO_IMAGE, compose_cfg, run_cli


def test_names_given_compose_with_the_preset_null():
    data_only.install()  # the command line's checks of every composed config (idempotent)
    cfg = compose_cfg("layers.names=[backbone.layer4]")
    assert cfg.layers.preset is None and list(cfg.layers.names) == ["backbone.layer4"]
    assert compose_cfg().layers.preset == "decoder"  # the group's default, when no names are given


@pytest.mark.e2e
def test_a_sweep_over_names_saves_and_records_the_names(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "layers.names=[decode_head.conv_seg],[backbone.layer4]", f"image={DEMO_IMAGE}",
                   "backends=[local]", "wandb.mode=disabled", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr
    for num, names in ((0, ["decode_head.conv_seg"]), (1, ["backbone.layer4"])):
        saved = yaml.safe_load((sweep / str(num) / ".hydra" / "config.yaml").read_text())
        assert saved["layers"] == {"preset": None, "names": names}
        record = json.loads((sweep / str(num) / "featvis_result.json").read_text())
        assert record["layers"] == names[0]
    index = (sweep / "summary" / "index.html").read_text()
    assert "backbone.layer4" in index and ">decoder<" not in index
