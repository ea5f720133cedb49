"""The checkpoint-comparison demo: fine-tune the demo model with MMEngine's Runner, sweep over its checkpoints.

    python scripts/compare_demo.py [--iters 40] [--every 20] [--work /tmp/featvis-compare-demo]
                                   [--out docs/compare_demo.png]

1. MMEngine's Runner fine-tunes the demo PSPNet (featvis/assets/configs/demo_pspnet.py) from
   the shipped checkpoint on freshly generated scenes (featvis.demo.scenes), saving a
   checkpoint every `--every` iterations in `<work>/train/` (iter_20.pth, iter_40.pth, ...);
2. one featvis multirun draws the shipped checkpoint and every saved one:
   `python run.py -m model.checkpoint=<shipped>,<iter_20>,... layers.names=[...]
   backends=[local] wandb.mode=disabled hydra.sweep.dir=<work>/sweep`, and its summary
   compares each with the shipped one (the first job, compare.baseline=null);
3. prints the ranking from summary.json, the sketch sizes and how long the summary takes,
   and writes `--out`: the CKA table above the first image's difference sheet.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
import torch
from mmengine.dataset import pseudo_collate
from mmengine.runner import Runner
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample
from torch.utils.data import DataLoader, Dataset

from featvis.data.paths import ASSETS
from featvis.demo.scenes import CLASSES, PALETTE, generate_scene, scene_rng
from featvis.demo.train import build_model
from featvis.render.draw import pad_below
from featvis.sweep.checkpoints import sketch_path
from featvis.sweep.results import load_results
from featvis.sweep.summary import summarize

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ASSETS / "checkpoints" / "demo_pspnet.pth"
LAYERS = ["backbone.stem", "backbone.layer1", "backbone.layer2", "backbone.layer3", "backbone.layer4",
          "decode_head.bottleneck", "decode_head.conv_seg"]
TRAIN_SIZE = 128
BATCH = 8
SEED = 0


class Scenes(Dataset):
    """Generated scenes as MMSeg samples (BGR CHW uint8 input, label map): an epoch of `n` fresh ones."""

    metainfo = {"classes": CLASSES, "palette": PALETTE}  # saved in each checkpoint's meta by the Runner

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Dict[str, object]:
        img, label = generate_scene(scene_rng(self.seed, i), TRAIN_SIZE, TRAIN_SIZE)
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=torch.from_numpy(label[None].astype(np.int64)))
        sample.set_metainfo({"img_shape": (TRAIN_SIZE, TRAIN_SIZE), "ori_shape": (TRAIN_SIZE, TRAIN_SIZE)})
        return {"inputs": torch.from_numpy(np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1))),
                "data_samples": sample}


def train(work: Path, iters: int, every: int) -> List[Path]:
    """Fine-tune from the shipped checkpoint with MMEngine's Runner; the saved checkpoints, in order."""
    torch.set_num_threads(2)
    loader = DataLoader(Scenes(BATCH * iters, seed=10_000), batch_size=BATCH, shuffle=False,
                        collate_fn=pseudo_collate)
    runner = Runner(
        model=build_model(), work_dir=str(work), train_dataloader=loader,
        train_cfg=dict(by_epoch=False, max_iters=iters, val_interval=iters + 1),
        optim_wrapper=dict(optimizer=dict(type="AdamW", lr=1e-3, weight_decay=1e-4)),
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=every),
                           logger=dict(type="LoggerHook", interval=10)),
        load_from=str(SHIPPED), randomness=dict(seed=SEED), default_scope="mmseg")
    runner.train()
    return sorted(work.glob("iter_*.pth"), key=lambda p: int(p.stem.split("_")[1]))


def sweep(checkpoints: List[Path], out: Path) -> subprocess.CompletedProcess:
    names = ",".join(LAYERS)
    args = [sys.executable, str(ROOT / "run.py"), "-m", "model.checkpoint=" + ",".join(map(str, checkpoints)),
            f"layers.names=[{names}]", "backends=[local]", "wandb.mode=disabled", f"hydra.sweep.dir={out}"]
    print("$", " ".join(args[1:]), flush=True)
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True)


def figure(summary_dir: Path, out: Path, width: int = 900) -> None:
    """The CKA table above the first image's difference sheet, at most `width` pixels wide."""
    summary = json.loads((summary_dir / "summary.json").read_text())
    parts = [cv2.imread(str(summary_dir / summary["checkpoint_cka"]))]
    first = next(iter(summary["diff_sheets"].values()))
    parts.append(cv2.imread(str(summary_dir / first["file"])))
    parts = [cv2.resize(p, None, fx=min(1.0, width / p.shape[1]), fy=min(1.0, width / p.shape[1]),
                        interpolation=cv2.INTER_AREA) for p in parts]
    w = max(p.shape[1] for p in parts)
    rows = [np.hstack([p, np.full((p.shape[0], w - p.shape[1], 3), 255, np.uint8)]) for p in parts]
    picture = np.vstack([pad_below(r, 8) for r in rows])
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), picture, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {out} ({picture.shape[1]}x{picture.shape[0]}, {out.stat().st_size / 1024:.0f} KiB)")


