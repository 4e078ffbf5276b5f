"""TRF (Time Reversal Fusion, Feng et al. 2024): parallel fusion of the forward and backward paths.

Every step (MPD spec §2.3, Eq. 5-7) the forward path denoises x conditioned on the start keyframe, the
backward path denoises flip(x) conditioned on the end keyframe, both with classifier-free guidance, and the
two Euler steps are fused: alpha x_fwd + (1 - alpha) flip(x_bwd). The Euler step is affine in x0 with scalar
coefficients, so this is one step from the fused x0, which is how it is computed here. TRF's resampling
jumps are not reproduced (the spec's default, §7 item 8).
"""

from __future__ import annotations

import torch
from torch import Tensor

from fusionframes.diffusion import NoiseSchedule
from fusionframes.sampling.time_reversal.base import PairDenoiser, TimeReversalSampler, euler_step, guide
from fusionframes.utils.validation import check_guidance, check_probability


class TRFSampler(TimeReversalSampler):
    """Parallel time-reversal fusion.

    alpha: forward weight, a number in [0, 1] for every frame or "linear" (TRF's code: 1 at frame 0 down to
    0 at frame F - 1); guidance_scale: classifier-free guidance of both paths; hold_keyframes: the fused x0
    takes the keyframes at frames 0 and F - 1 (each is known exactly; the sample's end frames then carry
    the keyframe plus the running noise, x = z + sigma n, which the other path reads as its last frame).
    """

    def __init__(self, denoiser: PairDenoiser, schedule: NoiseSchedule, num_steps: int = 25,
                 guidance_scale: float = 5.0, alpha: float | str = 0.5, hold_keyframes: bool = True) -> None:
        super().__init__(denoiser, schedule, num_steps)
        check_guidance("guidance_scale", guidance_scale)
        if alpha != "linear":
            check_probability("alpha", alpha)
        self.guidance_scale = guidance_scale
        self.alpha = alpha
        self.hold_keyframes = hold_keyframes

    def weights(self, x: Tensor) -> Tensor | float:
        """Forward weight alpha: a float, or (1, F, 1, 1, 1) for "linear"."""
        if self.alpha != "linear":
            return float(self.alpha)
        return torch.linspace(1, 0, x.shape[1], device=x.device, dtype=x.dtype).view(1, -1, 1, 1, 1)

    def step(self, x: Tensor, i: int, start: Tensor, end: Tensor, generator: torch.Generator | None = None) -> Tensor:
        forward = guide(*self.pair(x, i, start), self.guidance_scale)
        backward = guide(*self.pair(x, i, end, backward=True), self.guidance_scale)
        alpha = self.weights(x)
        x0 = alpha * forward + (1 - alpha) * backward
        if self.hold_keyframes:
            x0[:, 0], x0[:, -1] = start, end
        return euler_step(x0, x, self.sigmas[i], self.sigmas[i + 1])
