"""Networks whose input must be a multiple of their stride: the stride found once per model, the input padded.

DDRNet and PIDNet add a branch brought back to size by a fixed factor to one made by
strided convolutions, so an input that is not a multiple of their stride fails deep in
torch ("The size of tensor a (193) must match the size of tensor b (192)": a 451x300 photo
at their cityscapes test scale, 1539x1024). mmseg's answer is the data preprocessor's
padding at test time, SegDataPreProcessor(test_cfg=dict(size_divisor=D)): `stack_batch`
pads bottom and right and records `img_padding_size` and `pad_shape`, the decode head
resizes its logits to `pad_shape` and `BaseSegmentor.postprocess_result` crops them back.
Their configs do not set it, and no config states D.

So D is found lazily, and only for a model that needs it (featvis.engine.forward_errors
`run_explained`): when a forward pass fails with a size mismatch, `find` runs small forward
passes of the model on zeros, with every hook muted (`muted_hooks`: featvis's recorder sees
none of them), at (h, w) both odd multiples of d (a multiple of d and of no larger power of
two) for d = 8, 16, 32, 64, 128, until one works: that d is D. `pad` sets it on the model's
data preprocessor, exactly as a config would, and the image is run again; pictures are
cropped back with the `img_shape` and `pad_shape` the padding records (featvis.render.align,
featvis.record.gradcam `_unpad`). A model that takes any size never fails, so it is never
probed or padded and pays nothing.

What was found is kept per model object (`found`), so a model cached across the jobs of a
sweep (featvis.model.cache) is probed once; it stays padded, as its config would have it.
Padding that does not make the image run is taken off again (`unpad`), and the error says so.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Optional, Tuple

import torch
from torch import nn

log = logging.getLogger(__name__)

DIVISORS = (8, 16, 32, 64, 128)  # tried in this order; the first a probe runs at is D
PROBE_SIDE = 224  # probes are about 224 x 288 pixels: big enough for every stage to have a map
# what a failed probe may raise: the errors of a forward pass (as featvis.engine.forward_errors)
PROBE_ERRORS = (RuntimeError, ValueError, AssertionError, IndexError)


@dataclass
class Stride:
    """What probing found for one model."""

    divisor: Optional[int]  # D, the smallest of DIVISORS whose probe ran; None: none ran
    probe_hw: Optional[Tuple[int, int]]  # (h, w) of the probe that ran; None: none did
    probes: int  # forward passes it took
    seconds: float  # how long they took
    why: str = ""  # no divisor: what the last probe failed with
    helped: Optional[bool] = None  # the image ran once padded (True), did not (False), not tried yet (None)


_FOUND: "weakref.WeakKeyDictionary[nn.Module, Stride]" = weakref.WeakKeyDictionary()


def probe_hw(divisor: int) -> Tuple[int, int]:
    """(h, w) of the probe for `divisor`: two different odd multiples of it, about PROBE_SIDE."""
    m = max(1, -(-PROBE_SIDE // divisor)) | 1
    return divisor * m, divisor * (m + 2)


def preprocessor(model: nn.Module) -> Optional[nn.Module]:
    """The model's data preprocessor when it pads at test time as mmseg's SegDataPreProcessor does
    (it has a `test_cfg`, `size` / `size_divisor`); None otherwise (featvis cannot pad that model)."""
    pre = getattr(model, "data_preprocessor", None)
    return pre if isinstance(pre, nn.Module) and hasattr(pre, "test_cfg") else None


def configured_padding(model: nn.Module) -> Optional[Dict[str, Any]]:
    """The test-time padding the model's own config sets (`size` or `size_divisor`), None when it sets none."""
    pre = preprocessor(model)
    test_cfg = dict(getattr(pre, "test_cfg", None) or {})
    if not test_cfg or padded_to(model):
        return None
    return test_cfg


def found(model: nn.Module) -> Optional[Stride]:
    """What probing found for `model`; None when it was never probed."""
    return _FOUND.get(model)


def padded_to(model: nn.Module) -> Optional[int]:
    """D when featvis pads the model's input to a multiple of D now, else None."""
    stride = _FOUND.get(model)
    pre = preprocessor(model)
    if stride is None or stride.divisor is None or pre is None:
        return None
    return stride.divisor if pre.test_cfg == {"size_divisor": stride.divisor} else None


def may_pad(model: nn.Module) -> bool:
    """Whether featvis may pad `model` after a size mismatch: a SegDataPreProcessor that pads nothing
    at test time (featvis does not override what a config sets), and no probe has ruled it out. (Padding
    that did not help one image, which was then too small, is tried again on the next that fails.)"""
    pre = preprocessor(model)
    if pre is None or pre.test_cfg:
        return False
    stride = _FOUND.get(model)
    return stride is None or stride.divisor is not None


def find(model: nn.Module) -> Stride:
    """D for `model`: small forward passes (hooks muted) at odd multiples of d = 8 ... 128, the first that
    runs; probed once per model object, then remembered."""
    if model in _FOUND:
        return _FOUND[model]
    start, probes, why = time.perf_counter(), 0, ""
    result = None
    with muted_hooks(model), torch.no_grad():
        for divisor in DIVISORS:
            h, w = probe_hw(divisor)
            probes += 1
            try:
                model.predict(_zeros(model, h, w))
            except PROBE_ERRORS as err:  # not this d (or the probe is too small): the next, larger one
                why = _first_line(err)
                continue
            except Exception as err:  # the model cannot be probed this way at all: no stride to find
                why = f"{type(err).__name__}: {_first_line(err)}"
                break
            result = Stride(divisor, (h, w), probes, time.perf_counter() - start)
            break
    if result is None:
        result = Stride(None, None, probes, time.perf_counter() - start, why)
    _FOUND[model] = result
    log.info("stride probe: %s in %d forward pass(es) of %.2f s", f"inputs that are multiples of {result.divisor} run"
             if result.divisor else f"no multiple of {DIVISORS[0]}-{DIVISORS[-1]} runs ({why})", probes, result.seconds)
    return result


def pad(model: nn.Module, divisor: int) -> None:
    """Pad the model's input at test time to a multiple of `divisor`, bottom and right, as mmseg does."""
    preprocessor(model).test_cfg = {"size_divisor": divisor}


def unpad(model: nn.Module) -> None:
    """Take featvis's padding off again (it did not help): the model is as its config built it."""
    if padded_to(model):
        preprocessor(model).test_cfg = None


@contextmanager
def muted_hooks(model: nn.Module) -> Iterator[None]:
    """No forward (pre-)hook of any module of `model` fires inside: featvis's recorders, the listing's
    and Grad-CAM's hooks are set aside (not removed: their handles stay valid) and put back on exit."""
    saved = []
    for module in model.modules():
        saved.append((module, module._forward_hooks, module._forward_pre_hooks))
        module._forward_hooks, module._forward_pre_hooks = OrderedDict(), OrderedDict()
    try:
        yield
    finally:
        for module, hooks, pre_hooks in saved:
            module._forward_hooks, module._forward_pre_hooks = hooks, pre_hooks


def _zeros(model: nn.Module, h: int, w: int) -> torch.Tensor:
    """A normalized input of zeros (1, C, h, w) on the model's device, C as its data preprocessor expects."""
    mean = getattr(getattr(model, "data_preprocessor", None), "mean", None)
    channels = int(mean.numel()) if isinstance(mean, torch.Tensor) and mean.numel() > 1 else 3
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    return torch.zeros(1, channels, h, w, device=device)


def _first_line(err: BaseException) -> str:
    text = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return text[0] if text else type(err).__name__
