"""Start-up checks of config values, each failing with one sentence that names the key and what is allowed."""

from __future__ import annotations


def check_probability(key: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{key} must be in [0, 1], got {value}.")


def check_guidance(key: str, value: float) -> None:
    if value < 0:
        raise ValueError(f"{key} must be >= 0 (0 turns guidance off), got {value}.")
