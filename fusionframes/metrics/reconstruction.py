"""Reconstruction quality of decoded videos: per-frame PSNR, SSIM, MSE, optional LPIPS, temporal consistency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from torch import nn
from torchmetrics import MeanMetric, MeanSquaredError, Metric, MetricCollection
from torchmetrics.image import (
    LearnedPerceptualImagePatchSimilarity,
    PeakSignalNoiseRatio,
    StructuralSimilarityIndexMeasure,
)
from torchvision.models import AlexNet_Weights

from fusionframes.utils.pretrained import require_dir


class TemporalConsistencyError(Metric):
    """Mean ``|(x̂[t+1] - x̂[t]) - (x[t+1] - x[t])|`` over consecutive frames of videos (B, F, C, H, W).

    Zero when the reconstruction changes from frame to frame exactly as the ground truth does; flicker raises it.
    """

    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        error = (preds.diff(dim=1) - target.diff(dim=1)).abs()
        self.total += error.sum(dtype=torch.float64)
        self.count += error.numel()

    def compute(self) -> torch.Tensor:
        return (self.total / self.count).float()


def in_between_frames(video: torch.Tensor, keyframe_every: int = 4) -> torch.Tensor:
    """Frames of an interpolated video (B, N, ...) that are not keyframes (every ``keyframe_every``-th from 0)."""
    keep = torch.arange(video.shape[1], device=video.device) % keyframe_every != 0
    return video[:, keep]


class InBetweenPSNR(PeakSignalNoiseRatio):
    """Mean per-frame PSNR (dB, pixels mapped to [0, 1]) of the in-between frames of interpolated videos
    against the true frames; keyframes (every ``keyframe_every``-th frame from 0) are left out.

    ``update(preds, target)``: videos (B, N, 3, H, W) in [-1, 1] on the same time grid.
    """

    def __init__(self, keyframe_every: int = 4, **kwargs: Any) -> None:
        super().__init__(data_range=1.0, dim=(1, 2, 3), **kwargs)
        self.keyframe_every = keyframe_every

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        if preds.shape != target.shape:
            raise ValueError(f"interpolated {tuple(preds.shape)} and true {tuple(target.shape)} videos differ in "
                             "shape.")
        preds, target = (rearrange((in_between_frames(x.float().clamp(-1, 1), self.keyframe_every) + 1) / 2,
                                   "b f c h w -> (b f) c h w") for x in (preds, target))
        with torch.autocast(preds.device.type, enabled=False):
            super().update(preds, target)


class VideoReconstructionMetrics(nn.Module):
    """Accumulates ``psnr``, ``ssim``, ``mse`` (frame by frame, pixels mapped to [0, 1]), ``temporal_error`` and,
    when built ``with_lpips``, the mean of the LPIPS scores passed to :meth:`update`."""

    def __init__(self, with_lpips: bool = False) -> None:
        super().__init__()
        self.frames = MetricCollection({
            "psnr": PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3)),
            "ssim": StructuralSimilarityIndexMeasure(data_range=1.0),
            "mse": MeanSquaredError(),
        })
        self.temporal_error = TemporalConsistencyError()
        self.lpips = MeanMetric() if with_lpips else None

    def update(self, preds: torch.Tensor, target: torch.Tensor, lpips: torch.Tensor | None = None) -> None:
        """Videos (B, F, 3, H, W) in [-1, 1]; ``lpips``: per-frame scores (B·F,), required when built with LPIPS."""
        preds, target = (((x.float().clamp(-1, 1) + 1) / 2).contiguous() for x in (preds, target))
        # SSIM's E[x^2] - E[x]^2 cancels catastrophically in bf16: keep every metric out of autocast.
        with torch.autocast(preds.device.type, enabled=False):
            self._update(preds, target, lpips)

    def _update(self, preds: torch.Tensor, target: torch.Tensor, lpips: torch.Tensor | None) -> None:
        self.frames.update(rearrange(preds, "b f c h w -> (b f) c h w"), rearrange(target, "b f c h w -> (b f) c h w"))
        self.temporal_error.update(preds, target)
        if self.lpips is not None:
            self.lpips.update(lpips)

    def compute(self) -> dict[str, torch.Tensor]:
        values = {**self.frames.compute(), "temporal_error": self.temporal_error.compute()}
        if self.lpips is not None:
            values["lpips"] = self.lpips.compute()
        return values

    def reset(self) -> None:
        for metric in (self.frames, self.temporal_error, self.lpips):
            if metric is not None:
                metric.reset()


def frame_lpips(lpips: LearnedPerceptualImagePatchSimilarity, preds: torch.Tensor,
                target: torch.Tensor) -> torch.Tensor:
    """Per-frame LPIPS (B·F,) of videos (B, F, 3, H, W) in [-1, 1] (differentiable: also a training loss)."""
    preds, target = (rearrange(x, "b f c h w -> (b f) c h w").float() for x in (preds, target))
    return lpips.net(preds, target).flatten()


def load_lpips(path: str | Path | None, config_key: str = "model.lpips_path") -> LearnedPerceptualImagePatchSimilarity:
    """torchmetrics LPIPS (AlexNet) built offline from a local torch hub directory.

    ``path`` must hold torchvision's AlexNet ImageNet weights as ``checkpoints/alexnet-owt-7be5be79.pth`` (the
    layout of ``~/.cache/torch/hub`` on a machine that has used LPIPS); the LPIPS heads ship with torchmetrics.
    A missing file is an error, never a download.
    """
    root = require_dir(path, config_key)
    weights = Path("checkpoints") / Path(AlexNet_Weights.IMAGENET1K_V1.url).name
    if not (root / weights).is_file():
        raise FileNotFoundError(f"{config_key}={root} has no {weights} (torchvision's AlexNet ImageNet weights); "
                                "LPIPS weights are never downloaded.")
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(root))
    try:
        return LearnedPerceptualImagePatchSimilarity(net_type="alex")
    finally:
        torch.hub.set_dir(previous)
