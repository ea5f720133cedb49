"""A forward pass of the model that fails on an image, said in one line.

An image smaller than what a model needs (a pooling kernel, a slide crop, a patch
embedding with a spatial reduction) fails deep in torch: "Kernel size can't be greater
than actual input size", "Output size is too small", "Sizes of tensors must match", ...
with a traceback that says nothing of the image. Around each forward pass,

    with explained(model, item, config):
        inference_model(model, item.image_bgr)

turns such an error into an InputError naming the image, its size on disk and as fed to
the model (the test pipeline's `img_shape`), and the fix: larger images, or a larger test
resize (model.scale=[width,height], or the config's Resize through model.cfg_options). Any
other error of the forward pass becomes a ForwardError: one line naming the image and the
cause. featvis's own errors (raised in its hooks) pass through as they are.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Iterator, Optional, Tuple

# Private (and misspelt upstream), on purpose: the exact preparation mmseg's inference_model
# does, to tell the size the failed forward was fed; featvis.record.gradcam uses it too and
# tests/test_private_apis.py pins it.
from mmseg.apis.inference import _preprare_data
from torch import nn

from featvis.data.images import Loaded
from featvis.errors import FeatvisError, ForwardError, InputError

# torch's messages when a tensor is too small for an operation: the image was too small
TOO_SMALL = re.compile("|".join([
    r"kernel size can't be greater than actual input size",  # a convolution (padded input < kernel)
    r"output size is too small",  # max or avg pooling
    r"smaller than (the )?kernel",
    r"non-zero size for non-batch dimensions",  # adaptive pooling of an empty map
    r"optional 0 dim batch size for input",  # pooling of an empty map
    r"sizes should be greater than 0",  # interpolation to or from an empty map
    r"padding size should be less than the corresponding input dimension",  # reflect padding
    r"array of sliding blocks",  # unfold
    r"cannot reshape tensor of 0 elements",
]), re.IGNORECASE)
# ... and when two maps' sizes disagree, as they do when an image is too small (or of an odd size)
SIZE_MISMATCH = re.compile("|".join([
    r"sizes of tensors must match",
    r"the size of tensor a \(\d+\) must match the size of tensor b",
    r"shape '\[[^\]]*\]' is invalid for input of size",
]), re.IGNORECASE)
FORWARD_ERRORS = (RuntimeError, ValueError, AssertionError, IndexError)  # what torch and mmseg raise


@contextmanager
def explained(model: nn.Module, item: Loaded, config: Optional[str]) -> Iterator[None]:
    """Run a forward pass of `model` on `item` inside this: its errors come out as one line."""
    try:
        yield
    except FeatvisError:
        raise
    except FORWARD_ERRORS as err:
        raise forward_error(err, model, item, config) from err


def forward_error(err: BaseException, model: nn.Module, item: Loaded, config: Optional[str]) -> FeatvisError:
    """The one-line error for `err`, raised by the forward pass of `model` on `item`."""
    cause = first_line(err)
    height, width = item.sample.size
    name = item.sample.image_path.name
    if not (TOO_SMALL.search(cause) or SIZE_MISMATCH.search(cause)):
        return ForwardError(f"model forward failed on {name} ({width}x{height}): {type(err).__name__}: {cause} "
                            "(set FEATVIS_DEBUG=1 for the traceback)")
    fed = fed_size(model, item)
    fed_text = f", fed to it at {fed[1]}x{fed[0]}" if fed else ""
    what = "too small" if TOO_SMALL.search(cause) else "too small (or of a size it cannot take)"
    model_name = f"model.config={config}" if config else "model.config"
    resize = test_resize(model)
    now = f" (now {resize[0]}x{resize[1]})" if resize else ""
    return InputError(f"image {name} is {what} for this model ({model_name}): {width}x{height} on disk"
                      f"{fed_text} (width x height); the forward pass failed with: {cause}; use larger images, "
                      f"or a larger test resize with model.scale=[width,height]{now} or model.cfg_options")


def fed_size(model: nn.Module, item: Loaded) -> Optional[Tuple[int, int]]:
    """(height, width) the test pipeline makes of the image (its `img_shape`); None when it cannot tell."""
    try:
        data, _ = _preprare_data(item.image_bgr, model)
        shape = data["data_samples"][0].metainfo["img_shape"]
        return int(shape[0]), int(shape[1])
    except Exception:  # the pipeline itself fails: the message goes without the size
        return None


def test_resize(model: nn.Module) -> Optional[Tuple[int, int]]:
    """(width, height) of the first Resize in the model's test pipeline, or None."""
    for transform in getattr(getattr(model, "cfg", None), "test_pipeline", None) or []:
        scale = transform.get("scale") if isinstance(transform, dict) and transform.get("type") == "Resize" else None
        if isinstance(scale, (tuple, list)) and len(scale) == 2:
            return int(scale[0]), int(scale[1])
    return None


def first_line(err: BaseException) -> str:
    text = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return text[0] if text else type(err).__name__
