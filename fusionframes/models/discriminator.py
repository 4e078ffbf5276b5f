"""Patch discriminator for adversarial fine-tuning of decoders."""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn


class PatchDiscriminator3D(nn.Module):
    """PatchGAN over space and time: videos (B, F, 3, H, W) -> logits (B, 1, F, H / 2^layers, W / 2^layers).

    Each layer halves height and width with a (3, 4, 4) Conv3d and keeps the frames, so every logit judges a
    space-time patch, flicker included.
    """

    def __init__(self, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        if channels < 1 or layers < 1:
            raise ValueError(f"PatchDiscriminator3D needs channels >= 1 and layers >= 1, got {channels}, {layers}.")
        blocks: list[nn.Module] = [nn.Conv3d(3, channels, (3, 4, 4), (1, 2, 2), 1), nn.LeakyReLU(0.2)]
        width = channels
        for _ in range(layers - 1):
            blocks += [nn.Conv3d(width, 2 * width, (3, 4, 4), (1, 2, 2), 1),
                       nn.GroupNorm(math.gcd(32, 2 * width), 2 * width), nn.LeakyReLU(0.2)]
            width *= 2
        blocks.append(nn.Conv3d(width, 1, 3, padding=1))
        self.net = nn.Sequential(*blocks)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.net(rearrange(video, "b f c h w -> b c f h w"))
