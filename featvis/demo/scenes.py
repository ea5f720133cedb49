"""Deterministic procedural scenes: textured backgrounds with simple shapes.

Every scene is drawn from a :class:`numpy.random.Generator`, so the same
generator state always yields the same image and label mask.  Shape colours
and textures are random; the class of a shape is carried by its geometry only.

Run ``python -m featvis.demo.scenes`` to regenerate the shipped demo images
under ``featvis/assets/demo``.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

CLASSES = ('background', 'circle', 'square', 'triangle')
PALETTE = [[72, 72, 72], [230, 25, 75], [60, 180, 75], [0, 130, 200]]

DEMO_SEED = 20240917        # seed of the shipped demo images
DEMO_SIZE = (192, 256)      # (height, width) of the shipped demo images
MIN_RADIUS = 14             # circumradius range of shapes, in pixels
MAX_RADIUS = 46
MAX_COVERED = 0.35          # max fraction of a shape hidden by later shapes
MIN_CONTRAST = 60.0         # min RGB distance between shape and what it covers

_TEXTURES = ('flat', 'gradient', 'stripes', 'checker', 'blobs')


def scene_rng(seed: int, index: int) -> np.random.Generator:
    """Independent generator for scene ``index`` of a seeded series."""
    return np.random.default_rng([seed, index])


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, size=3)


def _coords(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Float pixel coordinate grids ``(y, x)`` of shape HxW."""
    y, x = np.mgrid[0:h, 0:w]
    return y.astype(np.float32), x.astype(np.float32)


def _pattern(rng: np.random.Generator, kind: str, h: int, w: int) -> np.ndarray:
    """A scalar pattern in [0, 1] of shape HxW for the given texture kind."""
    y, x = _coords(h, w)
    theta = rng.uniform(0, np.pi)
    along = x * np.cos(theta) + y * np.sin(theta)
    if kind == 'flat':
        return np.zeros((h, w), np.float32)
    if kind == 'gradient':
        return (along - along.min()) / max(float(np.ptp(along)), 1.0)
    if kind == 'stripes':
        period = rng.uniform(6, 24)
        wave = np.sin(2 * np.pi * along / period + rng.uniform(0, 2 * np.pi))
        return (wave > 0).astype(np.float32) if rng.random() < 0.5 else 0.5 + 0.5 * wave
    if kind == 'checker':
        cell = rng.uniform(5, 20)
        across = -x * np.sin(theta) + y * np.cos(theta)
        return ((np.floor(along / cell) + np.floor(across / cell)) % 2).astype(np.float32)
    # 'blobs': smooth low-frequency noise
    grid = rng.random((int(rng.integers(3, 8)), int(rng.integers(3, 8)))).astype(np.float32)
    return np.clip(cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC), 0, 1)


def _texture(rng: np.random.Generator, h: int, w: int, colour: np.ndarray,
             contrast: float, noise: float) -> np.ndarray:
    """Float HxWx3 texture: ``colour`` modulated by a random pattern plus noise."""
    kind = _TEXTURES[rng.integers(len(_TEXTURES))]
    other = np.clip(colour + rng.normal(0, contrast, size=3), 0, 255)
    t = _pattern(rng, kind, h, w)[..., None]
    img = colour * (1 - t) + other * t
    return img + rng.normal(0, noise, size=(h, w, 3))


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Mix of one or two random textures with strong contrast."""
    img = _texture(rng, h, w, _random_colour(rng), contrast=90, noise=rng.uniform(0, 14))
    if rng.random() < 0.5:
        alpha = rng.uniform(0.2, 0.6)
        img = (1 - alpha) * img + alpha * _texture(rng, h, w, _random_colour(rng), 90, 0)
    return img


def _polygon(cls: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Vertices of a regular square/triangle with circumradius ``r``."""
    n = 4 if CLASSES[cls] == 'square' else 3
    a = angle + 2 * np.pi * np.arange(n) / n
    return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1)


