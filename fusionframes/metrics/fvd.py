"""Fréchet Video Distance with the StyleGAN-V protocol (fixed-length clips, features of a video detector)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance


def first_frames(videos: torch.Tensor, num_frames: int, name: str) -> torch.Tensor:
    """The first ``num_frames`` frames of videos (B, F, 3, H, W); fewer frames is a clear error."""
    if videos.ndim != 5:
        raise ValueError(f"{name} takes videos (B, F, 3, H, W), got shape {tuple(videos.shape)}.")
    if videos.shape[1] < num_frames:
        raise ValueError(f"{name} takes the first {num_frames} frames of each video, but the videos have "
                         f"{videos.shape[1]}; generate longer videos or lower num_frames.")
    return videos[:, :num_frames]


class FrechetVideoDistance(FrechetInceptionDistance):
    """FVD: the Fréchet distance between Gaussians fitted to detector features of real and generated clips.

    StyleGAN-V protocol: every video contributes its first ``num_frames`` (16) frames as one clip; the
    detector (StyleGAN-V's I3D TorchScript, or the shapes-world classifier; see
    ``fusionframes.metrics.detectors``) maps clips (B, F, 3, H, W) in [-1, 1] to features (B, D); means and
    unbiased covariances accumulate in float64 and ``||mu_r - mu_g||² + Tr(S_r + S_g - 2 (S_r S_g)^½)``
    is computed by torchmetrics' Fréchet distance. ``update(videos, real)`` as in FID.
    """

    def __init__(self, detector: nn.Module, num_frames: int = 16, reset_real_features: bool = True,
                 **kwargs: Any) -> None:
        if not hasattr(detector, "num_features"):
            raise TypeError("the FVD detector needs a num_features attribute (the feature dimension).")
        super().__init__(feature=detector, reset_real_features=reset_real_features, **kwargs)
        self.num_frames = num_frames

    def update(self, videos: torch.Tensor, real: bool) -> None:
        """Videos (B, F, 3, H, W) in [-1, 1], F >= num_frames; ``real`` says which distribution they join."""
        with torch.autocast(videos.device.type, enabled=False):
            super().update(first_frames(videos, self.num_frames, "FVD").float(), real)
