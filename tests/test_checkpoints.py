"""model.checkpoint -> a local file: paths, featvis assets, URLs (downloaded once per URL, verified)."""

import http.server
import threading
from pathlib import Path
from typing import Dict

import pytest
import torch

from featvis.data.paths import ASSETS
from featvis.errors import CheckpointError
from featvis.model.checkpoints import cached_path, resolve_checkpoint
from tests.helpers import DEMO_IMAGE, error_line, run_cli


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
    url = "http://127.0.0.1:9/ckpt/model.pth"  # nothing listens there: only the cache can answer
    cached = cached_path(url)
    assert cached.is_relative_to(tmp_path / "hub" / "checkpoints") and cached.name == "model.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    assert resolve_checkpoint(url) == str(cached)


class _Files(http.server.BaseHTTPRequestHandler):
    """Serves `files` (path -> bytes); 404 for anything else."""

    files: Dict[str, bytes] = {}

    def do_GET(self):  # noqa: N802 - http.server's name
        body = self.files.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def serve(tmp_path, monkeypatch):
    """A local HTTP server on 127.0.0.1 (a thread, shut down after the test); TORCH_HOME in tmp_path.

    serve({path: bytes}) -> base URL."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    handler = type("Handler", (_Files,), {"files": {}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def start(files: Dict[str, bytes]) -> str:
        handler.files.update(files)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def _checkpoint_bytes(tmp_path: Path, marker: float) -> bytes:
    """A small but real torch.save checkpoint, told apart by `marker`."""
    path = tmp_path / f"ckpt_{marker}.pth"
    torch.save({"state_dict": {"w": torch.full((2,), marker)}}, path)
    return path.read_bytes()


def test_two_urls_with_the_same_file_name_are_cached_apart(tmp_path, serve):
    a, b = _checkpoint_bytes(tmp_path, 1.0), _checkpoint_bytes(tmp_path, 2.0)
    base = serve({"/one/x.pth": a, "/two/x.pth": b})
    path_a = resolve_checkpoint(f"{base}/one/x.pth", timeout=10)
    path_b = resolve_checkpoint(f"{base}/two/x.pth", timeout=10)
    assert path_a != path_b and Path(path_a).name == Path(path_b).name == "x.pth"
    assert Path(path_a).read_bytes() == a and Path(path_b).read_bytes() == b
    assert (Path(path_a).parent / "url.txt").read_text().strip() == f"{base}/one/x.pth"
    assert torch.load(path_b, weights_only=True)["state_dict"]["w"][0] == 2.0
    assert resolve_checkpoint(f"{base}/one/x.pth", timeout=10) == path_a  # cached: the same file again


def test_a_broken_download_is_not_kept_and_does_not_shadow_another_url(tmp_path, serve):
    good = _checkpoint_bytes(tmp_path, 3.0)
    base = serve({"/broken/x.pth": b"<!DOCTYPE html><html>Sign in</html>", "/good/x.pth": good})
    with pytest.raises(CheckpointError) as err:
        resolve_checkpoint(f"{base}/broken/x.pth", timeout=10)
    message = str(err.value)
    assert "\n" not in message and f"{base}/broken/x.pth" in message
    assert "not a PyTorch checkpoint" in message and "not kept" in message
    assert not [p for p in (tmp_path / "torch").rglob("*.pth*") if p.is_file()]  # nothing cached, no partial file
    assert Path(resolve_checkpoint(f"{base}/good/x.pth", timeout=10)).read_bytes() == good


def test_a_corrupt_cached_download_is_named_with_how_to_remove_it(tmp_path):
    url = "http://127.0.0.1:9/ckpt/demo.pth"  # never reached: the cached file answers
    torch_home = tmp_path / "torch"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(torch_home))
        cached = cached_path(url)
    cached.parent.mkdir(parents=True)
    cached.write_bytes((ASSETS / "checkpoints" / "demo_pspnet.pth").read_bytes()[:50_000])  # a cut-off file
    out = tmp_path / "out"
    proc = run_cli(f"model.checkpoint={url}", f"image={DEMO_IMAGE}", "backends=[local]", f"hydra.run.dir={out}",
                   TORCH_HOME=str(torch_home))
    lines = [error_line(proc)]
    assert url in lines[0] and f"delete {cached} and run again" in lines[0]
    assert not (out / "featvis").exists()
