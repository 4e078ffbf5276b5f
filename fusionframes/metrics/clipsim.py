"""CLIPSIM: mean CLIP similarity between a video's frames and its prompt (GODIVA; paper §5, MSR-VTT)."""

from __future__ import annotations

from typing import Any

import torch
from einops import rearrange
from torchmetrics.multimodal.clip_score import CLIPScore

from fusionframes.metrics.detectors import load_clip, to_uint8_video


class CLIPSIM(CLIPScore):
    """Average over frames and videos of the cosine similarity between CLIP image and text embeddings.

    torchmetrics' CLIPScore (100 x cosine, floored at 0) with a CLIP loaded from a local transformers
    directory (``clip_path``, config key ``config_key``), divided by 100 so values read like the paper's
    0.2976. ``update(videos, prompts)``: videos (B, F, 3, H, W) in [-1, 1] and B prompts.
    """

    def __init__(self, clip_path: str, config_key: str = "metrics.clipsim.clip_path", **kwargs: Any) -> None:
        model, processor = load_clip(clip_path, config_key)
        super().__init__(model_name_or_path=lambda: (model, processor), **kwargs)

    def update(self, videos: torch.Tensor, prompts: list[str]) -> None:
        if len(prompts) != videos.shape[0]:
            raise ValueError(f"CLIPSIM needs one prompt per video, got {len(prompts)} prompts for "
                             f"{videos.shape[0]} videos.")
        frames = rearrange(to_uint8_video(videos), "b f c h w -> (b f) c h w")
        super().update(frames, [p for p in prompts for _ in range(videos.shape[1])])

    def compute(self) -> torch.Tensor:
        return super().compute() / 100
