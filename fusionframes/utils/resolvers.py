"""OmegaConf resolvers used by the Hydra configs (registered on import of ``fusionframes.config``)."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"


def register_resolvers() -> None:
    """Register ``${ff.assets:}`` (shipped weights dir) and ``${ff.wandb_offline:}`` (no API key set)."""
    if not OmegaConf.has_resolver("ff.assets"):
        OmegaConf.register_new_resolver("ff.assets", lambda: str(ASSETS_DIR))
    if not OmegaConf.has_resolver("ff.wandb_offline"):
        OmegaConf.register_new_resolver("ff.wandb_offline", lambda: not os.environ.get("WANDB_API_KEY"))
