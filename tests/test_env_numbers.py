"""featvis's environment variables: a value that is not a number >= 0 is one line, not a traceback."""

import pytest

from featvis.errors import ConfigError, env_number
from featvis.model import cache as model_cache
from featvis.sweep import shared_forward
from tests.helpers import DEMO_IMAGE, run_cli


@pytest.mark.parametrize("text", ["lots", "-1", "nan", "inf"])
def test_a_bad_number_is_a_config_error_naming_the_variable(monkeypatch, text):
    monkeypatch.setenv("FEATVIS_MODEL_CACHE", text)
    with pytest.raises(ConfigError, match=f"FEATVIS_MODEL_CACHE={text!r} is not a number >= 0"):
        model_cache.capacity()


def test_unset_and_set_values(monkeypatch):
    monkeypatch.delenv("FEATVIS_FORWARD_CACHE_MB", raising=False)
    assert shared_forward.capacity_bytes() == 1024 * 2 ** 20
    monkeypatch.setenv("FEATVIS_FORWARD_CACHE_MB", "0.5")
    assert shared_forward.capacity_bytes() == 2 ** 19
    assert env_number("FEATVIS_NO_SUCH_VARIABLE", 7) == 7


def test_cli_says_it_in_one_line(tmp_path):
    proc = run_cli(f"image={DEMO_IMAGE}", "backends=[local]", f"hydra.run.dir={tmp_path}", FEATVIS_MODEL_CACHE="two")
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["featvis: error: FEATVIS_MODEL_CACHE='two' is not a number >= 0: set it to one (default 2) "
                     "or unset it"], proc.stderr
    assert not (tmp_path / "featvis").exists()
