"""Checkpoints are pickles: featvis reads them with weights_only unless model.trust_checkpoint=true.

The malicious checkpoint here is real: its meta holds an object whose unpickling touches
a marker file. Refused, the marker must not exist; trusted, it must (so the payload is
not a dud and the refusal tests prove something).
"""

from __future__ import annotations

import collections
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from featvis.data.paths import ASSETS
from featvis.errors import CheckpointError
from featvis.model.load import load_model
from featvis.model.safe_load import load_checkpoint_file, safe_checkpoint_globals
from tests.helpers import DEMO_IMAGE, error_line, run_cli

CONFIG = "featvis::configs/demo_pspnet.py"
DEMO_CKPT = ASSETS / "checkpoints" / "demo_pspnet.pth"


class _TouchOnUnpickle:
    """Unpickling this runs Path(marker).touch(): code chosen by whoever wrote the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.fixture(scope="module")
def demo() -> dict:
    return torch.load(DEMO_CKPT, map_location="cpu", weights_only=True)


def _malicious(tmp_path: Path, demo: dict) -> tuple:
    """A normal-looking MMEngine checkpoint (the demo weights and meta) carrying the payload."""
    marker = tmp_path / "pwned"
    path = tmp_path / "malicious.pth"
    meta = dict(demo["meta"], note=_TouchOnUnpickle(marker))
    torch.save({"state_dict": demo["state_dict"], "meta": meta}, path)
    assert not marker.exists()
    return path, marker


def _assert_refusal(message: str, path: Path) -> None:
    assert "\n" not in message
    assert str(path) in message and "pathlib" in message  # the file, and what in it is refused
    assert "can run code" in message and "model.trust_checkpoint=true" in message


def _state(model: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_malicious_checkpoint_is_refused_without_running_it(tmp_path, demo):
    path, marker = _malicious(tmp_path, demo)
    with pytest.raises(CheckpointError) as err:
        load_model(CONFIG, str(path), "cpu")
    _assert_refusal(str(err.value), path)
    assert not marker.exists()


def test_env_var_cannot_switch_weights_only_off(tmp_path, demo, monkeypatch):
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD only changes torch.load calls that leave weights_only unset."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path, marker = _malicious(tmp_path, demo)
    with pytest.raises(CheckpointError, match="model.trust_checkpoint=true"):
        load_model(CONFIG, str(path), "cpu")
    assert not marker.exists()


def test_cli_refuses_malicious_checkpoint_in_one_line(tmp_path, demo):
    path, marker = _malicious(tmp_path, demo)
    out = tmp_path / "out"
    proc = run_cli(f"model.checkpoint={path}", f"image={DEMO_IMAGE}", "backends=[local]", f"hydra.run.dir={out}")
    lines = [error_line(proc)]
    _assert_refusal(lines[0], path)
    assert not marker.exists()
    assert not (out / "featvis").exists()


def test_trusted_malicious_checkpoint_loads_and_runs_its_payload(tmp_path, demo):
    path, marker = _malicious(tmp_path, demo)
    loaded = load_model(CONFIG, str(path), "cpu", trust_checkpoint=True)
    assert marker.exists()  # the payload is real: trust means full unpickling
    _assert_same_weights(_state(loaded.model), demo["state_dict"])


def test_numpy_values_in_meta_load_without_trust(tmp_path, demo):
    """What OpenMMLab checkpoints carry beside the weights: numpy scalars, arrays and dtypes."""
    path = tmp_path / "numpy_meta.pth"
    palette = [[0, 0, 0], [1, 1, 1], [2, 2, 2], [3, 3, 3]]
    meta = {"dataset_meta": {"classes": ("bg", "a", "b", "c"), "palette": palette},
            "hook_msgs": {"best_score": np.float64(0.7), "last_ckpt": "iter_4000.pth"},
            "epoch": np.int64(3), "iter": np.int32(4000), "lr": np.float32(0.01), "flag": np.bool_(True),
            "history": np.arange(6, dtype=np.float64).reshape(2, 3), "dtype": np.dtype("float32")}
    torch.save({"state_dict": demo["state_dict"], "meta": meta}, path)
    loaded = load_model(CONFIG, str(path), "cpu")
    assert loaded.dataset_meta == meta["dataset_meta"]
    _assert_same_weights(_state(loaded.model), demo["state_dict"])
    back = load_checkpoint_file(str(path))["meta"]
    assert back["hook_msgs"]["best_score"] == 0.7 and type(back["epoch"]) is np.int64
    assert np.array_equal(back["history"], meta["history"]) and back["dtype"] == np.float32


def test_runner_checkpoint_with_message_hub_loads_without_trust(tmp_path, demo):
    """Every checkpoint an MMEngine Runner saves has a message_hub of HistoryBuffers."""
    from mmengine.logging import HistoryBuffer, MessageHub

    hub = MessageHub(f"featvis-test-{tmp_path.name}")
    hub.update_scalar("train/loss", torch.tensor(0.5))
    hub.update_scalar("train/lr", 0.01)
    hub.update_info("val/mIoU", np.float64(0.72))
    path = tmp_path / "iter_4000.pth"
    torch.save({"meta": dict(demo["meta"], iter=4000), "state_dict": demo["state_dict"],
                "message_hub": hub.state_dict(), "optimizer": {"state": {}, "param_groups": [{"lr": 0.01}]}}, path)
    registry = dict(HistoryBuffer._statistics_methods)
    loaded = load_model(CONFIG, str(path), "cpu")
    _assert_same_weights(_state(loaded.model), demo["state_dict"])
    buffer = load_checkpoint_file(str(path))["message_hub"]["log_scalars"]["train/loss"]
    assert buffer.mean() == 0.5
    assert HistoryBuffer._statistics_methods == registry  # reading leaves mmengine's registry as it was


def test_only_history_buffer_methods_pass_the_restricted_getattr(tmp_path):
    """builtins.getattr is allowed only as HistoryBuffer.min/max/current/mean, which its pickles name."""
    from mmengine.logging import HistoryBuffer

    class Reach:
        def __reduce__(self):
            return (getattr, (HistoryBuffer, "register_statistics"))

    path = tmp_path / "reach.pth"
    torch.save({"state_dict": {}, "meta": {"x": Reach()}}, path)
    with pytest.raises(CheckpointError, match=r"holds builtins\.getattr .*model\.trust_checkpoint=true"):
        load_checkpoint_file(str(path))


def test_demo_checkpoint_loads_without_trust_with_the_same_weights_as_mmseg(demo):
    """featvis's loading path gives exactly what mmseg's init_model(cfg, checkpoint) gave before."""
    from mmengine.config import Config
    from mmseg.apis import init_model

    from featvis.data.paths import resolve_model_config

    loaded = load_model(CONFIG, "featvis::checkpoints/demo_pspnet.pth", "cpu")
    old = init_model(Config.fromfile(str(resolve_model_config(CONFIG))), str(DEMO_CKPT), device="cpu")
    _assert_same_weights(_state(loaded.model), _state(old))
    _assert_same_weights(_state(loaded.model), demo["state_dict"])
    assert loaded.dataset_meta == old.dataset_meta == demo["meta"]["dataset_meta"]


def test_bare_state_dict_with_ddp_prefix_loads_and_takes_classes_from_config(tmp_path, demo):
    """MMEngine's key revision (`module.` stripped) still applies; no meta: the config decides classes."""
    path = tmp_path / "bare.pth"
    torch.save({f"module.{k}": v for k, v in demo["state_dict"].items()}, path)
    loaded = load_model(CONFIG, str(path), "cpu")
    _assert_same_weights(_state(loaded.model), demo["state_dict"])
    assert len(loaded.dataset_meta["classes"]) == len(demo["meta"]["dataset_meta"]["classes"])


