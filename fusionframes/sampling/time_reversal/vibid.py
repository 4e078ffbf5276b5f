"""ViBiD (ViBiDSampler, Yang et al. 2025): sequential forward and backward denoising with re-noising between.

Every step (MPD spec §2.4, Eq. 8-10): a forward half-step conditioned on the start keyframe takes x from
sigma_i to sigma_{i+1}, x is re-noised back to sigma_i, and a backward half-step on flip(x) conditioned on the
end keyframe takes it to sigma_{i+1}. As in ViBiD's code the x0 estimate is CFG++-guided (scale 1: the
conditional estimate, stepped along the unconditional one) and DDS pins the far keyframe: the forward
half's last frame is the end keyframe and the backward half's last frame (the video's first) the start one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fusionframes.diffusion import NoiseSchedule
from fusionframes.sampling.time_reversal.base import (
    PairDenoiser,
    TimeReversalSampler,
    euler_step,
    flip,
    guide,
    renoise,
)
from fusionframes.utils.validation import check_guidance


class ViBiDSampler(TimeReversalSampler):
    """Sequential time-reversal sampling.

    guidance_scale: of the x0 estimate (with CFG++ ViBiD's scale, in [0, 1]; 1 is the conditional estimate);
    cfgpp: step along the unconditional x0 (CFG++) rather than the guided one; dds: replace the far end
    frame of each half-step's x0 estimate by its keyframe.
    """

    def __init__(self, denoiser: PairDenoiser, schedule: NoiseSchedule, num_steps: int = 25,
                 guidance_scale: float = 1.0, cfgpp: bool = True, dds: bool = True) -> None:
        super().__init__(denoiser, schedule, num_steps)
        check_guidance("guidance_scale", guidance_scale)
        self.guidance_scale = guidance_scale
        self.cfgpp = cfgpp
        self.dds = dds

    def half_step(self, x: Tensor, i: int, first: Tensor, last: Tensor) -> Tensor:
        """One Euler step sigma_i -> sigma_{i+1} of x (B, F, C, h, w) conditioned on ``first`` as frame 0, with
        ``last`` (B, C, h, w) as frame F - 1 of the x0 estimate if DDS is on."""
        uncond, cond = self.pair(x, i, first)
        x0 = guide(uncond, cond, self.guidance_scale)
        if self.dds:
            x0[:, -1] = last
        return euler_step(x0, x, self.sigmas[i], self.sigmas[i + 1], uncond if self.cfgpp else None)

    def step(self, x: Tensor, i: int, start: Tensor, end: Tensor, generator: torch.Generator | None = None) -> Tensor:
        x = renoise(self.half_step(x, i, start, end), self.sigmas[i], self.sigmas[i + 1], generator)
        return flip(self.half_step(flip(x), i, end, start))
