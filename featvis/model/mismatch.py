"""Which of a model's weights a checkpoint does not provide: missing, unexpected and wrong-shape keys.

MMEngine loads whatever keys match and leaves the rest at their random initialisation,
with a note on stdout only. featvis compares the checkpoint's state dict (after the same
key revision, `^module\\.` stripped) with `model.state_dict()`, names and shapes, before
loading: by default any difference is an error (`model.strict=true`); with
`model.strict=false` the model is drawn anyway and the log, every feature-map caption and
the job's result say that its weights are partly random (`KeyMismatch.note`).
BatchNorm's `num_batches_tracked` counters are left out on both sides, as MMEngine does:
they are not weights and older checkpoints lack them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

REVISE_KEYS = [(r"^module\.", "")]  # the key revision featvis loads with (DataParallel/DDP prefixes)

_IGNORED = "num_batches_tracked"
_SHOWN = 3  # names given in a message per kind

Shape = Tuple[int, ...]


@dataclass(frozen=True)
class WrongShape:
    key: str
    checkpoint: Optional[Shape]  # None: the checkpoint's value is not a tensor
    model: Shape

    def __str__(self) -> str:
        ckpt = "not a tensor" if self.checkpoint is None else _shape(self.checkpoint)
        return f"{self.key}: checkpoint {ckpt}, model {_shape(self.model)}"


@dataclass(frozen=True)
class KeyMismatch:
    """How a checkpoint's state dict differs from the model's: empty lists when it fits."""

    total: int  # the model's keys (without num_batches_tracked)
    missing: List[str] = field(default_factory=list)  # in the model, not in the checkpoint: stay random
    unexpected: List[str] = field(default_factory=list)  # in the checkpoint, not in the model: ignored
    wrong_shape: List[WrongShape] = field(default_factory=list)  # in both, shapes differ: stay random

    @property
    def fits(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)

    @property
    def random(self) -> int:
        """How many of the model's tensors keep their random initialisation."""
        return len(self.missing) + len(self.wrong_shape)

    def counts(self) -> str:
        """`3 of 120 missing, 1 wrong shape, 2 unexpected` (the non-zero parts; missing always)."""
        parts = [f"{len(self.missing)} of {self.total} missing"]
        if self.wrong_shape:
            parts.append(f"{len(self.wrong_shape)} wrong shape")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected")
        return ", ".join(parts)

    def details(self) -> str:
        """The counts with the first few names of each kind, for the one-line error."""
        parts = [f"{len(self.missing)} of the model's {self.total} keys missing{_names(self.missing)}"]
        parts.append(f"{len(self.unexpected)} unexpected{_names(self.unexpected)}")
        parts.append(f"{len(self.wrong_shape)} of wrong shape{_names([str(w) for w in self.wrong_shape])}")
        return ", ".join(parts)

    @property
    def note(self) -> Optional[str]:
        """What captions and the result file say with model.strict=false; None when the checkpoint fits."""
        if self.fits:
            return None
        if self.random:
            return f"partly random weights: {self.counts()}"
        return f"checkpoint keys ignored: {len(self.unexpected)} unexpected"


def checkpoint_state_dict(checkpoint: Mapping[str, Any]) -> Dict[str, Any]:
    """The state dict MMEngine's `_load_checkpoint_to_model` loads from `checkpoint`, keys revised."""
    state = checkpoint["state_dict"] if "state_dict" in checkpoint else checkpoint
    out: Dict[str, Any] = {}
    for key, value in state.items():
        for pattern, repl in REVISE_KEYS:
            key = re.sub(pattern, repl, str(key))
        out[key] = value
    return out


def compare(model: torch.nn.Module, checkpoint: Mapping[str, Any]) -> KeyMismatch:
    """Compare the checkpoint's (revised) state dict with the model's: names and shapes."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith(_IGNORED)}
    given = {k: v for k, v in checkpoint_state_dict(checkpoint).items() if not k.endswith(_IGNORED)}
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    wrong = []
    for key, shape in expected.items():
        if key in given:
            value = given[key]
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else None
            if got != shape:
                wrong.append(WrongShape(key, got, shape))
    return KeyMismatch(len(expected), missing, unexpected, wrong)


def _names(names: Sequence[str]) -> str:
    if not names:
        return ""
    more = f", ... {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return f" ({', '.join(names[:_SHOWN])}{more})"


def _shape(shape: Shape) -> str:
    return "x".join(map(str, shape)) or "scalar"
