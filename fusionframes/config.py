"""Hydra/OmegaConf set-up shared by the entry points."""

from __future__ import annotations

from pathlib import Path

from fusionframes.utils.resolvers import register_resolvers

CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"

register_resolvers()
