"""Reading a checkpoint file without running code from it.

Checkpoints are pickles, and unpickling can run any code the file names, so they are
read with torch.load(weights_only=True): tensors, containers and plain Python values
only, plus the few data-only types below that MMEngine and mmcv checkpoints carry
beside the weights. Anything else needs model.trust_checkpoint=true (full unpickling).
"""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import re
import warnings
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

from featvis.errors import CheckpointError

_TRUST = "If you trust its source, pass model.trust_checkpoint=true"


class UnsafeCheckpointError(CheckpointError):
    """The file is a whole checkpoint, but holds objects weights_only loading refuses (or, with
    TORCH_FORCE_WEIGHTS_ONLY_LOAD, that full unpickling would need): not a broken file."""

_NOT_A_CHECKPOINT = "pass a .pth file written by torch.save (an MMEngine checkpoint or a state dict)"

# the metrics HistoryBuffer pickles with its state (see _history_buffer_method)
_HISTORY_BUFFER_METHODS = ("min", "max", "current", "mean")


def _history_buffer_method(owner: Any, name: str) -> Any:
    """Stands in for `builtins.getattr` while reading: MMEngine's HistoryBuffer (in the
    `message_hub` of every checkpoint a Runner saves) pickles its statistics methods as
    getattr(HistoryBuffer, 'mean'); exactly those four attributes are handed out, nothing else."""

    if owner is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f"Unsupported global: GLOBAL builtins.getattr ({_qualname(owner)}.{name}) "
                                 "was not an allowed global")


@contextlib.contextmanager
def _history_buffer_registry_kept() -> Iterator[None]:
    """HistoryBuffer.__setstate__ adds the pickled statistics methods to a registry on the
    class: whatever a file puts there is dropped again once it is read."""
    registry = HistoryBuffer._statistics_methods
    saved = dict(registry)
    try:
        yield
    finally:
        registry.clear()
        registry.update(saved)


def safe_checkpoint_globals() -> List[Any]:
    """The non-tensor types weights_only loading accepts on top of torch's own allow-list.

    All of them rebuild data only: numpy scalars, dtypes and arrays (as pickled by
    numpy 1.x under `numpy.core` and by numpy 2.x under `numpy._core`, so checkpoints
    from either load under either), OrderedDict, and MMEngine's HistoryBuffer (a
    plain record of logged values, rebuilt by setting its attributes) with the
    restricted getattr above.
    """


    multiarray = _numpy_multiarray()
    allowed: List[Any] = [np.ndarray, np.dtype, collections.OrderedDict]
    # the dtype classes (numpy.dtypes.Float64DType, ...): dtypes are rebuilt by
    # np.dtype('f8', ...) and then set up with their pickled state
    allowed += sorted({type(np.dtype(t)) for t in set(np.sctypeDict.values())}, key=_qualname)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed += [(multiarray.scalar, f"{module}.scalar"), (multiarray._reconstruct, f"{module}._reconstruct")]
    allowed += [HistoryBuffer, (_history_buffer_method, "builtins.getattr")]
    return allowed


def load_checkpoint_file(path: str, trust: bool = False, name: Optional[str] = None) -> Dict[str, Any]:
    """The checkpoint dict in `path`, read onto the CPU.

    trust=False: torch.load(weights_only=True) with safe_checkpoint_globals() allowed for
    this call only (a context manager, never process-wide); a file that holds anything
    else is refused with one line naming what it holds. trust=True: full unpickling,
    which runs whatever code the file names. Either way, a file that is no checkpoint
    (random bytes, a zip without data.pkl, a truncated download) is one CheckpointError.
    `name` is how the user spelt the checkpoint, for messages (default: `path`).
    """

    label = name or path
    with warnings.catch_warnings():
        # torch's notes on pickle protocols and its own weights_only advice: we give our own
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.")
        try:
            with torch.serialization.safe_globals(safe_checkpoint_globals()), _history_buffer_registry_kept():
                checkpoint = torch.load(path, map_location="cpu", weights_only=not trust)
        except pickle.UnpicklingError as err:
            raise _unpickling_error(path, label, err, trust) from None
        except Exception as err:  # zip reader errors, EOF, a class that no longer exists (trusted), ...
            if not _looks_like_torch_save(path):
                raise _not_torch_save(label) from err
            raise CheckpointError(f"checkpoint {label} cannot be read ({_detail(err)}): a truncated or corrupt "
                                  f"file, or not written by torch.save; {_NOT_A_CHECKPOINT}") from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"checkpoint {label} holds a {type(checkpoint).__name__}, not a state dict "
                              f"or a {{'state_dict': ...}} checkpoint: {_NOT_A_CHECKPOINT}")
    return checkpoint


