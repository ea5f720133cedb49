"""`python run.py --help` lists the options a user can type, not the schema entries.

The ConfigStore holds each group's schema beside its options (`model/base_model`,
`reduction/base_topk`, ..., Hydra's schema pattern: featvis.config.schema), and Hydra's help
lists every entry of a group. `install()` wraps Hydra's `format_config_groups` (private, pinned
by tests/test_private_apis.py) so that while it runs the group listing leaves out the names
starting with `base_`; Hydra's other uses of the listing (completion, errors) are untouched.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from hydra._internal.hydra import Hydra

from featvis.config.schema import SCHEMA_PREFIX

_original: Optional[Callable[..., str]] = None


def typable(options: Any) -> list:
    """The options of a group a user can choose: schema entries left out."""
    return [option for option in options if not str(option).startswith(SCHEMA_PREFIX)]


def install() -> None:
    """Hide the schema entries from Hydra's help in this process (idempotent)."""
    global _original
    if _original is not None:
        return
    original = Hydra.format_config_groups
    _original = original

    def format_config_groups(self: Hydra, predicate: Callable[[str], bool], compact: bool = True) -> str:
        loader = self.config_loader
        listing = loader.get_group_options
        loader.get_group_options = lambda *args, **kwargs: typable(listing(*args, **kwargs))  # type: ignore[method-assign]
        try:
            return original(self, predicate, compact)
        finally:
            del loader.get_group_options  # the instance attribute: the class's method again

    Hydra.format_config_groups = format_config_groups  # type: ignore[method-assign]


def uninstall() -> None:
    """Give Hydra its own method back (tests)."""
    global _original
    if _original is not None:
        Hydra.format_config_groups = _original  # type: ignore[method-assign]
        _original = None
