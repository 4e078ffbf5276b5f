"""Start-up checks of config values, each failing with one sentence that names the key and what is allowed."""

from __future__ import annotations

import zipfile
from pathlib import Path


def check_probability(key: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{key} must be in [0, 1], got {value}.")


def check_guidance(key: str, value: float) -> None:
    if value < 0:
        raise ValueError(f"{key} must be >= 0 (0 turns guidance off), got {value}.")


def check_checkpoint(key: str, path: str | Path) -> None:
    """A Lightning checkpoint file that exists and is a complete zip archive (torch.save's format);
    reads only its directory at the end, so a truncated or overwritten file is caught before the run."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{key}={p} does not exist; give a .ckpt file written by train.py.")
    try:
        with zipfile.ZipFile(p):
            pass
    except (zipfile.BadZipFile, OSError) as error:
        raise ValueError(f"{key}={p} is not a readable checkpoint ({error}); it may be truncated, use an "
                         "earlier one.") from None