def _not_checkpoints(tmp: Path) -> dict:
    zip_path = tmp / "zip_without_data_pkl.pth"
    with zipfile.ZipFile(zip_path, "w") as z:
        z.writestr("archive/readme.txt", "no data.pkl in here")
    truncated = tmp / "truncated.pth"
    truncated.write_bytes(DEMO_CKPT.read_bytes()[:100_000])
    garbage = tmp / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint\n" * 64 + bytes(range(256)))
    empty = tmp / "empty.pth"
    empty.write_bytes(b"")
    html = tmp / "login_page.pth"  # what a download behind a login leaves
    html.write_text("<!DOCTYPE html><html><body>Sign in</body></html>")
    return {p.stem: p for p in (zip_path, truncated, garbage, empty, html)}


@pytest.mark.parametrize("kind", ["garbage", "zip_without_data_pkl", "truncated", "empty", "login_page"])
@pytest.mark.parametrize("trust", [False, True])
def test_a_file_that_is_no_checkpoint_is_one_line(tmp_path, kind, trust):
    path = _not_checkpoints(tmp_path)[kind]
    with pytest.raises(CheckpointError) as err:
        load_model(CONFIG, str(path), "cpu", trust_checkpoint=trust)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "torch.save" in message
    assert "\x1b" not in message and len(message) < 400
    if kind in ("garbage", "login_page"):
        assert "is not a PyTorch checkpoint" in message


def test_a_checkpoint_that_is_no_dict_is_one_line(tmp_path):
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="holds a Tensor, not a state dict"):
        load_checkpoint_file(str(path))


def test_allow_list_is_scoped_to_the_call():
    """The allow-list is a context manager around torch.load, never process-wide."""
    # A first load may import modules that register safe globals of their own at import
    # time (torch.distributed's Shard classes): measure around a second load.
    load_checkpoint_file(str(DEMO_CKPT))
    before = list(torch.serialization.get_safe_globals())
    load_checkpoint_file(str(DEMO_CKPT))
    after = torch.serialization.get_safe_globals()
    assert set(after) == set(before)  # its order follows torch's own registry, which imports may reorder
    assert not [g for g in safe_checkpoint_globals() if g in after and g is not collections.OrderedDict]
