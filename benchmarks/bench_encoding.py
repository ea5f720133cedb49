#!/usr/bin/env python
"""What one picture costs to draw and to store, per backend format, at Cityscapes size.

    .venv/bin/python benchmarks/bench_encoding.py [--size 1024x2048] [--repeats 5]

One feature map (a smooth random field, 1/8 of the image) is drawn over the sample photo
resized to --size, with its scale bar, as a job draws each layer. Timed in this run:
  draw        overlay_maps (align, colour, blend, scale bar), against the plain numpy
              version it replaced (tests/test_render_exact.py's reference: same pixels);
  PNG         OpenCV's default PNG (libpng, deflate level 1, Sub filter) against featvis's
              (the same filter, level-1 deflate by ISA-L): time and size, ratio;
  W&B         the default upload, JPEG quality 90 at most 1024 pixels on the longer side
              (shrinking included), against the full-size PNG that was uploaded before.
Medians of --repeats after one untimed run; single-threaded OpenCV (cv2.setNumThreads(1)),
so the numbers are per core.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from featvis.backends.encoding import PNG, PictureFormat  # noqa: E402
from featvis.data.paths import ASSETS  # noqa: E402
from featvis.render.heatmap import overlay_maps  # noqa: E402
from tests.render_reference import _ref_overlay  # noqa: E402


def timed(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--size", default="1024x2048", help="HxW of the picture")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    cv2.setNumThreads(1)
    photo = cv2.cvtColor(cv2.imread(str(ASSETS / "sample" / "grace_hopper.jpg")), cv2.COLOR_BGR2RGB)
    image = np.ascontiguousarray(cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA))
    field = torch.randn(1, h // 8, w // 8, generator=torch.Generator().manual_seed(0))
    field = torch.nn.functional.avg_pool2d(field[None], 9, 1, 4)[0]  # smooth, like a feature map
    meta = {"img_shape": (h, w)}

    t_new, picture = timed(lambda: overlay_maps(field, image, meta, 0.5, scale_bar=True).picture, args.repeats)
    t_old, reference = timed(lambda: _ref_overlay(field[0], image, meta, 0.5, None, True), args.repeats)
    assert np.array_equal(picture, reference), "the fast drawing differs from the reference"
    bgr = cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)
    t_png0, png0 = timed(lambda: cv2.imencode(".png", bgr)[1], args.repeats)
    t_png, png = timed(lambda: PNG.encode(picture), args.repeats)
    wandb = PictureFormat("jpeg", 90, 1024)
    t_jpg, jpg = timed(lambda: wandb.encode(picture), args.repeats)

    print(f"one {h}x{w} picture (+ scale bar), per core, median of {args.repeats}")
    print(f"{'':34s} {'ms':>7s} {'MB':>6s} {'ratio':>6s}")
    print(f"{'draw: plain numpy (before)':34s} {t_old * 1e3:7.1f} {'':6s} {1.0:6.2f}")
    print(f"{'draw: featvis':34s} {t_new * 1e3:7.1f} {'':6s} {t_new / t_old:6.2f}")
    print(f"{'PNG: OpenCV default (before)':34s} {t_png0 * 1e3:7.1f} {len(png0) / 1e6:6.2f} {1.0:6.2f}")
    print(f"{'PNG: featvis (ISA-L level 1)':34s} {t_png * 1e3:7.1f} {len(png) / 1e6:6.2f} {t_png / t_png0:6.2f}")
    print(f"{'W&B: full-size PNG (before)':34s} {t_png0 * 1e3:7.1f} {len(png0) / 1e6:6.2f} {1.0:6.2f}")
    print(f"{'W&B: JPEG q90, max side 1024':34s} {t_jpg * 1e3:7.1f} {len(jpg) / 1e6:6.2f} "
          f"{len(jpg) / len(png0):6.2f} (size)")


if __name__ == "__main__":
    main()
