"""Images grouped for one forward pass: up to `size` consecutive images of the same shape.

mmseg pads a batch to its largest image; padding would change what a model's global
pooling and border pixels see, so only images of one shape share a batch, and a job's
maps are those of one image at a time, whatever `batch_size` is.
"""

from __future__ import annotations

from typing import Iterable, Iterator, List

from featvis.data.images import Loaded


def same_shape_batches(items: Iterable[Loaded], size: int) -> Iterator[List[Loaded]]:
    """Consecutive items in lists of at most `size`; a change of image shape starts a new list."""
    batch: List[Loaded] = []
    for item in items:
        if batch and item.image_bgr.shape != batch[0].image_bgr.shape:
            yield batch
            batch = []
        batch.append(item)
        if len(batch) >= size:  # full: run it now, not when the next image is decoded
            yield batch
            batch = []
    if batch:
        yield batch
