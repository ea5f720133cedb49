"""Sweep summaries: one result file per multirun job, aggregated into contact sheets, an index and a W&B run.

Every multirun job writes `<job dir>/featvis_result.json` (featvis.cli, ok or failed).
`summarize(sweep_dir)` reads them all and writes, in `<sweep dir>/summary/`:

- `contact_<image stem>.png`: one sheet per image; one row per job that drew it
  (a label tile with the job's name, then input, prediction and the job's feature maps,
  each captioned with its panel name), drawn with featvis.rendering.grid;
- `index.html`: every contact sheet, and every job with its status (failed jobs with
  their error line);
- `summary.json`: the jobs, the sheets and their layout.

`SweepSummary` is a Hydra callback (conf/config.yaml, `hydra.callbacks`) that
re-summarizes after every job, so the summary is complete when the last job ends even
when some failed (Hydra skips `on_multirun_end` then); once every job of the sweep has
its result file, it also writes one W&B run (`job_type=summary`, name `summary`) in the
sweep's group, comparing the jobs image by image. By hand: `python -m featvis.summary <sweep dir>`.
"""

from __future__ import annotations

import html
import json
import logging
import os
import sys
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

log = logging.getLogger(__name__)

RESULT_FILE = "featvis_result.json"
SUMMARY = "summary"
TILE_H = 192  # height of every picture in a contact sheet
BAND = 18  # caption band under each picture
LABEL_W = 220  # the job-name tile at the start of each row
GAP = 4
_WANDB_MARK = ".wandb-summary"  # created once, when the W&B summary run is started


# --------------------------------------------------------------------------- job result files


def write_job_result(cfg: Any, info: Any, result: Any, error: Optional[BaseException],
                     error_line: Optional[str]) -> Path:
    """Write `<job dir>/featvis_result.json` atomically (tmp file + rename)."""
    from featvis.errors import SkippedImagesError

    if error is None:
        status = "ok"
    elif isinstance(error, SkippedImagesError):
        status = "skipped-images"
    else:
        status = "failed"
    out = Path(info.output_dir)
    if result is not None:
        images, panels = list(result.images), {k: list(v) for k, v in result.panels.items()}
    else:  # failed, or finished with images skipped: what the local backend left, if anything
        images, panels = _scan_panels(out / "featvis" / "local")
    data = {
        "job_dir": str(out),
        "num": _safe(lambda: int(_hydra().job.num)),
        "overrides": list(info.overrides),
        "name": info.name,
        "job_type": info.job_type,
        "status": status,
        "error": error_line,
        "exit_code": 0 if error is None else getattr(error, "exit_code", 1),
        "images": images,
        "panels": panels,
        "forwards": getattr(result, "forwards", None),  # images the model ran on in this job
        "reused": getattr(result, "reused", None),  # images taken from an earlier job's forward (share_forward)
        "model": info.choices.get("model"),
        "checkpoint": _safe(lambda: _basename(cfg.model.checkpoint)),
        "layers": info.choices.get("layers"),
        "reduction": _safe(lambda: str(cfg.reduction.name)) or info.choices.get("reduction"),
        "backends": _safe(lambda: sorted(cfg.backends.keys())) or [],
        "wandb": _safe(lambda: {"project": cfg.wandb.project, "entity": cfg.wandb.entity,
                                "mode": cfg.wandb.mode, "group": cfg.wandb.group or info.group}),
    }
    path = out / RESULT_FILE
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, json.dumps(data, indent=2).encode())
    return path


def _hydra() -> Any:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get()


def _safe(fn: Any) -> Any:
    try:
        return fn()
    except Exception:
        return None


def _basename(value: Any) -> Optional[str]:
    return None if value is None else os.path.basename(str(value).rstrip("/")) or str(value)


