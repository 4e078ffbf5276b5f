"""Sampling with per-frame (vectorised) timesteps (FVDM §2.5).

The scalar sampler clock visits t_K > ... > t_1 as usual; every frame moves from its own level tau(t_k) to
tau(t_{k-1}). Given (conditioning) frames are held at timestep 0 and the others follow t, so one model does
text-to-video ([t, ..., t]), image-to-video ([0, t, ..., t]), interpolation ([0, t, ..., t, 0]) and
long-video extension ([0] * M + [t] * (F - M)) with the same loop; only the mask of held frames changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from diffusers import DDIMScheduler
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor
from tqdm.auto import tqdm

from fusionframes.diffusion.schedule import NoiseSchedule

COND_FRAME_MODES = ("replace", "free")

#: ``denoise(x_t (B, F, C, H, W), tau (B, F) long) -> prediction`` in the schedule's prediction_type.
FrameDenoiser = Callable[[Tensor, Tensor], Tensor]


def frame_timesteps(t: int, held: Tensor) -> Tensor:
    """Per-frame timesteps (B, F) long at sampler time ``t``: 0 for ``held`` (B, F) frames, ``t`` for the
    others; past the last step (``t < 0``) every frame is -1, i.e. clean (alpha_bar = 1)."""
    if t < 0:
        return torch.full(held.shape, -1, dtype=torch.long, device=held.device)
    return torch.where(held, 0, t).long()


def ddim_step(scheduler: DDIMScheduler, model_output: Tensor, tau: Tensor, tau_prev: Tensor, sample: Tensor,
              eta: float = 0.0, generator: torch.Generator | None = None,
              variance_noise: Tensor | None = None) -> Tensor:
    """One DDIM step x_tau -> x_tau_prev with per-frame timesteps ``tau``, ``tau_prev`` (B, F) long (-1 = clean).

    diffusers' ``DDIMScheduler.step`` takes one timestep for the whole sample, so this writes its update out
    with the cumulative alphas gathered per frame (and ``final_alpha_cumprod`` for -1), term by term in the
    same order: where every frame has the same timesteps the result is bit-identical to diffusers'.
    model_output, sample (B, F, C, H, W) -> previous sample of the same shape.
    """
    shape = tau.shape + (1,) * (sample.ndim - tau.ndim)
    abar = scheduler.alphas_cumprod.to(sample.device)
    final = scheduler.final_alpha_cumprod.to(sample.device)

    def alpha_prod(t: Tensor) -> Tensor:
        return torch.where(t >= 0, abar[t.clamp(min=0)], final).reshape(shape)

    alpha_prod_t, alpha_prod_t_prev = alpha_prod(tau), alpha_prod(tau_prev)
    beta_prod_t = 1 - alpha_prod_t
    if scheduler.config.prediction_type == "epsilon":
        pred_original_sample = (sample - beta_prod_t ** (0.5) * model_output) / alpha_prod_t ** (0.5)
        pred_epsilon = model_output
    elif scheduler.config.prediction_type == "v_prediction":
        pred_original_sample = (alpha_prod_t**0.5) * sample - (beta_prod_t**0.5) * model_output
        pred_epsilon = (alpha_prod_t**0.5) * model_output + (beta_prod_t**0.5) * sample
    else:
        raise ValueError(f"prediction_type={scheduler.config.prediction_type!r} is not supported by the per-frame "
                         "DDIM step; use 'epsilon' or 'v_prediction'.")
    beta_prod_t_prev = 1 - alpha_prod_t_prev
    variance = (beta_prod_t_prev / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)
    std_dev_t = eta * variance ** (0.5)
    pred_sample_direction = (1 - alpha_prod_t_prev - std_dev_t**2) ** (0.5) * pred_epsilon
    prev_sample = alpha_prod_t_prev ** (0.5) * pred_original_sample + pred_sample_direction
    if eta > 0:
        if variance_noise is None:
            variance_noise = randn_tensor(model_output.shape, generator=generator, device=model_output.device,
                                          dtype=model_output.dtype)
        prev_sample = prev_sample + std_dev_t * variance_noise
    return prev_sample.to(sample.dtype)


@torch.no_grad()
def sample_per_frame(
    denoise: FrameDenoiser,
    shape: Sequence[int],
    schedule: NoiseSchedule,
    num_steps: int,
    held: Tensor | None = None,
    clean: Tensor | None = None,
    cond_frame_mode: str = "replace",
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    x_T: Tensor | None = None,
    progress: bool = True,
    desc: str = "sampling",
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """DDIM sampling of a video of ``shape`` (B, F, C, H, W) with the frames ``held`` (B, F) bool given by
    ``clean`` (B, F, C, H, W) and held at timestep 0.

    The network sees the clean latents of held frames and per-frame timesteps (0 for held frames, the
    sampler's t for the others). ``cond_frame_mode``: "replace" re-inserts the clean latents after every step,
    so they are returned exactly; "free" lets the DDIM step update them at timestep 0 (FVDM's official code:
    they drift slightly). With nothing held this is ``sample(kind="ddim")`` with (B, F) timesteps, bit for bit;
    x_T is drawn the same way (``generator``, ``device``, ``dtype``) unless given.
    """
    if not 1 <= num_steps <= schedule.num_train_timesteps:
        raise ValueError(f"num_steps={num_steps} is out of range; use 1..{schedule.num_train_timesteps}.")
    if cond_frame_mode not in COND_FRAME_MODES:
        raise ValueError(f"cond_frame_mode={cond_frame_mode!r} is not supported; use one of {COND_FRAME_MODES}.")
    if x_T is None:
        device = torch.device(device or schedule.alphas_cumprod.device)
        x = randn_tensor(tuple(shape), generator=generator, device=device, dtype=dtype)
    elif tuple(x_T.shape) != tuple(shape):
        raise ValueError(f"x_T has shape {tuple(x_T.shape)} but shape={tuple(shape)}; they must match.")
    else:
        x = x_T
    if held is None:
        held = torch.zeros(shape[:2], dtype=torch.bool, device=x.device)
    elif tuple(held.shape) != tuple(shape[:2]):
        raise ValueError(f"held has shape {tuple(held.shape)}; expected (B, F) = {tuple(shape[:2])}.")
    if held.any():
        if clean is None or tuple(clean.shape) != tuple(shape):
            raise ValueError(f"held frames need clean latents of shape {tuple(shape)}, got "
                             f"{None if clean is None else tuple(clean.shape)}.")
        mask = held[(...,) + (None,) * (x.ndim - 2)]
        x = torch.where(mask, clean.to(x.dtype), x)
    scheduler = schedule.scheduler("ddim")
    scheduler.set_timesteps(num_steps, device=x.device)
    stride = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    for t in tqdm(scheduler.timesteps, desc=desc, disable=not progress):
        tau, tau_prev = frame_timesteps(int(t), held), frame_timesteps(int(t) - stride, held)
        x = ddim_step(scheduler, denoise(x, tau), tau, tau_prev, x, eta, generator)
        if cond_frame_mode == "replace" and held.any():
            x = torch.where(mask, clean.to(x.dtype), x)
    return x
