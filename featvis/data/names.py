"""Output names from image file stems: safe as one folder name, unique within the run.

An image's pictures go to `featvis/local/<name>/`, and its W&B rows and contact sheets
are named after it. A stem is only the start of a file name: `...png` has the stem `..`
and `..png` the stem `.`, which as folder names point at the folders above. A name made
here never holds a path separator or a control character, never starts with a dot and
is never empty; a name already taken in the run (compared without case, as macOS and
Windows file systems compare them) gets `_2`, `_3`, ...
"""

from __future__ import annotations

import re
from typing import Set

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")  # separators and control characters
FALLBACK = "image"  # the name of an image whose stem has nothing left (`...png`)


def safe_stem(stem: str) -> str:
    """`..` -> `image`, `a/b` -> `a_b`, `.x` -> `x`: one plain folder name."""
    name = _UNSAFE.sub("_", stem).strip().lstrip(".").strip()
    return name or FALLBACK


class Names:
    """Hands out one unique output name per image, in file order."""

    def __init__(self) -> None:
        self._taken: Set[str] = set()

    def claim(self, stem: str) -> str:
        """The safe form of `stem`, numbered (`scene_2`) when an earlier image of the run has it."""
        base = safe_stem(stem)
        name, number = base, 2
        while name.casefold() in self._taken:
            name, number = f"{base}_{number}", number + 1
        self._taken.add(name.casefold())
        return name
