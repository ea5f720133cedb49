"""The memory a job may plan for: what the machine, its cgroup and `ulimit -v` leave, or max_memory_gib.

/proc/meminfo's MemAvailable, the cgroup's limit less its usage (v1 or v2), and `ulimit -v` less
the process's address space, whichever is least; on CUDA the device's free memory
(torch.cuda.mem_get_info). featvis.engine.budget plans within MARGIN of it.
"""

from __future__ import annotations

import os
import re
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

GiB = 1 << 30


def gib(n: float) -> str:
    """`1.4 GiB`, `310 MiB`: a byte count for messages."""
    if n >= 10 * GiB:
        return f"{n / GiB:,.0f} GiB"
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{max(n, 0) / (1 << 20):.0f} MiB"


@dataclass(frozen=True)
class Memory:
    bytes: int
    source: str  # what limits it, for messages: "MemAvailable", "the cgroup's limit", ...


def available(cap_gib: Optional[float] = None) -> Memory:
    """Host memory this process may still take: the least of what the kernel, the cgroup and ulimit allow."""
    if cap_gib is not None:
        return Memory(int(cap_gib * GiB), f"max_memory_gib={cap_gib:g}")
    found = [m for m in (_mem_available(), _cgroup_room(), _address_space_room()) if m is not None]
    if not found:  # not Linux: free physical pages, the most os.sysconf says
        try:
            found.append(Memory(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free memory"))
        except (ValueError, OSError, AttributeError):
            return Memory(1 << 62, "unknown")
    return min(found, key=lambda m: m.bytes)


def available_device(device: str) -> Optional[Memory]:
    """Free memory on a CUDA device; None on the CPU."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return Memory(int(free), f"free on {device}")


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text()
    except (OSError, ValueError):
        return None


def _mem_available(meminfo: Path = Path("/proc/meminfo")) -> Optional[Memory]:
    text = _read(meminfo)
    found = re.search(r"^MemAvailable:\s+(\d+) kB", text or "", re.MULTILINE)
    return Memory(int(found.group(1)) * 1024, "MemAvailable") if found else None


def _cgroup_room(proc: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")) -> Optional[Memory]:
    """The process's cgroup's memory limit less its usage (reclaimable page cache counted as free)."""
    for line in (_read(proc) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":  # v2: memory.max, memory.current
            names, folders = ("memory.max", "memory.current", "inactive_file"), [root / parts[2].lstrip("/"), root]
        elif "memory" in parts[1].split(","):  # v1: memory.limit_in_bytes, memory.usage_in_bytes
            names = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
            folders = [root / "memory" / parts[2].lstrip("/"), root / "memory"]
        else:
            continue
        for folder in folders:  # in a container the cgroup's own folder is often mounted as the root
            limit, usage = _read(folder / names[0]), _read(folder / names[1])
            if limit is None or usage is None:
                continue
            if not limit.strip().isdigit() or int(limit) >= 1 << 60:  # "max", or v1's "no limit" (2^63 - page)
                break
            stat = re.search(rf"^{names[2]} (\d+)$", _read(folder / "memory.stat") or "", re.MULTILINE)
            cache = int(stat.group(1)) if stat else 0
            return Memory(max(0, int(limit) - int(usage) + cache), "the cgroup's memory limit")
    return None


def _address_space_room() -> Optional[Memory]:
    """`ulimit -v` (RLIMIT_AS) less the address space the process already has."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    found = re.search(r"^VmSize:\s+(\d+) kB", _read(Path("/proc/self/status")) or "", re.MULTILINE)
    used = int(found.group(1)) * 1024 if found else 0
    return Memory(max(0, soft - used), "ulimit -v (RLIMIT_AS)")