def _scan_panels(local: Path) -> tuple:
    images: List[str] = []
    panels: Dict[str, List[str]] = {}
    if local.is_dir():
        for folder in sorted(p for p in local.iterdir() if p.is_dir()):
            names = sorted(str(p.relative_to(folder))[:-4] for p in folder.rglob("*.png"))
            if names:
                images.append(folder.name)
                panels[folder.name] = names
    return images, panels


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_results(sweep_dir: Path) -> List[dict]:
    """Every job's result file under the sweep dir, in job order; `dir` is the job dir."""
    results = []
    for path in Path(sweep_dir).glob(f"**/{RESULT_FILE}"):
        if SUMMARY in path.relative_to(sweep_dir).parts[:1]:
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):  # being written by a job that has not finished: next time
            continue
        data["dir"] = path.parent
        results.append(data)

    def order(r: dict) -> tuple:
        num = r.get("num")
        return (0, num, "") if isinstance(num, int) else (1, 0, str(r["dir"]))

    return sorted(results, key=order)


# --------------------------------------------------------------------------- contact sheets


def _read_rgb(path: Path) -> Optional[np.ndarray]:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _fit(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Scale to fit (h, w), keeping the aspect ratio, centred on white."""
    import cv2

    scale = min(h / img.shape[0], w / img.shape[1])
    nh, nw = max(1, round(img.shape[0] * scale)), max(1, round(img.shape[1] * scale))
    out = np.full((h, w, 3), 255, np.uint8)
    y, x = (h - nh) // 2, (w - nw) // 2
    out[y:y + nh, x:x + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    return out


def _text(tile: np.ndarray, lines: Sequence[str], top: int, scale: float = 0.4) -> None:
    import cv2

    for i, line in enumerate(lines):
        cv2.putText(tile, line, (4, top + 13 + i * 15), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1,
                    cv2.LINE_AA)


def _fit_text(text: str, width: int, scale: float = 0.4) -> str:
    """Cut `text` from the left (keeping its end, the distinctive part of a layer name) to fit."""
    import cv2

    text = text.encode("ascii", "replace").decode()
    while len(text) > 3 and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width - 8:
        text = ".." + text[3:]
    return text


def _wrap(text: str, width: int, scale: float = 0.4) -> List[str]:
    import cv2

    lines: List[str] = []
    for part in text.encode("ascii", "replace").decode().split(","):
        line = ""
        for ch in part:
            if cv2.getTextSize(line + ch, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width - 8:
                lines.append(line)
                line = ""
            line += ch
        lines.append(line)
    return lines


def _captioned(img: np.ndarray, caption: str, w: int) -> np.ndarray:
    tile = np.full((TILE_H + BAND, w, 3), 255, np.uint8)
    tile[:TILE_H] = _fit(img, TILE_H, w)
    _text(tile, [_fit_text(caption, w)], TILE_H - 1)
    return tile


# Captioned tiles of panel files, kept between the summaries of one sweep: under the basic
# launcher the summary is rewritten after every job, and re-reading every earlier job's
# full-size PNGs each time would cost O(jobs^2). Keyed by the file's stat, so a re-run
# job's new pictures are read again; at most TILE_CACHE_BYTES are kept.
TILE_CACHE_BYTES = 256 * 2 ** 20
_TILES: "OrderedDict[tuple, np.ndarray]" = OrderedDict()


def _panel_tile(path: Path, caption: str, w: int) -> np.ndarray:
    try:
        stat = path.stat()
        key: Optional[tuple] = (str(path), stat.st_mtime_ns, stat.st_size, caption, w)
    except OSError:
        key = None
    if key in _TILES:
        _TILES.move_to_end(key)
        return _TILES[key]
    img = _read_rgb(path) if key is not None else None
    tile = _captioned(img if img is not None else np.full((TILE_H, w, 3), 200, np.uint8), caption, w)
    if key is not None:
        _TILES[key] = tile
        while sum(t.nbytes for t in _TILES.values()) > TILE_CACHE_BYTES:
            _TILES.popitem(last=False)
    return tile


def _row_panels(job: dict, stem: str) -> List[str]:
    """A job's panels for one image, in sheet order: input, prediction, then its feature maps."""
    panels = job.get("panels", {}).get(stem, [])
    first = [p for p in ("input", "prediction") if p in panels]
    return first + [p for p in panels if p.startswith("featmap/")]


def contact_sheet(jobs: List[dict], stem: str) -> tuple:
    """(sheet RGB, layout) for one image: a row per job, label tile + input + prediction + feature maps."""
    from featvis.rendering import grid

    rows = [j for j in jobs if _row_panels(j, stem)]
    first = _read_rgb(Path(rows[0]["dir"]) / "featvis" / "local" / stem / "input.png")
    aspect = first.shape[1] / first.shape[0] if first is not None else 4 / 3
    w = max(LABEL_W // 2, round(TILE_H * aspect))
    cols = max(len(_row_panels(j, stem)) for j in rows)
    tiles: List[np.ndarray] = []
    strips: Dict[str, np.ndarray] = {}
    for job in rows:
        label = np.full((TILE_H + BAND, w, 3), 255, np.uint8)
        lines = _wrap(job["name"], w)
        if job["status"] != "ok":
            lines.append(f"[{job['status']}]")
        _text(label, lines[: (TILE_H + BAND) // 15], 0)
        row = []
        for panel in _row_panels(job, stem):
            path = Path(job["dir"]) / "featvis" / "local" / stem / f"{panel}.png"
            row.append(_panel_tile(path, panel.split("/", 1)[-1], w))
        row += [np.full((TILE_H + BAND, w, 3), 255, np.uint8)] * (cols - len(row))
        strips[job["name"]] = grid(row, 1, cols, GAP)
        tiles += [label] + row
    sheet = grid(tiles, len(rows), cols + 1, GAP)
    layout = {"rows": len(rows), "cols": cols + 1, "tile": [TILE_H + BAND, w], "gap": GAP,
              "size": [int(sheet.shape[0]), int(sheet.shape[1])], "jobs": [j["name"] for j in rows]}
    return sheet, layout, strips


# --------------------------------------------------------------------------- the summary


def summarize(sweep_dir: Path, wandb_run: bool = False) -> Path:
    """Write `<sweep_dir>/summary/` from every job's result file; returns that folder."""
    sweep_dir = Path(sweep_dir)
    out = sweep_dir / SUMMARY
    out.mkdir(parents=True, exist_ok=True)
    jobs = load_results(sweep_dir)
    stems = _stems(jobs)
    sheets = {}
    wanted = wandb_run and _wandb_jobs(jobs) and not (out / _WANDB_MARK).exists()
    strips = _Strips(out) if wanted else None  # each job's row of each sheet, for the W&B table
    for stem in stems:
        if not any(_row_panels(j, stem) for j in jobs):
            continue
        sheet, layout, rows = contact_sheet(jobs, stem)
        name = f"contact_{stem}.png"
        _write_atomic(out / name, _png(sheet))
        sheets[stem] = dict(layout, file=name)
        if strips is not None:
            strips.add(stem, rows)
    listed = [{k: (str(Path(v).relative_to(sweep_dir)) if k == "dir" else v) for k, v in j.items()
               if k != "job_dir"} for j in jobs]
    counts: Dict[str, int] = {}
    for j in jobs:
        counts[j["status"]] = counts.get(j["status"], 0) + 1
    summary = {"sweep_dir": str(sweep_dir), "jobs": listed, "sheets": sheets, "counts": counts}
    _write_atomic(out / "summary.json", json.dumps(summary, indent=2).encode())
    _write_atomic(out / "index.html", _index_html(sweep_dir, listed, sheets).encode())
    if strips is not None:
        with strips:
            wandb_summary(sweep_dir, jobs, strips=strips.files)
    return out


def _png(rgb: np.ndarray) -> bytes:
    from featvis.backends.png import LazyPNG

    return LazyPNG(rgb).data()


class _Strips:
    """Each job's contact-sheet row per image, as PNG files in a temporary folder of the summary."""

    def __init__(self, out: Path) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=".strips-", dir=out))
        self.files: Dict[str, Dict[str, Path]] = {}  # stem -> job name -> file

    def add(self, stem: str, rows: Dict[str, np.ndarray]) -> None:
        for name, strip in rows.items():
            path = self.dir / f"{sum(map(len, self.files.values()))}.png"
            path.write_bytes(_png(strip))
            self.files.setdefault(stem, {})[name] = path

    def __enter__(self) -> "_Strips":
        return self

    def __exit__(self, *exc: Any) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)  # wandb copied the pictures into the run at finish


def _wandb_jobs(jobs: List[dict]) -> List[dict]:
    return [j for j in jobs if "wandb" in (j.get("backends") or []) and j.get("wandb")]


def _index_html(sweep_dir: Path, jobs: List[dict], sheets: Dict[str, dict]) -> str:
    e = html.escape
    rows = []
    for j in jobs:
        status = e(j["status"])
        err = f"<code>{e(j['error'])}</code>" if j.get("error") else ""
        rows.append(f'<tr class="{status}"><td>{e(str(j.get("num", "")))}</td>'
                    f'<td><a href="../{e(j["dir"])}/">{e(j["name"])}</a></td><td>{status}</td>'
                    f'<td>{len(j.get("images", []))}</td><td>{_forwards(j)}</td><td>{e(str(j.get("checkpoint")))}</td>'
                    f'<td>{e(str(j.get("layers")))}</td><td>{e(str(j.get("reduction")))}</td><td>{err}</td></tr>')
    links = "".join(f'<li><a href="{e(s["file"])}">{e(stem)}</a> ({s["rows"]} jobs)</li>'
                    for stem, s in sheets.items())
    imgs = "".join(f'<h2 id="{e(stem)}">{e(stem)}</h2><a href="{e(s["file"])}">'
                   f'<img src="{e(s["file"])}" style="max-width:100%"></a>' for stem, s in sheets.items())
    n_failed = sum(1 for j in jobs if j["status"] == "failed")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>featvis sweep {e(str(sweep_dir))}</title>
<style>body{{font-family:sans-serif}} td,th{{padding:2px 8px;text-align:left}}
tr.failed{{background:#fdd}} tr.skipped-images{{background:#ffd}}</style></head><body>
<h1>featvis sweep <code>{e(str(sweep_dir))}</code></h1>
<p>{len(jobs)} jobs, {n_failed} failed.</p>
<table><tr><th>#</th><th>job</th><th>status</th><th>images</th><th>model runs</th><th>checkpoint</th><th>layers</th>
<th>reduction</th><th>error</th></tr>
{chr(10).join(rows)}
</table>
<h2>Contact sheets</h2><p>One per image: a row per job, with input, prediction and the job's feature maps.</p>
<ul>{links}</ul>
{imgs}
</body></html>
"""


def _forwards(job: dict) -> str:
    """`3`, or `0 (3 reused)` for a job that took its maps from an earlier job's forward passes."""
    if job.get("forwards") is None:
        return ""
    return f'{job["forwards"]} ({job["reused"]} reused)' if job.get("reused") else str(job["forwards"])


# --------------------------------------------------------------------------- the W&B summary run


def wandb_summary(sweep_dir: Path, jobs: Optional[List[dict]] = None, once: bool = True,
                  strips: Optional[Dict[str, Dict[str, Path]]] = None) -> Optional[Path]:
    """One W&B run in the sweep's group comparing the jobs: a table, a row per image, a column per job.

    Each cell is that job's row of the image's contact sheet (input, prediction, feature maps):
    `strips` ({image stem: {job name: PNG file}}, as `summarize` writes them), else drawn here.
    Opened offline unless an API key is configured (wandb.mode of the jobs, resolved as
    featvis.backends.wandb does); its files go to `<sweep dir>/summary/wandb/`. With `once`,
    only the first caller in the sweep creates it.
    """
    sweep_dir = Path(sweep_dir)
    jobs = load_results(sweep_dir) if jobs is None else jobs
    with_wandb = _wandb_jobs(jobs)
    if not with_wandb:
        return None
    out = sweep_dir / SUMMARY
    out.mkdir(parents=True, exist_ok=True)
    if once:
        try:
            os.close(os.open(out / _WANDB_MARK, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return None
    if strips is None:
        with _Strips(out) as drawn:
            for stem in _stems(jobs):
                if any(_row_panels(j, stem) for j in jobs):
                    drawn.add(stem, contact_sheet(jobs, stem)[2])
            return wandb_summary(sweep_dir, jobs, once=False, strips=drawn.files)
    import wandb

    from featvis.backends.wandb import resolve_mode
    from featvis.job import JobInfo

    settings_ = with_wandb[0]["wandb"]
    group = settings_.get("group") or JobInfo(output_dir=sweep_dir, sweep_dir=sweep_dir).group
    save_dir = out / "wandb"
    save_dir.mkdir(exist_ok=True)
    mode = resolve_mode(settings_.get("mode") or "auto")
    settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, save_code=False, disable_git=True)
    run = wandb.init(dir=str(save_dir), project=settings_.get("project") or "featvis",
                     entity=settings_.get("entity"), group=group, job_type="summary", name="summary",
                     mode=mode, settings=settings, reinit="finish_previous",
                     config={"sweep_dir": str(sweep_dir), "jobs": [j["name"] for j in jobs]})
    try:
        names = [j["name"] for j in jobs if j["status"] != "failed"]
        table = wandb.Table(columns=["image"] + names)
        for stem, files in strips.items():
            cells = [wandb.Image(str(files[name]), caption=f"{name} | {stem}") if name in files else None
                     for name in names]
            table.add_data(stem, *cells)
        jobs_table = wandb.Table(columns=["job", "status", "error", "checkpoint", "layers", "reduction", "images"])
        for j in jobs:
            jobs_table.add_data(j["name"], j["status"], j.get("error") or "", j.get("checkpoint") or "",
                                j.get("layers") or "", j.get("reduction") or "", len(j.get("images", [])))
        run.log({"comparison": table, "jobs": jobs_table})
        run.finish()
    except BaseException:
        run.finish(exit_code=1)
        raise
    log.info("W&B summary run written under %s (%s)", save_dir, mode)
    return save_dir


def _stems(jobs: List[dict]) -> List[str]:
    stems: List[str] = []
    for job in jobs:
        stems += [s for s in job.get("images", []) if s not in stems]
    return stems


# --------------------------------------------------------------------------- the Hydra callback


def expected_jobs(sweep_dir: Path) -> Optional[int]:
    """How many jobs the basic sweeper makes of the sweep's overrides (multirun.yaml); None if unknown."""
    try:
        from omegaconf import OmegaConf

        from featvis.sweep_plan import sweep_overrides

        jobs = sweep_overrides(OmegaConf.load(Path(sweep_dir) / "multirun.yaml"))
        return None if jobs is None else len(jobs)
    except Exception:
        return None


from hydra.experimental.callback import Callback  # hydra-core 1.3 has it: a hard dependency


class SweepSummary(Callback):
    """Hydra callback: keep `<sweep dir>/summary/` up to date after every multirun job."""

    def __init__(self) -> None:
        self._complete: Optional[Path] = None  # a sweep whose final summary this process wrote

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        sweep_dir = self._sweep_dir(config)
        if sweep_dir is None:
            return  # a single run: nothing to summarize
        last = self._all_done(sweep_dir)
        if self._summarize(sweep_dir, last=last) and last:
            self._complete = sweep_dir  # the basic launcher: on_multirun_end has nothing left to do

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        try:
            sweep_dir = Path(config.hydra.sweep.dir)
            if sweep_dir != self._complete:  # parallel launchers end their jobs in other processes
                self._summarize(sweep_dir, last=True)
        except Exception as err:
            log.warning("featvis sweep summary failed: %s", err)

    @staticmethod
    def _sweep_dir(config: Any) -> Optional[Path]:
        try:
            from hydra.core.hydra_config import HydraConfig
            from hydra.types import RunMode

            hc = HydraConfig.get()
            return Path(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None
        except Exception:
            return None

    @staticmethod
    def _all_done(sweep_dir: Path) -> bool:
        total = expected_jobs(sweep_dir)
        return total is not None and len(load_results(sweep_dir)) >= total

    @staticmethod
    def _summarize(sweep_dir: Path, last: bool) -> bool:
        try:
            out = summarize(sweep_dir, wandb_run=last)
            log.info("sweep summary: %s", out / "index.html")
            return True
        except Exception as err:  # a summary must never fail a job
            log.warning("featvis sweep summary failed: %s", err)
            return False


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m featvis.summary",
                                     description="Summarize a featvis multirun sweep folder.")
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--wandb", action="store_true",
                        help="also write the W&B summary run (again, if one was written before)")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"featvis: error: {args.sweep_dir} is not a folder", file=sys.stderr)
        return 1
    out = summarize(args.sweep_dir)
    if args.wandb:
        wandb_summary(args.sweep_dir, once=False)
    n = len(load_results(args.sweep_dir))
    print(f"{n} job(s) summarized: {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
