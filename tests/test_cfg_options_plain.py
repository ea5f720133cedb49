"""model.cfg_options.<key>.<key>=value as mmseg's --cfg-options takes it, without Hydra's leading +."""

import pytest

from featvis.cli import plain_cfg_options
from tests.helpers import run_cli

pytestmark = pytest.mark.e2e


def test_only_cfg_options_overrides_get_the_plus_plus():
    assert plain_cfg_options(["model.cfg_options.model.decode_head.num_classes=7", "+model.cfg_options.a=1",
                              "layers=decoder", "--cfg", "job", "model.cfg_options.x.y=[1,2]"]) == [
        "++model.cfg_options.model.decode_head.num_classes=7", "+model.cfg_options.a=1", "layers=decoder",
        "--cfg", "job", "++model.cfg_options.x.y=[1,2]"]


@pytest.mark.parametrize("form", ["", "+", "++"])
def test_the_plain_form_and_the_plus_forms_all_change_the_built_model(form, tmp_path):
    proc = run_cli("mode=list", "listing.filter=decode_head.conv_seg", f"hydra.run.dir={tmp_path}",
                   "model.checkpoint=null",
                   f"{form}model.cfg_options.model.decode_head.num_classes=7")
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("decode_head.conv_seg "))
    assert " 1x7x" in row  # the demo model has 4 classes


def test_a_key_given_twice_takes_the_last_value(tmp_path):
    proc = run_cli("mode=list", "listing.filter=decode_head.conv_seg", f"hydra.run.dir={tmp_path}",
                   "model.checkpoint=null",
                   "model.cfg_options.model.decode_head.num_classes=7",
                   "model.cfg_options.model.decode_head.num_classes=5")
    assert proc.returncode == 0, proc.stderr
    assert " 1x5x" in next(line for line in proc.stdout.splitlines() if line.startswith("decode_head.conv_seg "))


def test_an_unknown_group_option_lists_only_the_options_a_user_can_type(tmp_path):
    proc = run_cli("reduction=nonexistent", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 1
    (line,) = [line for line in proc.stderr.splitlines() if line.strip()]
    assert line.startswith("featvis: error: ") and "Could not find 'reduction/nonexistent'" in line
    assert "select_max" in line and "topk" in line and "base_" not in line  # no ConfigStore schema entries
