"""Where named files live: `featvis::` assets shipped in this package, `mmseg::` configs
shipped inside the mmsegmentation wheel, and plain paths."""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path
from typing import Optional

import yaml

from featvis.errors import ConfigError
from featvis.io import not_a_file

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
    what = not_a_file(path)
    if what is not None:
        what = "no such file" if what == "does not exist" else what
        raise ConfigError(f"model.config={spec!r}: {what}; pass an mmseg config file or an mmseg:: name "
                          "such as mmseg::ann/ann_r50-d8_4xb2-40k_cityscapes-512x1024.py")
    return path


# What `auto` stands for (featvis.config.schema): the demo's files apply to the demo model only.
AUTO = "auto"  # model.checkpoint, image, gt_mask: settled from model.config (checkpoint_for, the schema)
DEMO_CONFIG = "featvis::configs/demo_pspnet.py"
DEMO_CONFIGS = (DEMO_CONFIG, "featvis::configs/demo_pspnet_narrow.py")  # model=demo_narrow: half the channels
DEMO_IMAGES = "featvis::demo/images"
DEMO_MASKS = "featvis::demo/masks"
# A real photo for any other model, with no ground truth: Grace Hopper, a US Navy photo in
# the public domain, as shipped in matplotlib's sample data.
SAMPLE_IMAGE = "featvis::sample/grace_hopper.jpg"


def config_stem(spec: str) -> str:
    """`mmseg::ann/ann_r50-d8_4xb2-40k_cityscapes-512x1024.py` -> `ann_r50-d8_4xb2-40k_cityscapes-512x1024`."""
    return Path(spec.split("::", 1)[-1]).stem


def is_demo_config(spec: str) -> bool:
    """Whether model.config names one of featvis's shipped demo models, trained on the demo scenes (by any of
    its spellings)."""
    try:
        given = Path(resolve_asset(spec)).expanduser().resolve()
        return any(given == Path(resolve_asset(demo)).resolve() for demo in DEMO_CONFIGS)
    except OSError:
        return False


def checkpoint_for(config: str, checkpoint: Optional[str]) -> Optional[str]:
    """model.checkpoint with `auto` settled (the one rule: the shipped config's own); any other value as is."""
    return shipped_checkpoint(config) if checkpoint == AUTO else checkpoint


def shipped_checkpoint(spec: str) -> str:
    """The checkpoint of a shipped config (model.checkpoint=auto), or a ConfigError saying what to pass.

    `featvis::configs/<stem>.py`: `featvis::checkpoints/<stem>.pth`. `mmseg::<algo>/<file>.py`:
    the `Weights` URL that `<algo>/metafile.yaml` in the mmseg wheel gives for that config.
    """
    fix = ("pass model.checkpoint=<a file or URL>, for example a checkpoint of your training run, "
           "or model.checkpoint=null for random weights")
    if spec.startswith("featvis::"):
        stem = config_stem(spec)
        if (ASSETS / "checkpoints" / f"{stem}.pth").is_file():
            return f"featvis::checkpoints/{stem}.pth"
        raise ConfigError(f"model.checkpoint=auto: featvis ships no checkpoint for {spec}: {fix}")
    if spec.startswith("mmseg::"):
        rel = spec[len("mmseg::"):]
        url = _metafile_weights(mmseg_configs_root(), rel)
        if url is None:
            raise ConfigError(f"model.checkpoint=auto: mmseg's metafile names no checkpoint for {spec}: {fix}")
        return url
    raise ConfigError(f"model.checkpoint=auto: model.config={spec!r} is a config of your own, so featvis "
                      f"cannot know its weights: {fix}")


def _metafile_weights(root: Path, rel: str) -> Optional[str]:
    """The `Weights` of the metafile.yaml entry whose `Config` is `configs/<rel>`; None when there is none."""
    metafile = root / Path(rel).parts[0] / "metafile.yaml"
    try:
        models = (yaml.safe_load(metafile.read_text()) or {}).get("Models") or []
    except (OSError, yaml.YAMLError):
        return None
    want = f"configs/{Path(rel).as_posix()}"
    for model in models:
        if isinstance(model, dict) and model.get("Config") == want and model.get("Weights"):
            return str(model["Weights"])
    return None
