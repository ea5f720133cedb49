import pytest

from featvis.config.paths import ASSETS
from featvis.errors import CheckpointError
from featvis.model.checkpoints import resolve_checkpoint


def test_null_means_random_weights():
    assert resolve_checkpoint(None) is None


def test_missing_file_names_the_fix(tmp_path):
    with pytest.raises(CheckpointError, match="model.checkpoint=null"):
        resolve_checkpoint(str(tmp_path / "nope.pth"))


def test_featvis_asset_resolves_inside_the_package():
    path = resolve_checkpoint("featvis::checkpoints/demo_pspnet.pth")
    assert path == str(ASSETS / "checkpoints" / "demo_pspnet.pth")


def test_unreachable_url_fails_fast_and_leaves_no_partial_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = "http://127.0.0.1:9/ckpt/model.pth"  # the discard port: connection refused at once
    with pytest.raises(CheckpointError) as err:
        resolve_checkpoint(url, timeout=5)
    msg = str(err.value)
    assert url in msg and "model.checkpoint=null" in msg and "\n" not in msg
    assert not any(tmp_path.rglob("model.pth*"))


def test_cached_url_is_not_downloaded_again(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / "model.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    assert resolve_checkpoint("http://127.0.0.1:9/ckpt/model.pth") == str(cached)
