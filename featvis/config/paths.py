"""Where named files live: `featvis::` assets shipped in this package, `mmseg::` configs
shipped inside the mmsegmentation wheel, and plain paths."""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path

from featvis.errors import ConfigError

ASSETS = Path(__file__).resolve().parents[1] / "assets"  # featvis/assets


def resolve_asset(spec: str) -> str:
    """`featvis::demo/images` -> the absolute path in featvis/assets; anything else unchanged."""
    if spec.startswith("featvis::"):
        return str(ASSETS / spec[len("featvis::"):])
    return spec


def mmseg_configs_root() -> Path:
    """The configs folder inside the installed mmseg wheel (`mmseg/.mim/configs`)."""
    spec = importlib.util.find_spec("mmseg")
    if spec is None or not spec.origin:
        raise ConfigError("mmsegmentation is not installed: run `make setup`")
    return Path(spec.origin).parent / ".mim" / "configs"


def resolve_model_config(spec: str) -> Path:
    """Turn model.config (a path, `mmseg::algo/file.py` or `featvis::file`) into an existing file."""
    if spec.startswith("mmseg::"):
        root = mmseg_configs_root()
        path = root / spec[len("mmseg::"):]
        if not path.is_file():
            names = [str(p.relative_to(root)) for p in root.glob("*/*.py")]
            close = difflib.get_close_matches(spec[len("mmseg::"):], names, n=3, cutoff=0.5)
            hint = f"; closest: {', '.join('mmseg::' + c for c in close)}" if close else ""
            raise ConfigError(f"model.config={spec!r} is not a config shipped with mmseg{hint}")
        return path
    path = Path(resolve_asset(spec)).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.config={spec!r}: no such file; pass a config path or an "
                          "mmseg:: name such as mmseg::ann/ann_r50-d8_4xb2-40k_cityscapes-512x1024.py")
    return path
