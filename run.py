"""featvis: show what the layers of an MMSegmentation model see.

    python run.py                                  # demo model, decoder layers, local + W&B
    python run.py model=ann layers=backbone image=street.png
    python run.py -m layers=decoder,backbone       # a sweep: one W&B run per job, one group
"""

import hydra
from omegaconf import DictConfig

from featvis.cli import job, main


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def app(cfg: DictConfig) -> None:
    job(cfg)


if __name__ == "__main__":
    main(app)
