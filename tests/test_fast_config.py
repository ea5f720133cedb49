"""--help, --cfg and config mistakes answer without importing torch, mmseg or MMEngine's visualization."""

import subprocess
import sys

import pytest

from tests.helpers import ROOT, cli_env

pytestmark = pytest.mark.e2e
HEAVY = ("torch", "mmseg", "mmcv", "mmengine.visualization", "wandb")


def _run(*args):
    """run.py under `-X importtime`: its exit code, its own stderr lines, and every module it imported."""
    proc = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "run.py"), *args], cwd=ROOT,
                          env=cli_env(), capture_output=True, text=True, timeout=300)
    lines = proc.stderr.splitlines()
    imported = {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:") and "|" in line}
    said = [line for line in lines if line.strip() and not line.startswith("import time:")]
    return proc, said, imported


@pytest.mark.parametrize("args, code, words", [
    (["--help"], 0, None),
    (["--cfg", "job"], 0, None),
    (["reduction=nonexistent"], 1, "Could not find 'reduction/nonexistent'"),
    (["alpha=nonsense"], 1, "alpha"),  # a wrong type: refused while composing
    (["no_such_key=1"], 1, "no_such_key"),
    (["alpha=2"], 1, "alpha=2.0 must be between 0 and 1"),  # a range: the job's first check
])
def test_the_answer_comes_before_any_heavy_import(args, code, words, tmp_path):
    proc, said, imported = _run(*args, f"hydra.run.dir={tmp_path}")
    assert proc.returncode == code, "\n".join(said)
    assert "featvis.cli" in imported  # the probe sees imports at all
    assert not [m for m in imported if m.split(".")[0] in HEAVY or m in HEAVY], sorted(
        m for m in imported if m.split(".")[0] in HEAVY)[:5]
    if args == ["--help"]:  # the groups' options a user can type; the schema entries stay out of them
        listed = proc.stdout.split("== Config ==")[0]
        assert "reduction: channel_max, class_map, gradcam" in listed and "model: ann, deeplabv3, demo" in listed
        assert "base_" not in listed, listed
    if words is not None:
        assert len(said) == 1 and said[0].startswith("featvis: error: ") and words in said[0], said
