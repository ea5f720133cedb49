"""Walk mmseg's model zoo: one config per segmentation family, drawn by featvis with random weights.

    .venv/bin/python scripts/zoo_check.py                          # every family (slow: tens of minutes on CPU)
    .venv/bin/python scripts/zoo_check.py --families fcn,segformer --out zoo.md
    .venv/bin/python scripts/zoo_check.py --families setr/setr_vit-l_mla_8xb1-160k_ade20k-512x512.py
    .venv/bin/python scripts/zoo_check.py --families fcn '+model.cfg_options={model.test_cfg.mode: whole}'

For each config folder shipped in the mmseg wheel (`mmseg/.mim/configs/<family>/`) it picks
one config, deterministically: the first entry of the folder's metafile.yaml `Models`
(mmseg lists a family's base variant first: r50/r18, mit-b0, tiny/small), or, where the
folder has no metafile entry, its first config file by name. `--families fcn/<file>.py`
picks another. Then it runs featvis in this process (Hydra's compose API and
featvis.pipeline.job.run, as `python run.py` does) with

    model.config=mmseg::<family>/<file> model.checkpoint=null image=<the photo, 512x512>
    gt_mask=null backends=[local] wandb.mode=disabled model.scale=[S,S] layers=<preset>

for the presets `backbone`, `neck` (where the config has a neck) and `decoder`, plus any
Hydra overrides given after the options (for example model.cfg_options). It prints one
markdown row per job: family, config, preset, the feature maps drawn for the image (its
panels less input, ground_truth and prediction), wall seconds (the first preset of a
family includes building the model; the others reuse it through featvis.model.cache) and
the job's error in one line (featvis.cli.one_line). A failing family never stops the walk.

Not walked: vpd and dsdl (below), and the families of an OpenMMLab extra that does not
import here (mask2former/maskformer: mmdet; convnext/poolformer: mmpretrain, see
featvis.model.extras): their rows say which extra to install. The last line counts the
families ok (every job drew at least one map), failed and skipped.

The image is featvis's sample photo cut square (512x512), so a keep-ratio resize to [S,S]
feeds the model exactly S x S, a multiple of 32 as BiSeNet/PIDNet/UNet-style models need.
S is --size (default 512), raised to the config's crop size where it uses slide inference
(fixed-size transformers such as BEiT need whole windows); a job that fails with featvis's
"too small for this model" line is run once more at twice the size, and the row says so.

--rows FILE keeps each finished family's rows in FILE (JSON lines) and skips the families
already there, so an interrupted walk resumes where it stopped.

Options: --families a,b (a subset; default all), --size S (default 512; --native-scale
keeps each config's own test resize), --timeout S (seconds per family;
SIGALRM, so the rest of that family's rows say "timed out"), --out FILE (also write the
table there), --keep DIR (keep the pictures: DIR/<family>/<preset>/featvis/local/...),
--list-maps (print the maps each job drew, under the table), --by-family (also one row per
family with the maps of each preset: the README's table), --verbose (featvis's log).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import signal
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import cv2
import yaml
from hydra import compose, initialize_config_dir

from featvis.cli import one_line, quiet_library_warnings
from featvis.config import data_only
from featvis.config.job import JobInfo
from featvis.config.schema import register_configs, validate
from featvis.data.images import InputError
from featvis.data.paths import mmseg_configs_root, resolve_asset
from featvis.errors import ConfigError
from featvis.model import cache as model_cache
from featvis.model import extras
from featvis.model.load import read_config
from featvis.pipeline import job as pipeline

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
IMAGE = "featvis::sample/grace_hopper.jpg"  # a real photo, 512x600
NOT_WALKED = {
    "vpd": "skipped: not walked (VPD needs Stable Diffusion's ldm package and weights)",
    "dsdl": "skipped: not walked (dsdl holds dataset-format configs, no model family of its own)",
}
PRESETS = ("backbone", "neck", "decoder")
NOT_MAPS = {"input", "ground_truth", "prediction"}  # the panels of an image that are no feature map


@dataclass
class Row:
    family: str
    config: str = "-"
    preset: str = "-"
    maps: Optional[int] = None
    seconds: Optional[float] = None
    error: str = ""
    names: List[str] = field(default_factory=list)  # the maps drawn (--list-maps)
    fed: str = "-"  # the input size the job ran at

    @property
    def ok(self) -> bool:
        return not self.error and bool(self.maps)

    def cells(self) -> List[str]:
        maps = "-" if self.maps is None else str(self.maps)
        seconds = "-" if self.seconds is None else f"{self.seconds:.1f}"
        return [self.family, f"`{self.config}`" if self.config != "-" else "-", self.preset, self.fed, maps, seconds,
                self.error.replace("|", "\\|")]


class FamilyTimeout(BaseException):
    """--timeout ran out for a family (a BaseException: featvis's `except Exception` must not turn it into a row)."""


@contextmanager
def deadline(seconds: Optional[float]) -> Iterator[None]:
    """Raise FamilyTimeout in this (main) thread after `seconds`; no limit for None or 0."""
    if not seconds:
        yield
        return

    def fire(signum, frame):
        raise FamilyTimeout(f"timed out after {seconds:g} s (--timeout)")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def families(root: Path) -> List[str]:
    """Every config folder of the mmseg wheel, by name."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def choose_config(root: Path, family: str) -> Tuple[str, str]:
    """(`<family>/<file>.py`, the rule that picked it): the first entry of metafile.yaml's Models whose
    config is shipped, else the folder's first config file by name."""
    metafile = root / family / "metafile.yaml"
    if metafile.is_file():
        models = (yaml.safe_load(metafile.read_text()) or {}).get("Models") or []
        for model in models:
            config = str(model.get("Config", "")) if isinstance(model, dict) else ""
            rel = config[len("configs/"):] if config.startswith("configs/") else config
            if rel and (root / rel).is_file():
                return rel, "first in metafile.yaml"
    files = sorted((root / family).glob("*.py"))
    if not files:
        raise ConfigError(f"no config folder {family!r} in mmseg's configs ({root}): --families takes folder names "
                          "such as fcn,segformer")
    return f"{family}/{files[0].name}", "first file by name"


def has_neck(spec: str, path: Path) -> bool:
    """Whether the config's model has a neck (what `with_neck` of the built model says)."""
    model = read_config(spec, path).get("model") or {}
    return bool(model.get("neck"))


def square_photo(folder: Path, side: int = 512) -> Path:
    """The sample photo, its centre cut square and resized to side x side, written into `folder`."""
    photo = cv2.imread(resolve_asset(IMAGE))
    h, w = photo.shape[:2]
    edge = min(h, w)
    top, left = (h - edge) // 2, (w - edge) // 2
    path = folder / "photo.png"
    cv2.imwrite(str(path), cv2.resize(photo[top:top + edge, left:left + edge], (side, side)))
    return path


def fed_size(spec: str, path: Path, size: int) -> int:
    """`size`, or the crop size of a config that uses slide inference, if larger."""
    test_cfg = (read_config(spec, path).get("model") or {}).get("test_cfg") or {}
    crop = test_cfg.get("crop_size") if test_cfg.get("mode") == "slide" else None
    return max(size, *crop) if crop else size


def run_job(spec: str, preset: str, overrides: Sequence[str], out: Path, image: Path) -> List[str]:
    """Run featvis on one preset; the feature maps drawn for the first image."""
    job = [f"model.config={spec}", "model.checkpoint=null", f"image={image}", "gt_mask=null",
           "backends=[local]", "wandb.mode=disabled", f"layers={preset}", *overrides]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("config", overrides=job)
    result = pipeline.run(validate(cfg), JobInfo(output_dir=out, overrides=job))
    if not result.images:
        return []
    return [name for name in result.panels.get(result.images[0], []) if name not in NOT_MAPS]


def check_family(root: Path, request: str, overrides: Sequence[str], work: Path, timeout: Optional[float],
                 say, size: Optional[int] = 512) -> List[Row]:
    """The rows of one family: a skip, or one per preset."""
    family, _, file = request.partition("/")
    if family in NOT_WALKED and not file:
        return [Row(family, error=NOT_WALKED[family])]
    extra = extras.for_family(family)
    why = extras.missing(extra) if extra else None
    if why:
        say(f"{family}: {why}")
        return [Row(family, error=f"skipped: needs the {extra.name} extra ({extra.install})")]
    try:
        rel, rule = (request, "given") if file else choose_config(root, family)
        spec = f"mmseg::{rel}"
        presets = [p for p in PRESETS if p != "neck" or has_neck(spec, root / rel)]
        side = fed_size(spec, root / rel, size) if size else None
    except Exception as err:
        return [Row(family, error=one_line(err))]
    say(f"{family}: {rel} ({rule}); presets {', '.join(presets)}; input {f'{side}x{side}' if side else 'native'}")
    image = square_photo(work) if size else Path(resolve_asset(IMAGE))
    rows: List[Row] = []
    with deadline(timeout):
        try:
            for preset in presets:
                row = Row(family, Path(rel).name, preset)
                rows.append(row)
                start = time.perf_counter()
                try:
                    row.names, row.fed = _run_sized(spec, preset, overrides, work / family / preset, image, side)
                    row.maps = len(row.names)
                    if not row.names:
                        row.error = "no feature map drawn"
                except Exception as err:
                    row.error = one_line(err)
                finally:
                    row.seconds = time.perf_counter() - start
                say(f"  {preset}: {row.maps if row.maps is not None else '-'} maps, {row.seconds:.1f} s"
                    + (f": {row.error}" if row.error else ""))
        except FamilyTimeout as timeout_:
            if rows[-1].maps is None and not rows[-1].error:  # it struck in this job, not between two
                rows[-1].error = str(timeout_)
            rows += [Row(family, Path(rel).name, p, error=str(timeout_)) for p in presets[len(rows):]]
        finally:
            model_cache.clear()  # one family's model at a time in memory
            gc.collect()
    return rows


def _run_sized(spec: str, preset: str, overrides: Sequence[str], out: Path, image: Path,
               side: Optional[int]) -> Tuple[List[str], str]:
    """run_job at side x side (once more at twice the side when featvis says the input is too small)."""
    if not side:
        return run_job(spec, preset, overrides, out, image), "native"
    for attempt in (side, 2 * side):
        try:
            return run_job(spec, preset, [f"model.scale=[{attempt},{attempt}]", *overrides],
                           out / str(attempt), image), f"{attempt}x{attempt}"
        except InputError as err:
            if attempt != side or "too small" not in str(err):
                raise
    raise AssertionError("unreachable")


def table(rows: Sequence[Row], scale: str) -> str:
    head = ["family", "config", "preset", "input", "maps", "seconds", "error"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    lines.append("")
    lines.append(f"Random weights, {IMAGE} cut square, at {scale}; seconds of a family's first preset include "
                 "building the model.")
    return "\n".join(lines)


def family_table(rows: Sequence[Row]) -> str:
    """One row per family: the maps each preset drew (`-`: no such preset), the input, any error."""
    head = ["family", "config", "input", *PRESETS, "classifier in + logits", "error"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    by_family: dict = {}
    for row in rows:
        by_family.setdefault(row.family, []).append(row)
    for family, group in by_family.items():
        maps = {row.preset: ("-" if row.maps is None else str(row.maps)) for row in group}
        errors = sorted({row.error for row in group if row.error})
        config = group[0].config
        decoder = next((row.names for row in group if row.preset == "decoder"), [])
        logits = any(n.split("[")[0].endswith("conv_seg") for n in decoder)
        classifier = "yes" if logits else ("no conv_seg" if decoder else "-")
        cells = [family, f"`{config}`" if config != "-" else "-", group[0].fed,
                 *(maps.get(p, "-") for p in PRESETS), classifier, "; ".join(errors).replace("|", "\\|")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(rows: Sequence[Row]) -> str:
    by_family = {}
    for row in rows:
        by_family.setdefault(row.family, []).append(row)
    skipped = [f for f, rs in by_family.items() if rs[0].error.startswith("skipped:")]
    ok = [f for f, rs in by_family.items() if f not in skipped and all(r.ok for r in rs)]
    failed = [f for f in by_family if f not in skipped and f not in ok]
    text = f"families: {len(ok)} ok, {len(failed)} failed, {len(skipped)} skipped"
    return text + (f" (failed: {', '.join(failed)})" if failed else "")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides added to every job")
    parser.add_argument("--families", help="comma-separated config folders (or <folder>/<file>.py); default all")
    parser.add_argument("--size", type=int, default=512, help="input side in pixels (default 512)")
    parser.add_argument("--native-scale", action="store_true", help="keep each config's own test scale")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per family (default: none)")
    parser.add_argument("--out", type=Path, help="also write the markdown table to this file")
    parser.add_argument("--keep", type=Path, help="keep the jobs' outputs under this folder")
    parser.add_argument("--list-maps", action="store_true", help="print the maps each job drew")
    parser.add_argument("--by-family", action="store_true",
                        help="also print one row per family: the maps of each preset (the README's table)")
    parser.add_argument("--rows", type=Path, help="a JSON-lines file of finished families' rows: each family is "
                        "appended when done, and families already in it are not run again (resume a long walk)")
    parser.add_argument("--verbose", action="store_true", help="featvis's log on stderr")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)
    quiet_library_warnings()
    register_configs()
    data_only.install()  # as featvis.cli.main: composed configs name no code
    root = mmseg_configs_root()
    wanted = [f.strip() for f in args.families.split(",") if f.strip()] if args.families else families(root)
    overrides = list(args.overrides)
    size = None if args.native_scale else args.size
    scale = "the configs' own test resize" if size is None else "the input size shown (model.scale)"

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    done: dict = {}  # --rows: family request -> its rows from an earlier walk
    if args.rows and args.rows.is_file():
        for line in args.rows.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                done[record["request"]] = [Row(**row) for row in record["rows"]]
    rows: List[Row] = []
    with tempfile.TemporaryDirectory(prefix="zoo_check-") as tmp:
        work = args.keep or Path(tmp)
        for request in wanted:
            if request in done:
                say(f"{request}: from {args.rows}")
                rows += done[request]
                continue
            found = check_family(root, request, overrides, work, args.timeout, say, size)
            rows += found
            if args.rows:
                with args.rows.open("a") as f:
                    f.write(json.dumps({"request": request, "rows": [asdict(r) for r in found]}) + "\n")
    text = table(rows, scale)
    print(text)
    print(summary(rows))
    if args.list_maps:
        for row in rows:
            if row.names:
                print(f"{row.family} {row.preset}: {', '.join(row.names)}")
    if args.by_family:
        print()
        print(family_table(rows))
    if args.out:
        args.out.write_text(text + "\n\n" + summary(rows) + "\n")
    return 0 if all(r.ok or r.error.startswith("skipped:") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