def print_finer(summary: dict, cols: List[str]) -> None:
    """The finer answers of the same sweep: both CKA estimators, per class, where the classes separate."""
    print("\nlinear CKA / unbiased CKA per layer:")
    both = {(e["b"], e["layer"]): e for e in summary["checkpoint_similarity"]}
    for layer in dict.fromkeys(e["layer"] for e in summary["checkpoint_similarity"]):
        print(f"{layer:26s}" + "".join(f"{both[(c, layer)]['cka']:>12.4f} /{both[(c, layer)]['cka_unbiased']:>8.4f}"
                                       for c in cols))
    last = cols[-1]
    rows = [e for e in summary["class_similarity"] if e["b"] == last]
    names = list(dict.fromkeys(e["class"] for e in sorted(rows, key=lambda e: e["class_id"])))
    print(f"\nper class, {last.split('=')[-1]} against the baseline (unbiased CKA / change):")
    print(f"{'layer':26s}" + "".join(f"{n:>18s}" for n in names))
    cell = {(e["layer"], e["class"]): e for e in rows}
    for layer in dict.fromkeys(e["layer"] for e in rows):
        print(f"{layer:26s}" + "".join(_class_cell(cell.get((layer, n))) for n in names))
    jobs = list(dict.fromkeys(e["job"] for e in summary["class_separability"]))
    print("\nbalanced nearest class-centroid accuracy per layer (chance in brackets):")
    print(f"{'layer':26s}" + "".join(f"{j.split('=')[-1]:>18s}" for j in jobs))
    sep = {(e["job"], e["layer"]): e for e in summary["class_separability"]}
    for layer in dict.fromkeys(e["layer"] for e in summary["class_separability"]):
        print(f"{layer:26s}" + "".join(f"{sep[(j, layer)]['accuracy']:>10.3f} ({sep[(j, layer)]['chance']:.2f})"
                                       for j in jobs))


def _class_cell(entry: dict | None) -> str:
    if entry is None or entry["cka_unbiased"] is None:
        return f"{'few pixels':>18s}"
    return f"{entry['cka_unbiased']:>10.4f} /{entry['change']:>6.3f}"


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--work", type=Path, default=Path("/tmp/featvis-compare-demo"))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "compare_demo.png")
    parser.add_argument("--summary-only", action="store_true", help="summarize the sweep of an earlier run again")
    args = parser.parse_args(argv)
    sweep_dir = args.work / "sweep"
    if not args.summary_only:
        shutil.rmtree(args.work, ignore_errors=True)
        start = time.perf_counter()
        saved = train(args.work / "train", args.iters, args.every)
        print(f"trained {args.iters} iterations in {time.perf_counter() - start:.0f}s: "
              + ", ".join(p.name for p in saved))
        start = time.perf_counter()
        proc = sweep([SHIPPED, *saved], sweep_dir)
        print(f"sweep of {1 + len(saved)} jobs in {time.perf_counter() - start:.0f}s (exit {proc.returncode})")
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1

    sizes = [sketch_path(j).stat().st_size for j in load_results(sweep_dir)]
    print(f"sketches: {', '.join(f'{s / 1024:.0f} KiB' for s in sizes)} (one per job)")
    logging.getLogger("featvis.sweep.summary").setLevel(logging.INFO)  # "checkpoints compared in ...s"
    logging.getLogger("featvis.sweep.summary").addHandler(logging.StreamHandler(sys.stdout))
    start = time.perf_counter()
    summary_dir = summarize(sweep_dir)  # in this process: every pair computed, nothing cached
    print(f"summary (contact sheets, comparison, difference sheets, index) in {time.perf_counter() - start:.2f}s")
    summary = json.loads((summary_dir / "summary.json").read_text())
    print(f"\nbaseline {summary['checkpoint_ranking'][0]['a']}; layers ranked by change (largest first):")
    cols = list(summary["checkpoint_ranking"][0]["by_job"])
    print(f"{'layer':26s}" + "".join(f"{c.split('=')[-1]:>22s}" for c in cols))
    for row in summary["checkpoint_ranking"]:
        cells = [row["by_job"][c] for c in cols]
        print(f"{row['layer']:26s}" + "".join(f"{c['cka']:>12.4f} /{c['change']:>7.4f}" for c in cells))
    print("(each cell: linear CKA / change)")
    print_finer(summary, cols)
    figure(summary_dir, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
