"""A forward pass of the model that fails on an image, said in one line; one that needs padding, padded.

An image smaller than what a model needs (a pooling kernel, a slide crop, a patch
embedding with a spatial reduction) fails deep in torch: "Kernel size can't be greater
than actual input size", "Output size is too small", "Sizes of tensors must match", ...
with a traceback that says nothing of the image. Around each forward pass,

    out = run_explained(lambda: inference_model(model, item.image_bgr), model, item, config)

(or `with explained(model, item, config): ...` where nothing may be run again) turns such
an error into an InputError naming the image, its size on disk and as fed to the model (the
test pipeline's `img_shape`, and the padding), and the fix: larger images, or a larger test
resize (model.scale=[width,height], or the config's Resize through model.cfg_options). Any
other error of the forward pass becomes a ForwardError: one line naming the image and the
cause. featvis's own errors (raised in its hooks) pass through as they are.

A size mismatch ("The size of tensor a (193) must match the size of tensor b (192)") is
what a network whose input must be a multiple of its stride (DDRNet, PIDNet) raises on
any other size: `run_explained` then finds that stride (featvis.model.stride, once per
model), pads the input to it as mmseg's data preprocessor does, and runs the pass again,
after `discard()` has dropped what the failed pass recorded. A size mismatch that padding
does not cure is said as such, "too small" only when the input is smaller than what the
model was seen to run at.
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional, Tuple, TypeVar

# Private (and misspelt upstream), on purpose: the exact preparation mmseg's inference_model
# does, to tell the size the failed forward was fed; featvis.record.gradcam uses it too and
# tests/test_private_apis.py pins it.
from mmseg.apis.inference import _preprare_data
from torch import nn

from featvis.data.images import Loaded
from featvis.errors import FeatvisError, ForwardError, InputError
from featvis.model import stride

log = logging.getLogger(__name__)
T = TypeVar("T")

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


def run_explained(forward: Callable[[], T], model: nn.Module, item: Loaded, config: Optional[str],
                  discard: Optional[Callable[[], Any]] = None) -> T:
    """`forward()`, a forward pass of `model` on `item` (or on a batch of images of its shape), with its
    errors as one line (`explained`). When it fails with a size mismatch and featvis may pad the model
    (featvis.model.stride.may_pad): the model's stride is found (once per model), the input padded to
    a multiple of it, `discard()` drops what the failed pass recorded, and `forward()` runs again.
    A model that takes the image as it is runs `forward()` once and nothing else."""
    with explained(model, item, config):
        try:
            return forward()
        except FORWARD_ERRORS as err:
            if not SIZE_MISMATCH.search(first_line(err)) or not stride.may_pad(model):
                raise
            found = stride.find(model)  # probes only the first time, for this model
            if found.divisor is None:
                raise
        if discard is not None:
            discard()
        stride.pad(model, found.divisor)
        try:
            out = forward()
        except FORWARD_ERRORS:
            found.helped = False
            stride.unpad(model)  # padding did not help: the model stays as its config built it
            raise
        if not found.helped:
            found.helped = True
            log.info("%s takes only inputs that are multiples of %d (found in %d probe forward pass(es), %.2f s): "
                     "its input is padded at the bottom and right as mmseg pads it (data_preprocessor "
                     "test_cfg=dict(size_divisor=%d)); predictions and maps are cropped back",
                     config or type(model).__name__, found.divisor, found.probes, found.seconds, found.divisor)
        return out


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
    model_name = f"model.config={config}" if config else "model.config"
    resize = test_resize(model)
    now = f" (now {resize[0]}x{resize[1]})" if resize else ""
    larger = f"use larger images, or a larger test resize with model.scale=[width,height]{now} or model.cfg_options"
    if TOO_SMALL.search(cause):
        return InputError(f"image {name} is too small for this model ({model_name}): {width}x{height} on disk"
                          f"{fed_text} (width x height); the forward pass failed with: {cause}; {larger}")
    # a size mismatch: the network's stride, or a size it cannot take, or an input too small for it
    found = stride.found(model)
    if found is not None and found.divisor is not None and (found.helped is False or stride.padded_to(model)):
        padded = f" and padded to a multiple of {found.divisor}" if fed is None else \
            f" and padded to {_up(fed[1], found.divisor)}x{_up(fed[0], found.divisor)}"
        ran = f"{found.probe_hw[1]}x{found.probe_hw[0]}"
        if fed is not None and (fed[0] < found.probe_hw[0] or fed[1] < found.probe_hw[1]):
            return InputError(f"image {name} is too small for this model ({model_name}): {width}x{height} on disk"
                              f"{fed_text}{padded} (width x height), while it runs at {ran}; the forward pass "
                              f"failed with: {cause}; {larger}")
        return InputError(f"image {name} has a size this model cannot take ({model_name}): {width}x{height} on disk"
                          f"{fed_text}{padded} (width x height); the forward pass failed with: {cause}; padding to "
                          f"a multiple of the network's stride ({found.divisor}, at which it runs at {ran}) did not "
                          f"help: try another test resize with model.scale=[width,height]{now} or model.cfg_options")
    if found is not None and found.divisor is None:
        why = f"inputs that are multiples of {stride.DIVISORS[0]} to {stride.DIVISORS[-1]} failed too ({found.why}), " \
              "so it is not the network's stride"
    elif stride.configured_padding(model) is not None:
        why = f"its config pads the input already (data_preprocessor test_cfg={stride.configured_padding(model)})"
    else:
        why = "featvis cannot pad the input of this model (its data_preprocessor has no test_cfg)"
    return InputError(f"image {name} has a size this model cannot take ({model_name}): {width}x{height} on disk"
                      f"{fed_text} (width x height); the forward pass failed with: {cause}; {why}: try another "
                      f"test resize with model.scale=[width,height]{now} or model.cfg_options")


def _up(size: int, divisor: int) -> int:
    return -(-size // divisor) * divisor


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
