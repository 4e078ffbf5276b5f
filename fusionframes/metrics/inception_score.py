"""Inception Score of videos on their first 16 frames (paper §5), with a local classifier."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchmetrics.image.inception import InceptionScore

from fusionframes.metrics.fvd import first_frames


class VideoInceptionScore(InceptionScore):
    """IS = exp(E_x KL(p(y|x) || p(y))) over the predictions of ``classifier`` on the first ``num_frames``
    frames of each video, mean and std over ``splits`` (torchmetrics' computation).

    ``classifier`` maps videos (B, F, 3, H, W) in [-1, 1] to logits (N, K): StyleGAN's Inception-v3 gives one
    prediction per frame (N = B·F, the paper's "IS on the first 16 frames"), the shapes-world classifier one
    per clip over its 144 colour x shape x motion classes (an IS-like score whose maximum is 144).
    """

    def __init__(self, classifier: nn.Module, num_frames: int = 16, splits: int = 10, **kwargs: Any) -> None:
        super().__init__(feature=classifier, splits=splits, **kwargs)
        self.num_frames = num_frames

    def update(self, videos: torch.Tensor) -> None:
        """Videos (B, F, 3, H, W) in [-1, 1], F >= num_frames."""
        with torch.autocast(videos.device.type, enabled=False):
            super().update(first_frames(videos, self.num_frames, "IS").float())
