"""Run a segmentor's auxiliary head(s) at inference, so that their layers can be drawn.

mmseg calls `auxiliary_head` only in `loss()`: at inference it never runs, and a hook on
it would record nothing. Training feeds it what the decode head gets (the backbone's
stages, after the neck when there is one), so featvis does the same: a forward hook on
the neck (or the backbone) calls each auxiliary head on that output, through
`module(...)`, so the heads' own forward hooks (the recorder's) fire. Under slide
inference this happens once per window, like the decode head. Its result is dropped:
the prediction is the decode head's, as in mmseg.

    AuxiliaryRun.attach(hooks, segmentor)   # adds the hook to a HookSet, removed with it
"""

from __future__ import annotations

from typing import Any, List

from torch import nn

from featvis.errors import LayerNotFoundError
from featvis.record.hooks import HookSet


def auxiliary_heads(model: nn.Module) -> List[nn.Module]:
    """The model's auxiliary heads: none, one, or each of a ModuleList."""
    head = getattr(model, "auxiliary_head", None)
    if isinstance(head, nn.ModuleList):
        return list(head)
    return [head] if isinstance(head, nn.Module) else []


class AuxiliaryRun:
    """The forward hook that calls the auxiliary heads on the decode head's input."""

    def __init__(self, heads: List[nn.Module]) -> None:
        self.heads = heads

    @classmethod
    def attach(cls, hooks: HookSet, model: nn.Module) -> None:
        """Hook the neck (or the backbone) of `model` into `hooks`; nothing when it has no auxiliary head."""
        heads = auxiliary_heads(model)
        if not heads:
            return
        source = model.neck if getattr(model, "with_neck", False) else getattr(model, "backbone", None)
        if not isinstance(source, nn.Module):
            raise LayerNotFoundError(f"{type(model).__name__} has an auxiliary head but no backbone to feed it: "
                                     "its auxiliary layers cannot be drawn; choose other layers")
        hooks.add(source.register_forward_hook(cls(heads)))

    def __call__(self, module: nn.Module, args: Any, output: Any) -> None:
        for head in self.heads:
            try:
                head(output)
            except (RuntimeError, ValueError, TypeError, IndexError) as err:
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise LayerNotFoundError(f"the auxiliary head {type(head).__name__} cannot run on the decode "
                                         f"head's input at inference ({first}): its layers cannot be drawn; "
                                         "choose other layers") from err
