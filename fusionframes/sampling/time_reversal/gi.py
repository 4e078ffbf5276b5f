"""Dual-directional sampling of Generative Inbetweening (GI spec §3.4, Alg. 2 with the [code]'s recurrence).

Every pass of every step, in the EDM view of ``denoiser`` (x = z + sigma n):

    x0_fwd = D_fwd(x; start)                    forward model, frame 0 given; its temporal attention maps recorded
    x0_bwd = flip(D_bwd(flip(x); end))          backward model (experiment=gi_backward) on the time-flipped video,
                                                frame 0 given (the end keyframe); its temporal attention applies the
                                                forward maps reversed in time
    x0     = (1 - w) x0_fwd + w x0_bwd          w: the backward weight; frames 0 and F-1 := start, end
    x      = x0 + (sigma_next / sigma)(x - x0)  EDM Euler = DDIM step

Both paths are classifier-free guided; the backward model's unconditional branch gets the forward
unconditional maps (both batch [cond, uncond] alike, the [code]'s choice). Per-step recurrence: during the first
``recurrence_ratio`` of the steps each step is repeated ``recurrence`` more times, x first re-noised from
sigma_next back to sigma. Fusing x0 equals fusing eps or v (x0 is affine in each, with the same coefficients for
both paths). The given keyframes replace the fused estimate at their frames, so they are returned exactly and both
paths read them noised consistently ([inferred], as TRF's ``hold_keyframes``; the paper averages the forward
path's start frame with the backward path's estimate of it).
"""

from __future__ import annotations

import torch
from torch import Tensor

from fusionframes.diffusion import NoiseSchedule
from fusionframes.models.backward_motion import BackwardKeyframeUNet, record_attention_maps
from fusionframes.sampling.time_reversal.base import TimeReversalSampler, euler_step, flip, guide, renoise
from fusionframes.sampling.time_reversal.denoiser import I2VDenoiser
from fusionframes.utils.validation import check_guidance, check_int, check_number


class GISampler(TimeReversalSampler):
    """Keyframe inbetweening with a forward image-to-video model and its backward-motion copy.

    ``denoiser``: the ``I2VDenoiser`` of the FVDM keyframe model; ``backward``: the ``I2VDenoiser`` of its
    ``BackwardKeyframeUNet``, with the same text and positions. ``backward_weight``: w in [0, 1] for every frame
    (0.5: the paper's average; 0: the forward path alone) or "linear" (w = f / (F-1): frame 0 forward, frame F-1
    backward, the [code]'s weighted average). ``recurrence``: R extra passes per step in the first
    ``recurrence_ratio`` of the steps (the [code]: 5 and 0.5).
    """

    def __init__(self, denoiser: I2VDenoiser, schedule: NoiseSchedule, backward: I2VDenoiser, num_steps: int = 25,
                 guidance_scale: float = 5.0, backward_weight: float | str = 0.5, recurrence: int = 5,
                 recurrence_ratio: float = 0.5) -> None:
        super().__init__(denoiser, schedule, num_steps)
        if not isinstance(getattr(backward, "model", None), BackwardKeyframeUNet):
            raise TypeError("GI's backward denoiser must wrap a BackwardKeyframeUNet (an export of "
                            f"experiment=gi_backward), got {type(getattr(backward, 'model', backward)).__name__}.")
        if backward_weight != "linear":
            check_number("backward_weight", backward_weight, 0.0, 1.0, hint=" or 'linear'")
        check_guidance("guidance_scale", guidance_scale)
        check_int("recurrence", recurrence, 0)
        check_number("recurrence_ratio", recurrence_ratio, 0.0, 1.0)
        self.backward = backward
        self.guidance_scale = guidance_scale
        self.backward_weight = backward_weight
        self.recurrence = recurrence
        self.repeated_steps = int(self.num_steps * recurrence_ratio)

    def weights(self, x: Tensor) -> Tensor | float:
        """The backward weight w: a float, or (1, F, 1, 1, 1) for "linear"."""
        if self.backward_weight != "linear":
            return float(self.backward_weight)
        return torch.linspace(0, 1, x.shape[1], device=x.device, dtype=x.dtype).view(1, -1, 1, 1, 1)

    def fused_x0(self, x: Tensor, i: int, start: Tensor, end: Tensor) -> Tensor:
        """Fused x0 (B, F, C, h, w) at step ``i``; the forward call records the maps the backward call reads."""
        forward = guide(*self.pair(x, i, start), self.guidance_scale)
        backward = flip(guide(*self.backward.pair(flip(x), self.timesteps[i], end), self.guidance_scale))
        x0 = torch.lerp(forward, backward, self.weights(x))
        x0[:, 0], x0[:, -1] = start, end
        return x0

    def step(self, x: Tensor, i: int, start: Tensor, end: Tensor, generator: torch.Generator | None = None) -> Tensor:
        sigma, sigma_next = self.sigmas[i], self.sigmas[i + 1]
        for repeat in range(1 + (self.recurrence if i < self.repeated_steps else 0)):
            if repeat:
                x = renoise(x, sigma, sigma_next, generator)
            x = euler_step(self.fused_x0(x, i, start, end), x, sigma, sigma_next)
        return x

    @torch.no_grad()
    def sample(self, start: Tensor, end: Tensor, num_frames: int, generator: torch.Generator | None = None,
               progress: bool = False) -> Tensor:
        """``TimeReversalSampler.sample`` with the forward model recording its maps for the backward one."""
        maps = self.backward.model.maps
        try:
            with record_attention_maps(self.denoiser.model, maps):
                return super().sample(start, end, num_frames, generator, progress)
        finally:
            maps.clear()
