"""A shared preset stays inside its job's folder (featvis.config.data_only, featvis.config.confined):
its log handlers, Hydra's output_subdir, a sweep's job folders, the backends' folders, its env_set."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import List

import pytest
from hydra import compose, initialize_config_dir

from featvis.config import confined, data_only
from featvis.errors import ConfigError
from tests.helpers import CONF, DEMO_IMAGE, error_line, run_cli


def _team(tmp_path: Path, name: str, body: str) -> Path:
    team = tmp_path / "team"
    (team / "preset").mkdir(parents=True, exist_ok=True)
    (team / "preset" / f"{name}.yaml").write_text("# @package _global_\n" + body)
    return team


def _run(tmp_path: Path, team: Path, *args: str):
    return run_cli(f"hydra.searchpath=[file://{team}]", "+preset=evil", f"image={DEMO_IMAGE}", "backends=[local]",
                   f"hydra.run.dir={tmp_path / 'out'}", *args)


def _handler(name: str, body: str) -> str:
    return "hydra:\n  job_logging:\n    handlers:\n" + f"      {name}:\n" + body + \
        f"    root:\n      handlers: [console, file, {name}]\n"


def test_a_rotating_log_file_outside_is_refused_and_left_intact(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("years of notes\n")
    team = _team(tmp_path, "evil", _handler("wipe", f"        class: logging.handlers.RotatingFileHandler\n"
                                                   f"        filename: {victim}\n        maxBytes: 1\n"))
    line = error_line(_run(tmp_path, team))
    assert f"hydra.job_logging.handlers.wipe.filename='{victim}' is outside the job's output folder" in line
    assert victim.read_text() == "years of notes\n"
    assert not list(tmp_path.glob("precious.txt.*"))  # no rotated copies either
    assert not (tmp_path / "out" / "featvis").exists()


@pytest.mark.parametrize("filename", ["{outside}", "relative.log", "${{hydra.runtime.output_dir}}/../x.log"])
def test_a_log_file_outside_is_never_created(tmp_path, filename, monkeypatch):
    outside = tmp_path / "elsewhere" / "log.txt"
    outside.parent.mkdir()
    name = filename.format(outside=outside)
    team = _team(tmp_path, "evil", _handler("copy", f"        class: logging.FileHandler\n"
                                                   f"        filename: '{name}'\n"))
    line = error_line(_run(tmp_path, team))
    assert "is outside the job's output folder" in line
    assert not outside.exists() and not (tmp_path / "x.log").exists()
    assert not (Path.cwd() / "relative.log").exists()


def test_a_log_file_inside_the_job_folder_is_written(tmp_path):
    team = _team(tmp_path, "evil", _handler("extra", "        class: logging.FileHandler\n"
                                                     "        filename: ${hydra.runtime.output_dir}/logs/extra.log\n"
                                                     "        formatter: simple\n"))
    (tmp_path / "out" / "logs").mkdir(parents=True)
    proc = _run(tmp_path, team)
    assert proc.returncode == 0, proc.stderr
    assert "results in" in (tmp_path / "out" / "logs" / "extra.log").read_text()


def test_a_socket_handler_is_refused_and_sends_nothing(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    received: List[bytes] = []
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                while chunk := conn.recv(65536):
                    received.append(chunk)

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    try:
        team = _team(tmp_path, "evil", _handler("leak", "        class: logging.handlers.SocketHandler\n"
                                                        f"        host: 127.0.0.1\n        port: {port}\n"))
        line = error_line(_run(tmp_path, team))
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()
    assert "hydra.job_logging.handlers.leak.class='logging.handlers.SocketHandler'" in line
    assert "nothing that sends the log to a socket" in line
    assert sum(len(c) for c in received) == 0  # before: 3208 bytes of log records


def test_output_subdir_outside_is_refused_and_nothing_written_there(tmp_path):
    outside = tmp_path / "abs"
    team = _team(tmp_path, "evil", f"hydra:\n  output_subdir: {outside}\n")
    line = error_line(_run(tmp_path, team))
    assert f"hydra.output_subdir='{outside}'" in line and "inside the job's output folder" in line
    assert not outside.exists()


def test_a_sweep_subdir_that_leaves_the_sweep_folder_is_refused(tmp_path):
    team = _team(tmp_path, "evil", "hydra:\n  sweep:\n    subdir: ../escaped_${hydra.job.num}\n")
    sweep = tmp_path / "sweeps" / "s"
    proc = run_cli("-m", f"hydra.searchpath=[file://{team}]", "+preset=evil", f"image={DEMO_IMAGE}",
                   "backends=[local]", "layers=decoder,backbone", f"hydra.sweep.dir={sweep}")
    line = error_line(proc)
    assert "hydra.sweep.subdir='../escaped_0'" in line and "not inside the sweep folder" in line
    assert not list((tmp_path / "sweeps").glob("escaped_*"))


@pytest.fixture
def installed():
    data_only.install()
    confined.install()
    yield
    confined.uninstall()
    data_only.uninstall()


def _compose(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("body, key, says", [
    (_handler("q", "        class: logging.handlers.QueueHandler\n"), "handlers.q.class", "may be only"),
    (_handler("m", "        class: logging.handlers.SMTPHandler\n"), "handlers.m.class", "mail"),
    (_handler("h", "        class: logging.handlers.HTTPHandler\n"), "handlers.h.class", "HTTP"),
    (_handler("s", "        class: logging.handlers.SysLogHandler\n"), "handlers.s.class", "syslog"),
    (_handler("f", "        class: logging.FileHandler\n        filename: cfg://x.y\n"), "handlers.f.filename",
     "cfg://"),
    (_handler("f", "        class: logging.FileHandler\n        '.': {baseFilename: /etc/x}\n"), "handlers.f..",
     "takes only the keys"),
    (_handler("t", "        class: logging.StreamHandler\n        target: file\n"), "handlers.t.target",
     "takes only the keys"),
    ("hydra:\n  hydra_logging:\n    handlers:\n      f:\n        class: logging.FileHandler\n"
     "        filename: /tmp/x.log\n", "hydra.hydra_logging.handlers.f.filename", "before the job has an output"),
    ("hydra:\n  output_subdir: ../up\n", "hydra.output_subdir", "inside the job's output folder"),
    ("hydra:\n  output_subdir: ${oc.env:HOME}\n", "hydra.output_subdir", "written out"),
    ("hydra:\n  job:\n    env_set:\n      WANDB_DIR: /tmp/elsewhere\n", "hydra.job.env_set.WANDB_DIR",
     "set it in your shell"),
    ("hydra:\n  job:\n    env_set:\n      HTTPS_PROXY: http://127.0.0.1:1\n", "hydra.job.env_set.HTTPS_PROXY",
     "set it in your shell"),
])
def test_what_a_preset_may_not_do_is_refused_naming_key_and_file(tmp_path, installed, body, key, says):
    team = _team(tmp_path, "bad", body)
    with pytest.raises(ConfigError) as err:
        _compose(f"hydra.searchpath=[file://{team}]", "+preset=bad")
    assert key in str(err.value) and says in str(err.value)
    assert str(team / "preset" / "bad.yaml") in str(err.value)


def test_hydras_own_logging_configs_pass(installed):
    for job_logging in ("default", "stdout", "none", "disabled"):
        for hydra_logging in ("default", "none", "disabled"):
            _compose(f"hydra/job_logging={job_logging}", f"hydra/hydra_logging={hydra_logging}")
    # Hydra's debug logging writes hydra-<job>.log into the working directory, outside the job's folder
    with pytest.raises(ConfigError, match="hydra.hydra_logging.handlers.file"):
        _compose("hydra/hydra_logging=hydra_debug")


def test_inside():
    assert confined.inside("/a/b/c", "/a/b") and confined.inside("/a/b", "/a/b")
    assert not confined.inside("/a/bc", "/a/b") and not confined.inside("/a/b/../c", "/a/b")
    with pytest.raises(ConfigError):
        confined.check_composed(_plain_sweep("/s", "../x"))
    confined.check_composed(_plain_sweep("/s", "${hydra.job.num}"))


def _plain_sweep(sweep_dir: str, subdir: str):
    from omegaconf import OmegaConf

    return OmegaConf.create({"hydra": {"sweep": {"dir": sweep_dir, "subdir": subdir},
                                       "job": {"num": "???", "id": "???"}}})


def test_a_backend_folder_outside_is_refused_before_anything_is_written(tmp_path):
    outside = tmp_path / "pictures_elsewhere"
    team = _team(tmp_path, "evil", f"backends:\n  local:\n    kwargs:\n      save_dir: {outside}\n")
    line = error_line(_run(tmp_path, team))
    assert f"backends.local.kwargs.save_dir='{outside}' is outside the job's output folder" in line
    assert not outside.exists()
    assert not (tmp_path / "out" / "featvis").exists()


def test_a_relative_backend_folder_is_inside_the_job_results(tmp_path):
    team = _team(tmp_path, "evil", "backends:\n  local:\n    kwargs:\n      save_dir: pictures\n")
    proc = _run(tmp_path, team)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "featvis" / "pictures" / "scene_000" / "prediction.png").is_file()
    assert not (Path.cwd() / "pictures").exists()


def test_mmengine_backends_paths_stay_inside(tmp_path):
    from featvis.backends.base import RunInfo
    from featvis.backends.visualizer import build_backend

    info = RunInfo(name="x", job_type="default", group=None)
    with pytest.raises(ConfigError, match=r"backends.vis.kwargs.img_save_dir='/etc/x' is outside"):
        build_backend("vis", {"type": "LocalVisBackend", "kwargs": {"img_save_dir": "/etc/x"}}, tmp_path, info)
    with pytest.raises(ConfigError, match=r"backends.wb.kwargs.init_kwargs.dir='../up' is outside"):
        build_backend("wb", {"type": "WandbVisBackend", "kwargs": {"init_kwargs": {"dir": "../up"}}}, tmp_path, info)
    backend = build_backend("tb", {"type": "TensorboardVisBackend", "kwargs": {"save_dir": "events"}}, tmp_path, info)
    assert Path(backend._save_dir) == tmp_path / "events"
