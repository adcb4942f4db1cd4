"""Evaluate a checkpoint: ``python evaluate.py ckpt=PATH [attack=[fgsm,pgd_linf]] ...``."""

import hydra
from omegaconf import DictConfig

from robustlab.cli import check_overrides, one_line_errors
from robustlab.evaluate import evaluate


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
@one_line_errors
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    check_overrides("eval")
    main()
