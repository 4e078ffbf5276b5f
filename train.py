"""Train a stage: `python train.py experiment=<name> [overrides]`; add `-m` for a multirun."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from fusionframes.config import CONFIG_DIR
from fusionframes.training import metric_for_sweep, train


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    return metric_for_sweep(cfg, train(cfg))


if __name__ == "__main__":
    main()
