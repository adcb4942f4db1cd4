"""Train a defense: ``python train.py [defense=pgd_at] [data=mnist5k] [model=mnist_cnn] ...``."""

import hydra
from omegaconf import DictConfig

from robustlab.cli import check_overrides, one_line_errors
from robustlab.train import train


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
@one_line_errors
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    check_overrides("train")
    main()
