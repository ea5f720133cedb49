"""What one job did: where its results are, which images and panels it drew, how many forward passes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

RESULTS_DIR = "featvis"  # the folder a finished job leaves in its output dir; its backends' folders are inside


@dataclass
class JobResult:
    output_dir: Path  # <job output>/featvis
    images: List[str] = field(default_factory=list)  # stems, in logging order
    panels: Dict[str, List[str]] = field(default_factory=dict)  # stem -> panel names
    forwards: int = 0  # images the model ran on in this job
    reused: int = 0  # images whose maps an earlier job of the sweep recorded (share_forward)
    passes: int = 0  # forward passes of the model (batch_size > 1: fewer than `forwards`)
    weights: Optional[str] = None  # model.strict=false and the checkpoint did not fit: "partly random weights: ..."
    labels: Dict[str, str] = field(default_factory=dict)  # stem -> its mask's values that are not classes (masks)

