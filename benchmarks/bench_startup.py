#!/usr/bin/env python
"""How fast the command line answers when nothing runs: help, the composed config, a config mistake.

    python benchmarks/bench_startup.py [--repeats 5] [--json out.json]

Each command is timed as a whole process (interpreter start, imports, Hydra composing,
the answer, exit), as a user waits for it, against `python -c "import mmseg.apis"` (the
import every real job pays first) measured in the same run of this script:
  baseline   python -c "import mmseg.apis"
  help       python run.py --help
  error      python run.py reduction=nonexistent   (exit code 1, one line on stderr)
  cfg        python run.py --cfg job
The commands alternate, once each per round, after one untimed round (the file cache);
medians are reported, with each command's ratio to the baseline's median. Target: each at
most about a third of the baseline (issue 19: about 1.5 s here, where the import is 4.5-5 s).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = str(ROOT / "run.py")

COMMANDS = {
    "baseline": ([sys.executable, "-c", "import mmseg.apis"], 0),
    "help": ([sys.executable, RUN, "--help"], 0),
    "error": ([sys.executable, RUN, "reduction=nonexistent"], 1),
    "cfg": ([sys.executable, RUN, "--cfg", "job"], 0),
}
SHOWN = {
    "baseline": 'python -c "import mmseg.apis"',
    "help": "python run.py --help",
    "error": "python run.py reduction=nonexistent",
    "cfg": "python run.py --cfg job",
}


def timed(name: str, cwd: Path, env: dict) -> float:
    argv, expected = COMMANDS[name]
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != expected:
        sys.exit(f"bench_startup: `{SHOWN[name]}` exited {proc.returncode}, not {expected}: "
                 f"{proc.stderr.strip()[-500:]}")
    if name == "error" and len(proc.stderr.strip().splitlines()) != 1:
        sys.exit(f"bench_startup: `{SHOWN[name]}` did not answer in one line: {proc.stderr.strip()[-500:]}")
    return elapsed


def busy_cpus(seconds: float) -> float:
    """CPUs' worth of time the whole machine spent busy, from /proc/stat deltas (this run included)."""
    def read() -> tuple:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait
    try:
        total0, idle0 = read()
        time.sleep(seconds)
        total1, idle1 = read()
    except OSError:
        return float("nan")
    return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / max(1, total1 - total0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args()

    cwd = Path(tempfile.mkdtemp(prefix="featvis-bench-startup-"))  # nothing may be written, but not in the repo
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "FEATVIS_"))}
    env.update(NETRC=str(cwd / "no-netrc"), WANDB_SILENT="true")
    print(f"CPUs busy before the run (other processes): {busy_cpus(1.0):.2f} of {os.cpu_count()}")
    for name in COMMANDS:  # warm-up round: the file cache, untimed
        timed(name, cwd, env)
    times = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name in COMMANDS:
            times[name].append(timed(name, cwd, env))
    base = statistics.median(times["baseline"])
    print(f"{'command':40s} {'median':>8s} {'min':>7s} {'max':>7s} {'ratio':>7s}")
    result = {}
    for name, values in times.items():
        median = statistics.median(values)
        result[name] = {"command": SHOWN[name], "median_s": median, "runs_s": values, "ratio": median / base}
        print(f"{SHOWN[name]:40s} {median:7.2f}s {min(values):6.2f}s {max(values):6.2f}s {median / base:6.2f}x")
    print(f"(medians of {args.repeats} runs each; ratio = median / the import's median; target <= 0.33x)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
