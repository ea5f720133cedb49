"""Hook handles registered together and removed together, on every exit path.

    class Recorder(HookSet):
        def register(self) -> None:
            self.add(module.register_forward_hook(self.hook))

    with Recorder() as rec:      # a failure while registering removes what was registered
        model(x)                 # leaving the block (normally, by exception or Ctrl-C) removes all

A plain HookSet works too: `with HookSet() as hooks: hooks.add(...)`.
"""

from __future__ import annotations

from typing import Any, List

from torch.utils.hooks import RemovableHandle


class HookSet:
    def __init__(self) -> None:
        self._handles: List[RemovableHandle] = []

    def register(self) -> None:
        """Register hooks with `add` on entering; subclasses say which (a plain set: none yet)."""

    def add(self, handle: RemovableHandle) -> None:
        self._handles.append(handle)

    def remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    def __enter__(self) -> "HookSet":
        try:
            self.register()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()
