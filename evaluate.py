"""Evaluate trained stages: `python evaluate.py evaluation=<text_to_video|interpolation|decoder> [runs=[...]]`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from fusionframes.config import CONFIG_DIR
from fusionframes.evaluation.cli import run


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
