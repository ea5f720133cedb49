"""featvis: show what the layers of an MMSegmentation model see.

    python run.py                                  # demo model, decoder layers, local + W&B
    python run.py model=ann layers=backbone image=street.png
    python run.py -m layers=decoder,backbone       # a sweep: one W&B run per job, one group
"""

import sys

from featvis.backends.wandb_pool import prewarm_for

if __name__ == "__main__":
    prewarm_for(sys.argv[1:])  # W&B's worker imports wandb while this process imports torch and mmseg

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from featvis.cli import job, main  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def app(cfg: DictConfig) -> None:
    job(cfg)


if __name__ == "__main__":
    main(app)