def _shape_mask(rng: np.random.Generator, cls: int, h: int, w: int) -> np.ndarray:
    """Boolean HxW mask of one randomly sized, placed and rotated shape."""
    r = rng.uniform(MIN_RADIUS, min(MAX_RADIUS, 0.4 * min(h, w)))
    if CLASSES[cls] == 'triangle':
        r *= 1.2  # triangles cover less area for the same circumradius
    # keep the centre far enough inside that the shape stays recognisable
    cx, cy = rng.uniform(0.6 * r, w - 0.6 * r), rng.uniform(0.6 * r, h - 0.6 * r)
    mask = np.zeros((h, w), np.uint8)
    if CLASSES[cls] == 'circle':
        cv2.circle(mask, (round(cx * 16), round(cy * 16)), round(r * 16), 1, -1,
                   cv2.LINE_8, shift=4)
    else:
        pts = np.round(_polygon(cls, cx, cy, r, rng.uniform(0, 2 * np.pi)) * 16)
        cv2.fillPoly(mask, [pts.astype(np.int32)], 1, cv2.LINE_8, shift=4)
    return mask.astype(bool)


def _fits(mask: np.ndarray, instances: np.ndarray, n_shapes: int) -> bool:
    """True if ``mask`` is mostly visible and hides little of earlier shapes."""
    if mask.sum() < 0.5 * np.pi * MIN_RADIUS ** 2:  # mostly outside the image
        return False
    for i in range(1, n_shapes + 1):
        visible = instances == i
        if (visible & mask).sum() > MAX_COVERED * visible.sum():
            return False
    return True


def _contrast(colour: np.ndarray, under: np.ndarray, owners: np.ndarray) -> float:
    """Worst contrast of ``colour`` against the regions a shape would cover.

    ``under`` are the Nx3 pixels beneath the shape and ``owners`` their
    instance ids (0 = background).  Per region, the 20th percentile of the
    colour distance is used, so both colours of a checker count.
    """
    dist = np.linalg.norm(under - colour, axis=1)
    return min(float(np.percentile(dist[owners == i], 20)) for i in np.unique(owners))


def _shape_colour(rng: np.random.Generator, under: np.ndarray,
                  owners: np.ndarray) -> np.ndarray:
    """Random colour clearly distinct from everything the shape covers."""
    best, best_contrast = None, -1.0
    for _ in range(30):
        colour = _random_colour(rng)
        contrast = _contrast(colour, under, owners)
        if contrast >= MIN_CONTRAST:
            return colour
        if contrast > best_contrast:
            best, best_contrast = colour, contrast
    return best


def generate_scene(rng: np.random.Generator, height: int,
                   width: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw one scene.

    Returns an RGB ``uint8`` image of shape HxWx3 and a ``uint8`` label mask
    of shape HxW whose values index :data:`CLASSES` (topmost shape wins).
    """
    img = _background(rng, height, width)
    label = np.zeros((height, width), np.uint8)
    instances = np.zeros((height, width), np.uint8)
    n_shapes = 0
    for _ in range(int(rng.integers(1, 5))):
        cls = int(rng.integers(1, len(CLASSES)))
        for _attempt in range(10):
            mask = _shape_mask(rng, cls, height, width)
            if _fits(mask, instances, n_shapes):
                break
        else:
            continue  # no room for this shape
        colour = _shape_colour(rng, img[mask], instances[mask])
        tex = _texture(rng, height, width, colour, contrast=35, noise=rng.uniform(0, 10))
        img[mask] = tex[mask]
        label[mask] = cls
        n_shapes += 1
        instances[mask] = n_shapes
    return np.clip(img, 0, 255).astype(np.uint8), label


def write_demo_images(out_dir: str | Path, n: int = 3, seed: int = DEMO_SEED,
                      size: tuple[int, int] = DEMO_SIZE) -> list[str]:
    """Write ``images/<stem>.png`` (RGB) and ``masks/<stem>.png`` (labels).

    Scene ``i`` is drawn from ``scene_rng(seed, i)``; returns the stems.
    """
    out = Path(out_dir)
    (out / 'images').mkdir(parents=True, exist_ok=True)
    (out / 'masks').mkdir(parents=True, exist_ok=True)
    stems = []
    for i in range(n):
        img, label = generate_scene(scene_rng(seed, i), *size)
        stem = f'scene_{i:03d}'
        cv2.imwrite(str(out / 'images' / f'{stem}.png'), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(out / 'masks' / f'{stem}.png'), label)
        stems.append(stem)
    return stems


if __name__ == '__main__':
    from featvis.data.paths import ASSETS

    target = ASSETS / 'demo'
    print('wrote', write_demo_images(target), 'to', target)
