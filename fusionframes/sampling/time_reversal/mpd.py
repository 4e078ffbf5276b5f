"""Motion Prior Distillation (MPD): a training-free fix of time-reversal sampling (MPD spec).

In the first floor(gamma·S) of S steps MPD does not run the end-conditioned path. It builds the backward
estimate from the forward one instead (spec §3.1-3.2, Eq. 13-17): the backward noise is anchored at the end
keyframe and its frame-to-frame residuals are the forward path's, walked from the end frame backwards. It
blends that estimate into the forward one with weight lam (Eq. 18) and takes a CFG++ Euler step (Eq. 19),
k times with k - 1 re-noisings in between (§3.4, §7 item 3). The base sampler (TRF or ViBiD) runs the
remaining steps unchanged.

Eq. 16-17 are read as the spec recommends ("reversed": backward step i subtracts the forward residual of the
same frame pair, and Eq. 17 uses the flipped sample), the only reading in which the sample's noise cancels;
it equals the closed form xf + (z_end - xf[:, -1]), the forward estimate translated to end at the keyframe.
"literal" (the equations as printed) is kept for ablations only.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from fusionframes.sampling.time_reversal.base import TimeReversalSampler, euler_step, flip, guide, renoise
from fusionframes.sampling.time_reversal.trf import TRFSampler
from fusionframes.sampling.time_reversal.vibid import ViBiDSampler
from fusionframes.utils.validation import check_choice, check_guidance, check_int, check_probability

RESIDUAL_INDEXINGS = ("reversed", "literal")
ROUNDINGS = {"floor": math.floor, "round": round, "ceil": math.ceil}
#: The paper's Table-3 settings per base sampler (spec §4, §7 item 6).
DEFAULTS = {TRFSampler: {"lam": 0.5, "k": 2, "gamma": 0.3}, ViBiDSampler: {"lam": 1.0, "k": 3, "gamma": 0.2}}


def mpd_backward_estimate(x: Tensor, xf: Tensor, z_end: Tensor, sigma: float,
                          residual_indexing: str = "reversed") -> Tensor:
    """The distilled backward x0 estimate flip(x̂'_{0,c*_start}) in forward frame order (B, F, C, h, w).

    x: the sample at ``sigma``; xf: the forward x0 estimate (both (B, F, C, h, w)); z_end: the end keyframe's
    latent (B, C, h, w). Computed in at least float32 (dividing by sigma and multiplying back, spec §7 item 13).
    """
    check_choice("residual_indexing", residual_indexing, RESIDUAL_INDEXINGS)
    dtype = torch.promote_types(x.dtype, torch.float32)
    x, xf, z_end = x.to(dtype), xf.to(dtype), z_end.to(dtype)
    eps_f = (x - xf) / sigma
    residuals = eps_f[:, 1:] - eps_f[:, :-1]  # Eq. 14: residuals[:, m - 1] = Δε_fwd^(m), frames m-1 -> m
    x_flipped = flip(x)
    eps_0 = (x_flipped[:, 0] - z_end) / sigma  # Eq. 15: the backward path's frame 0 is the end keyframe
    # Eq. 16: backward frame i (forward frame F-1-i) subtracts Δε_fwd^(F-i) ("reversed") or Δε_fwd^(i) ("literal").
    steps = flip(residuals) if residual_indexing == "reversed" else residuals
    eps_b = torch.cat([eps_0[:, None], eps_0[:, None] - steps.cumsum(dim=1)], dim=1)
    return flip(x_flipped - sigma * eps_b)  # Eq. 17 in backward order, flipped to forward order


class MPDSampler(TimeReversalSampler):
    """MPD over a ``base`` time-reversal sampler, on its denoiser and schedule.

    gamma: fraction of the steps that distil (``num_mpd_steps`` = ``rounding``(gamma·S), or given); k: updates
    per MPD step; lam: weight of the distilled backward estimate (Eq. 18); guidance_scale: of the forward x0
    estimate (1: the raw conditional estimate, as Alg. 1; guidance comes from the CFG++ step);
    residual_indexing: "reversed" (default) or "literal". gamma, k and lam default to the paper's Table-3
    settings for a TRF or ViBiD base; other bases need them given.
    """

    def __init__(self, base: TimeReversalSampler, gamma: float | None = None, k: int | None = None,
                 lam: float | None = None, guidance_scale: float = 1.0, residual_indexing: str = "reversed",
                 rounding: str = "floor", num_mpd_steps: int | None = None) -> None:
        super().__init__(base.denoiser, base.schedule, base.num_steps)
        defaults = DEFAULTS.get(type(base), {})
        gamma, k, lam = (defaults.get(key) if value is None else value
                         for key, value in (("gamma", gamma), ("k", k), ("lam", lam)))
        if None in (gamma, k, lam):
            raise ValueError(f"gamma, k and lam have no defaults for a {type(base).__name__} base; give all three "
                             f"(defaults exist for {[cls.__name__ for cls in DEFAULTS]}).")
        check_probability("gamma", gamma)
        check_probability("lam", lam)
        check_guidance("guidance_scale", guidance_scale)
        check_choice("residual_indexing", residual_indexing, RESIDUAL_INDEXINGS)
        check_choice("rounding", rounding, ROUNDINGS)
        self.base = base
        self.gamma, self.k, self.lam = gamma, check_int("k", k, 1), lam
        self.guidance_scale = guidance_scale
        self.residual_indexing = residual_indexing
        # round() first: gamma·S in floating point can land just below a whole number (0.29 * 100 = 28.999...).
        default_steps = ROUNDINGS[rounding](round(gamma * self.num_steps, 9))
        self.num_mpd_steps = check_int("num_mpd_steps", default_steps if num_mpd_steps is None else num_mpd_steps,
                                       0, self.num_steps)

    def distill_step(self, x: Tensor, i: int, start: Tensor, end: Tensor,
                     generator: torch.Generator | None = None) -> Tensor:
        """One MPD step sigma_i -> sigma_{i+1} (Eq. 13-19, k updates); only the start-conditioned path runs."""
        sigma, sigma_next = self.sigmas[i], self.sigmas[i + 1]
        for j in range(self.k):
            if j:  # back from sigma_{i+1} to sigma_i between updates, not after the last (spec §7 item 3)
                x = renoise(x, sigma, sigma_next, generator)
            uncond, cond = self.pair(x, i, start)
            xf = guide(uncond, cond, self.guidance_scale)
            xb = mpd_backward_estimate(x, xf, end, sigma, self.residual_indexing).to(xf.dtype)
            x = euler_step(torch.lerp(xf, xb, self.lam), x, sigma, sigma_next, uncond)  # Eq. 18, 19
        return x

    def step(self, x: Tensor, i: int, start: Tensor, end: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if i < self.num_mpd_steps:
            return self.distill_step(x, i, start, end, generator)
        return self.base.step(x, i, start, end, generator)
