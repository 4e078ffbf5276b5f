"""Ancestral / DDIM sampling loop over a diffusers scheduler."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor
from tqdm.auto import tqdm

from fusionframes.diffusion.cuda_graph import GraphedDenoiser
from fusionframes.diffusion.schedule import NoiseSchedule

Denoiser = Callable[[Tensor, Tensor], Tensor]


@torch.no_grad()
def sample(
    denoise: Denoiser,
    shape: Sequence[int],
    schedule: NoiseSchedule,
    num_steps: int,
    kind: str = "ddim",
    generator: torch.Generator | None = None,
    progress: bool = True,
    desc: str = "sampling",
    eta: float = 0.0,
    x_T: Tensor | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    cuda_graph: bool = False,
) -> Tensor:
    """Run the reverse process from x_T to x0 with ``schedule.scheduler(kind)``.

    Args:
        denoise: ``denoise(x_t, t) -> pred`` with x_t of ``shape`` (B, ...), t long (B,), pred in the
            schedule's prediction_type (eps or v); wrap the model with guidance here.
        shape: (B, [F,] C, H, W) of the sample.
        num_steps: 1 <= num_steps <= schedule.num_train_timesteps.
        kind: "ddim" (``eta`` = 0 deterministic, 1 ancestral-like) or "ddpm" (ancestral; eta must be 0).
        generator: seeds x_T (when not given) and the stochastic steps.
        x_T: starting noise of ``shape``; otherwise standard normal on ``device`` (default: the
            schedule's device) in ``dtype``.
        cuda_graph: on CUDA, capture ``denoise`` once and replay it for the other steps (``GraphedDenoiser``);
            ignored on other devices.
    Returns:
        x0 of ``shape``.
    """
    if not 1 <= num_steps <= schedule.num_train_timesteps:
        raise ValueError(f"num_steps={num_steps} is out of range; use 1..{schedule.num_train_timesteps}.")
    if kind == "ddpm" and eta != 0:
        raise ValueError(f"eta={eta} applies only to kind='ddim'; use eta=0 with kind='ddpm'.")
    scheduler = schedule.scheduler(kind)
    if x_T is None:
        device = torch.device(device or schedule.alphas_cumprod.device)
        x = randn_tensor(tuple(shape), generator=generator, device=device, dtype=dtype)
    elif tuple(x_T.shape) != tuple(shape):
        raise ValueError(f"x_T has shape {tuple(x_T.shape)} but shape={tuple(shape)}; they must match.")
    else:
        x = x_T
    scheduler.set_timesteps(num_steps, device=x.device)
    step_kwargs = {"eta": eta} if kind == "ddim" else {}
    if cuda_graph and x.is_cuda:
        denoise = GraphedDenoiser(denoise)
    for t in tqdm(scheduler.timesteps, desc=desc, disable=not progress):
        t_batch = torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)
        x = scheduler.step(denoise(x, t_batch), t, x, generator=generator, **step_kwargs).prev_sample
    return x