def verify_checkpoint_file(path: str, name: Optional[str] = None) -> None:
    """Raise the CheckpointError of a file that is no readable checkpoint (truncated, an HTML page, ...).

    Read with weights_only (nothing in it runs) and dropped: a file that is whole but holds
    objects weights_only refuses passes here (loading it later says what to do about them).
    Used on a download before it goes into the cache.
    """
    try:
        load_checkpoint_file(path, trust=False, name=name)
    except UnsafeCheckpointError:
        pass


def _unpickling_error(path: str, label: str, err: pickle.UnpicklingError, trust: bool) -> CheckpointError:
    weights_only = not trust or os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "0").lower() in (
        "1", "y", "yes", "true")
    refused = _refused_globals(path, str(err)) if weights_only else []
    if refused:
        if trust:
            return UnsafeCheckpointError(f"checkpoint {label} holds {', '.join(refused)} that weights_only "
                                         "loading refuses, and TORCH_FORCE_WEIGHTS_ONLY_LOAD is set, which forces "
                                         "it even with model.trust_checkpoint=true: unset it to load a checkpoint "
                                         "you trust")
        return UnsafeCheckpointError(f"checkpoint {label} holds {', '.join(refused)} that weights_only loading "
                                     f"refuses: unpickling it can run code. {_TRUST}")
    if not _looks_like_torch_save(path):
        return _not_torch_save(label)
    if weights_only:  # a pickle the weights_only unpickler cannot follow, no global named
        return UnsafeCheckpointError(f"checkpoint {label} cannot be read by weights_only loading "
                                     f"({_detail(err)}): it may hold objects whose unpickling can run code. {_TRUST}")
    return CheckpointError(f"checkpoint {label} cannot be read ({_detail(err)}): a truncated or corrupt file, "
                           f"or not written by torch.save; {_NOT_A_CHECKPOINT}")


def _not_torch_save(label: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {label} is not a PyTorch checkpoint (neither a torch.save zip archive "
                           f"nor a pickle): {_NOT_A_CHECKPOINT}")


def _refused_globals(path: str, message: str) -> List[str]:
    """What in the checkpoint weights_only loading refuses: every GLOBAL outside the allow-list
    (a static scan of the pickle, nothing is run), else the one torch's message names."""

    try:
        with torch.serialization.safe_globals(safe_checkpoint_globals()):
            found = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # not a zip checkpoint (legacy format), or a pickle the scan cannot follow
        found = []
    if found:
        return found
    patterns = (r"GLOBAL (\S+?)(?: \(| was not an allowed global)", r"unsupported GLOBAL (\S+)",
                r"unrecognized function (.+?)(?: which belongs|$)", r"but got (<[^>]+>)")
    for pattern in patterns:
        match = re.search(pattern, message, re.MULTILINE)
        if match:
            return [match.group(1).strip()]
    return []


def _looks_like_torch_save(path: str) -> bool:
    """A zip archive (torch.save since 1.6) or a pickle (the legacy format starts with one)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def _numpy_multiarray() -> Any:
    try:
        from numpy._core import multiarray  # noqa: PLC0415 - numpy >= 2 (the import is the version check)
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray  # noqa: PLC0415
    return multiarray


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def _detail(err: BaseException) -> str:
    """One short line for the error of a library: its type and the first line of its message,
    without torch's long advice on weights_only (featvis gives its own)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    text = text.split("WeightsUnpickler error:", 1)[-1]
    text = next((line.strip() for line in text.splitlines() if line.strip()), "")
    text = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]  # its first sentence
    if not text and isinstance(err, EOFError):
        text = "the file ends too early"
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__

