"""Make docs/demo_output.png from a finished job: one row per image, one column per panel.

    python run.py hydra.run.dir=outputs/readme && python scripts/readme_figure.py outputs/readme

Feature maps carry their colour scale below the map, so they are taller than the input,
ground truth and prediction: every tile is padded with white at the bottom to the tallest,
so that the pictures of a row line up at the top.
"""

import sys
from pathlib import Path

import cv2
import numpy as np

from featvis.render.draw import grid, pad_below


def main(job_dir: str, out: str = "docs/demo_output.png", scale: float = 0.75) -> None:
    local = Path(job_dir) / "featvis" / "local"
    rows = []
    for folder in sorted(p for p in local.iterdir() if p.is_dir()):
        names = ["input", "ground_truth", "prediction"] + sorted(
            f"featmap/{p.stem}" for p in (folder / "featmap").glob("*.png"))
        tiles = []
        for name in names:
            tile = cv2.imread(str(folder / f"{name}.png"))
            tile = cv2.resize(tile, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            label = name.replace("featmap/decode_head.", "")
            cv2.putText(tile, label, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(tile, label, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1, cv2.LINE_AA)
            tiles.append(tile)
        rows.append(tiles)
    cols = max(len(r) for r in rows)
    height = max(t.shape[0] for r in rows for t in r)
    rows = [[pad_below(t, height - t.shape[0]) for t in r] for r in rows]
    flat = [t for r in rows for t in r + [np.full_like(r[0], 255)] * (cols - len(r))]
    cv2.imwrite(out, grid(flat, len(rows), cols, gap=3))
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
