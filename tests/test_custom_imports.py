"""An import that fails inside an mmseg config's `custom_imports` is named, with its cause and the fix.

MMEngine's own message is "Failed to import custom modules from {...}, the current
sys.path is:" followed by one line per sys.path entry: the cause is cut off in one line.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from featvis.data.paths import ASSETS
from featvis.errors import ConfigError
from featvis.model.load import read_config
from tests.helpers import DEMO_IMAGE, error_line, run_cli


def _config(tmp_path: Path, imports: list) -> Path:
    """The demo config plus `custom_imports` (as OpenMMLab projects add theirs)."""
    path = tmp_path / "with_imports.py"
    base = ASSETS / "configs" / "demo_pspnet.py"
    path.write_text(f"_base_ = [{str(base)!r}]\ncustom_imports = dict(imports={imports!r}, "
                    "allow_failed_imports=False)\n")
    return path


def test_a_missing_package_is_named_with_how_to_install_it(tmp_path):
    path = _config(tmp_path, ["featvis_no_such_pkg.models"])
    out = tmp_path / "out"
    proc = run_cli(f"model.config={path}", "model.checkpoint=null", f"image={DEMO_IMAGE}", "backends=[local]",
                   f"hydra.run.dir={out}")
    line = error_line(proc)
    assert "custom_imports" in line and "'featvis_no_such_pkg.models'" in line
    assert "No module named 'featvis_no_such_pkg'" in line and "pip install featvis_no_such_pkg" in line
    assert "sys.path" not in line and "unexpected" not in line
    assert not (out / "featvis").exists()


def test_a_module_whose_own_import_fails_names_both(tmp_path, monkeypatch):
    (tmp_path / "featvis_team_ext.py").write_text("import featvis_missing_dependency  # noqa\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _config(tmp_path, ["featvis_team_ext"])
    with pytest.raises(ConfigError) as err:
        read_config(str(path), path)
    message = str(err.value)
    assert "\n" not in message and "cannot import 'featvis_team_ext'" in message
    assert "No module named 'featvis_missing_dependency'" in message
    assert "pip install featvis_missing_dependency" in message


def test_a_module_that_fails_otherwise_is_named_with_its_error(tmp_path, monkeypatch):
    (tmp_path / "featvis_broken_ext.py").write_text("from os import no_such_name  # noqa\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _config(tmp_path, ["featvis_broken_ext"])
    with pytest.raises(ConfigError) as err:
        read_config(str(path), path)
    message = str(err.value)
    assert "cannot import 'featvis_broken_ext'" in message and "ImportError: cannot import name 'no_such_name'" \
        in message and "remove it from custom_imports" in message
