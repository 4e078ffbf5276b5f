"""Frozen MoVQ as a latent codec for images and videos (the latent space every diffusion stage works in)."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import VQModel
from einops import rearrange
from torch import nn

from fusionframes.utils.pretrained import load_frozen, save_model


class LatentCodec(nn.Module):
    """Encodes pixels to unit-variance MoVQ latents and decodes them back, frame by frame.

    Latents are the unquantised encoder output times ``movq.config.scaling_factor`` (Kandinsky 3 uses
    MoVQ latents unquantised). Accepts images (B, 3, H, W) or videos (B, F, 3, H, W); latents have
    ``movq.config.latent_channels`` channels at 1/``factor`` of the resolution.
    """

    def __init__(self, movq: VQModel) -> None:
        super().__init__()
        self.movq = movq

    @classmethod
    def from_pretrained(cls, path: str | Path, config_key: str = "model.movq_path") -> LatentCodec:
        return cls(load_frozen(VQModel, path, config_key))

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype = torch.float16) -> Path:
        return save_model(self.movq, directory, dtype)

    @property
    def factor(self) -> int:
        return 2 ** (len(self.movq.config.block_out_channels) - 1)

    @property
    def channels(self) -> int:
        return self.movq.config.latent_channels

    @property
    def scale(self) -> float:
        return float(self.movq.config.scaling_factor)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, [F,] 3, H, W) in [-1, 1] -> (B, [F,] C, H/factor, W/factor)."""
        video = x.ndim == 5
        if video:
            b = x.shape[0]
            x = rearrange(x, "b f c h w -> (b f) c h w")
        z = self.movq.encode(x.to(self.movq.dtype)).latents * self.scale
        return rearrange(z, "(b f) c h w -> b f c h w", b=b) if video else z

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, [F,] C, h, w) latents -> (B, [F,] 3, h*factor, w*factor) pixels in about [-1, 1]."""
        video = z.ndim == 5
        if video:
            b = z.shape[0]
            z = rearrange(z, "b f c h w -> (b f) c h w")
        x = self.movq.decode(z.to(self.movq.dtype) / self.scale, force_not_quantize=True).sample
        return rearrange(x, "(b f) c h w -> b f c h w", b=b) if video else x
