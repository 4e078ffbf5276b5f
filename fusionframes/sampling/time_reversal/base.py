"""Machinery shared by the time-reversal samplers: the EDM Euler step, re-noising, time flips and the step loop.

A time-reversal sampler fills the frames between two keyframes with an image-to-video denoiser
(``denoiser.I2VDenoiser``): a forward path denoises the video conditioned on the start keyframe as its first
frame, a backward path denoises the time-flipped video conditioned on the end keyframe, and the sampler
combines the two at every step. Subclasses write one step, x at sigma_i -> x at sigma_{i+1}; ``sample`` draws
the initial noise and runs the loop. Samples are in the EDM view, x = z + sigma n (B, F, C, h, w).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Protocol

import torch
from diffusers.utils.torch_utils import randn_tensor
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from tqdm.auto import tqdm

from fusionframes.diffusion import NoiseSchedule, classifier_free_guidance
from fusionframes.sampling.time_reversal.denoiser import sigma_schedule
from fusionframes.utils.validation import check_int


class PairDenoiser(Protocol):
    """What the samplers need of ``I2VDenoiser``: (unconditional, conditional) x0 (B, F, C, h, w) of the EDM
    sample ``x`` at training timestep ``t``, frame 0 given by ``first`` (B, C, h, w)."""

    def pair(self, x: Tensor, t: int, first: Tensor) -> tuple[Tensor, Tensor]: ...


def flip(x: Tensor) -> Tensor:
    """Reverse the time axis of (B, F, ...)."""
    return torch.flip(x, dims=[1])


def guide(uncond: Tensor, cond: Tensor, scale: float) -> Tensor:
    """Classifier-free-guided x0; scale 1 returns ``cond`` itself (so unguided runs are bit-exact)."""
    return cond if scale == 1.0 else classifier_free_guidance(cond, uncond, scale)


def euler_step(x0: Tensor, x: Tensor, sigma: float, sigma_next: float, direction: Tensor | None = None) -> Tensor:
    """EDM Euler step x0 + (sigma_next / sigma)(x - d) of x (B, F, C, h, w) at ``sigma``: d = x0 (default) is
    the plain step (a DDIM step, eta = 0); d = the unconditional x0 is the CFG++ step (Chung et al. 2025)."""
    return x0 + (sigma_next / sigma) * (x - (x0 if direction is None else direction))


def renoise(x: Tensor, sigma: float, sigma_next: float, generator: torch.Generator | None = None) -> Tensor:
    """x at ``sigma_next`` back up to ``sigma``: x + sqrt(sigma^2 - sigma_next^2) n, n ~ N(0, I)."""
    noise = randn_tensor(tuple(x.shape), generator=generator, device=x.device, dtype=x.dtype)
    return x + (sigma**2 - sigma_next**2) ** 0.5 * noise


class TimeReversalSampler(ABC):
    """Inbetweening of two keyframes with an image-to-video ``denoiser`` over a ``num_steps``-step DDIM
    schedule of ``schedule`` (``denoiser.sigma_schedule``)."""

    def __init__(self, denoiser: PairDenoiser, schedule: NoiseSchedule, num_steps: int = 25) -> None:
        self.denoiser = denoiser
        self.schedule = schedule
        self.num_steps = check_int("num_steps", num_steps, 1)
        timesteps, sigmas = sigma_schedule(schedule, num_steps)
        self.timesteps: list[int] = timesteps.tolist()
        self.sigmas: list[float] = sigmas.tolist()

    def pair(self, x: Tensor, i: int, first: Tensor, backward: bool = False) -> tuple[Tensor, Tensor]:
        """(unconditional, conditional) x0 (B, F, C, h, w) at step ``i``: the forward path conditioned on ``first``
        as frame 0, or with ``backward`` the path on flip(x) with ``first`` as its frame 0 (the video's last
        frame), its estimates flipped back to forward frame order."""
        if not backward:
            return self.denoiser.pair(x, self.timesteps[i], first)
        uncond, cond = self.denoiser.pair(flip(x), self.timesteps[i], first)
        return flip(uncond), flip(cond)

    @abstractmethod
    def step(self, x: Tensor, i: int, start: Tensor, end: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x (B, F, C, h, w) at ``self.sigmas[i]`` -> x at ``self.sigmas[i + 1]``."""

    @torch.no_grad()
    def sample(self, start: Tensor, end: Tensor, num_frames: int, generator: torch.Generator | None = None,
               progress: bool = False) -> Tensor:
        """Latents (B, F, C, h, w) of ``num_frames`` frames from keyframe latents ``start`` and ``end`` (B, C, h, w).

        The initial noise has the variance sigma_0^2 + 1 of the EDM sample at the first timestep (a unit-variance
        VP sample); frame 0 and frame F - 1 of the result are ``start`` and ``end`` exactly (as FVDM's "replace"
        mode returns its given frames).
        """
        if start.ndim != 4 or start.shape != end.shape:
            raise ValueError(f"start and end must be keyframe latents of one shape (B, C, h, w), got "
                             f"{tuple(start.shape)} and {tuple(end.shape)}.")
        check_int("num_frames", num_frames, 3)
        shape = (start.shape[0], num_frames, *start.shape[1:])
        x = randn_tensor(shape, generator=generator, device=start.device, dtype=start.dtype)
        x = x * (self.sigmas[0] ** 2 + 1) ** 0.5
        for i in tqdm(range(self.num_steps), desc=type(self).__name__, disable=not progress):
            x = self.step(x, i, start, end, generator)
        x[:, 0], x[:, -1] = start, end
        return x


def build_sampler(config: Mapping | DictConfig, **runtime: Any) -> TimeReversalSampler:
    """A sampler from a ``conf/inbetween`` config: a ``_target_`` class and its settings, where a wrapper (MPD)
    nests its base sampler's config under ``base``. ``runtime`` objects (``denoiser``, ``schedule``, ...) go to
    the innermost sampler."""
    config = OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else dict(config)
    base = config.pop("base", None)
    if base is None:
        return instantiate(config, **runtime)
    return instantiate(config, base=build_sampler(base, **runtime))
