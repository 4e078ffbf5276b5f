"""Writing images and videos for people to look at, and sending them to the run's loggers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image

from fusionframes.utils.video_io import encode_video


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Float images in [-1, 1], (..., C, H, W) -> uint8 (..., H, W, C)."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()


def image_grid(images: torch.Tensor, nrow: int | None = None) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> one uint8 (rows*H, nrow*W, C) grid, padded with black cells."""
    n = images.shape[0]
    nrow = nrow or n
    rows = -(-n // nrow)
    pad = rows * nrow - n
    if pad:
        images = torch.cat([images, images.new_full((pad, *images.shape[1:]), -1.0)])
    return rearrange(to_uint8(images), "(r c) h w ch -> (r h) (c w) ch", r=rows, c=nrow)


def save_image(array: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 (H, W, C) array as PNG (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _media_dir(trainer) -> Path:
    """``<log dir of the first logger, or the run dir>/media``, without ``trainer.log_dir``'s collective
    broadcast (media are written on rank zero only, so a collective there would deadlock under DDP)."""
    logger = trainer.loggers[0] if trainer.loggers else None
    return Path(getattr(logger, "log_dir", None) or trainer.default_root_dir) / "media"


def log_image(trainer, key: str, array: np.ndarray, caption: str | None = None) -> Path | None:
    """Save a uint8 (H, W, C) image under ``<log_dir>/media/`` and send it to image-capable loggers."""
    if trainer is None or not trainer.is_global_zero:
        return None
    path = save_image(array, _media_dir(trainer) / f"{key.replace('/', '_')}_step{trainer.global_step:07d}.png")
    for logger in trainer.loggers:
        if hasattr(logger, "log_image"):  # WandbLogger
            logger.log_image(key=key, images=[array], step=trainer.global_step, caption=[caption or key])
        elif hasattr(getattr(logger, "experiment", None), "add_image"):  # TensorBoardLogger
            logger.experiment.add_image(key, array, trainer.global_step, dataformats="HWC")
    return path


def save_video(frames: np.ndarray, path: str | Path, fps: int) -> list[Path]:
    """Write uint8 (F, H, W, 3) frames as ``<path>.mp4`` and ``<path>.gif``; returns both paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mp4, gif = path.with_suffix(".mp4"), path.with_suffix(".gif")
    mp4.write_bytes(encode_video(frames, fps))
    images = [Image.fromarray(f) for f in frames]
    images[0].save(gif, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return [mp4, gif]


def log_video(trainer, key: str, video: torch.Tensor, fps: int, caption: str | None = None) -> list[Path]:
    """Save a (F, 3, H, W) clip in [-1, 1] as mp4 + gif under ``<log_dir>/media/``; send it to wandb if used."""
    if trainer is None or not trainer.is_global_zero:
        return []
    paths = save_video(to_uint8(video), _media_dir(trainer) / f"{key.replace('/', '_')}_step{trainer.global_step:07d}",
                       fps)
    for logger in trainer.loggers:
        if hasattr(logger, "log_video"):  # WandbLogger
            logger.log_video(key=key, videos=[str(paths[0])], step=trainer.global_step, caption=[caption or key])
    return paths
