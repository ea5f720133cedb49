"""What a run-tracking backend (W&B) needs to know about the job besides its save_dir."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional


@dataclass
class RunInfo:
    name: str
    job_type: str
    group: Optional[str]
    config: Dict[str, Any] = field(default_factory=dict)  # the resolved job config


class RunAwareBackend:
    """Mixin: the visualizer passes `run_info=RunInfo(...)` to backends that inherit this,
    and calls `close(failed=...)` on them so a failed job is marked as failed."""

    failed: bool = False
