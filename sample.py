"""Generate videos from a prompt: `python sample.py prompt="a red circle moving right" [fps=high seed=0 ...]`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from fusionframes.config import CONFIG_DIR
from fusionframes.sampling_cli import run


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="sample")
def main(cfg: DictConfig) -> None:
    try:
        paths = run(cfg)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        raise SystemExit(f"error: {error}") from None
    for path in paths:
        print(path)


if __name__ == "__main__":
    main()
