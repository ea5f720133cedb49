"""FeatvisHook's cost in a real training run: the demo config trained with MMEngine's Runner, with and
without the hook drawing at the validation interval, in turn, in this process.

    python benchmarks/bench_hook.py [--iters 200] [--every 100] [--rounds 3] [--layers decoder]

Prints each round's training wall time (Runner.train(), validation included) with and without the hook,
the median ratio, and the cost of one drawing: timed inside the runs (FeatvisHook.draw), and as the
difference over the number of drawings (noisy: a 200-iteration run varies by several percent here).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from mmengine.config import Config
from mmengine.runner import Runner

from featvis.hooks import FeatvisHook

DRAWS: list = []  # seconds of each FeatvisHook.draw, timed inside the runs
_draw = FeatvisHook.draw


def _timed_draw(self, runner, step):
    start = time.perf_counter()
    try:
        return _draw(self, runner, step)
    finally:
        DRAWS.append(time.perf_counter() - start)


FeatvisHook.draw = _timed_draw

ROOT = Path(__file__).resolve().parents[1]
TRAIN_CONFIG = ROOT / "featvis" / "assets" / "configs" / "demo_pspnet_train.py"


def train(work_dir: Path, iters: int, every: int, hook: bool, layers: str, name: str) -> float:
    cfg = Config.fromfile(str(TRAIN_CONFIG))
    cfg.work_dir = str(work_dir)
    cfg.train_cfg.max_iters, cfg.train_cfg.val_interval = iters, every
    cfg.param_scheduler = [dict(type="PolyLR", eta_min=1e-4, power=0.9, begin=0, end=iters, by_epoch=False)]
    cfg.default_hooks.checkpoint.interval = 10 * iters
    cfg.default_hooks.logger.interval = 50
    cfg.custom_hooks = [dict(type="FeatvisHook", layers=layers, interval=every)] if hook else []
    cfg.visualizer.name = name
    runner = Runner.from_cfg(cfg)
    start = time.perf_counter()
    runner.train()
    seconds = time.perf_counter() - start
    runner.visualizer.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--every", type=int, default=100, help="validation interval = drawing interval")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layers", default="decoder")
    args = parser.parse_args()
    ratios, costs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            without = train(Path(tmp) / f"plain{r}", args.iters, args.every, False, args.layers, f"plain{r}")
            with_hook = train(Path(tmp) / f"hook{r}", args.iters, args.every, True, args.layers, f"hook{r}")
            drawings = args.iters // args.every
            ratios.append(with_hook / without)
            costs.append((with_hook - without) / drawings)
            print(f"round {r + 1}: without {without:.2f} s, with the hook {with_hook:.2f} s "
                  f"({drawings} drawings of 3 images): {with_hook / without:.3f}x")
    print(f"median: {statistics.median(ratios):.3f}x training time ({args.iters} iterations, drawing every "
          f"{args.every}, layers={args.layers}); one drawing of 3 images: {statistics.median(DRAWS):.3f} s timed "
          f"inside the runs ({len(DRAWS)} drawings), {statistics.median(costs):.2f} s by the difference")


if __name__ == "__main__":
    main()
