"""Ground-truth mask values checked against the model's classes, one image at a time.

A mask value that is neither a class index of the model (0..N-1) nor mmseg's ignore
index (255) is not a class: a 4-class model's mask holding 200 or 1000 would otherwise
be drawn in whatever colour the palette (or a wrapped uint8) gives it, as if it were one.
Such values are reported per image (a warning in the job's log, the ground truth's
caption, `featvis/labels.txt` and `labels` in a sweep job's result file) and drawn, and
shown in W&B's masks, as unlabelled pixels (the ignore index).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Dict, Iterable, Iterator, List, Optional

import numpy as np

from featvis.data.images import Loaded

log = logging.getLogger(__name__)

IGNORE_INDEX = 255  # mmseg's ignore label: never a class, drawn as the plain image
LABELS_FILE = "labels.txt"  # beside the results: one line per image whose mask holds values that are not classes


@dataclass(frozen=True)
class StrayLabels:
    """Values of one mask that are not classes of the model."""

    values: List[int]  # sorted
    pixels: int  # pixels holding one of them
    classes: int  # the model's number of classes

    @property
    def note(self) -> str:
        shown = ", ".join(str(v) for v in self.values[:6]) + (", ..." if len(self.values) > 6 else "")
        return (f"mask values {shown} are not classes of the model (0..{self.classes - 1}; "
                f"{IGNORE_INDEX} = ignore): {self.pixels} pixel(s) drawn as unlabelled")


def stray_mask(gt: np.ndarray, classes: int) -> np.ndarray:
    """Where `gt` holds a value that is neither a class index nor the ignore index."""
    values = np.asarray(gt).astype(np.int64, copy=False)
    return ((values < 0) | (values >= classes)) & (values != IGNORE_INDEX)


def stray_labels(gt: np.ndarray, classes: int) -> Optional[StrayLabels]:
    """The values of `gt` that are not classes of a `classes`-class model; None when there are none."""
    stray = stray_mask(gt, classes)
    if not stray.any():
        return None
    values = np.unique(np.asarray(gt)[stray]).astype(np.int64).tolist()
    return StrayLabels(values, int(stray.sum()), classes)


def checked(items: Iterable[Loaded], classes: int, notes: Dict[str, str]) -> Iterator[Loaded]:
    """Each item, its mask's stray values set to the ignore index; `notes[stem]` says what was found."""
    for item in items:
        found = stray_labels(item.gt, classes) if item.gt is not None and classes > 0 else None
        if found is not None:
            log.warning("gt_mask %s: %s", item.sample.mask_path, found.note)
            notes[item.sample.stem] = found.note
            gt = item.gt.astype(np.uint8 if item.gt.dtype == bool else item.gt.dtype)  # a copy
            gt[stray_mask(gt, classes)] = IGNORE_INDEX
            item = replace(item, gt=gt, gt_note=found.note)
        yield item


def labels_text(notes: Dict[str, str], paths: Dict[str, object]) -> str:
    """`<mask file>\\t<note>` lines for `labels.txt`, in the order the images were logged."""
    return "".join(f"{paths.get(stem, stem)}\t{note}\n" for stem, note in notes.items())
