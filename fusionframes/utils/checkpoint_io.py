"""Atomic checkpoint files: a kill or crash during a save leaves the previous checkpoint in place, loadable."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO


def _fsync_dir(directory: Path) -> None:
    """Persist a rename: fsync the directory entry (POSIX; Windows cannot open directories)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves write ``<path>.tmp`` next to ``path``, fsync it, then
    ``os.replace`` it over ``path``; readers see the old file or the new one, never a partial one.

    Lightning's own save stages the bytes in memory and in the system temp directory and moves them with
    ``shutil.move``, which is a copy into ``path`` (not a rename) when the temp directory is on another
    filesystem than the checkpoints, and it does not fsync; neither survives a kill or a power cut in the
    middle. Remote paths (``s3://``, ...) keep Lightning's save. A stale ``.tmp`` from a killed save is
    overwritten by the next save of the same path.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
