"""The image-to-video denoiser shared by the time-reversal samplers, in the EDM (variance-exploding) view.

The image-to-video model is the FVDM keyframe model: a ``KeyframeUNet`` whose first frame is given and held
at timestep 0 while the other frames are at the sampler's timestep t (``sampling.fvdm``: the "i2v" task).
The GI and MPD specs write their samplers for EDM samples x = z + sigma n. A variance-preserving model at
training timestep t is the same denoiser at sigma_t = sqrt((1 - abar_t) / abar_t), fed
x_vp = sqrt(abar_t) x (k-diffusion's ``DiscreteVDDPMDenoiser`` makes the same conversion), so an EDM Euler
step x0 + (sigma_next / sigma)(x - x0) between two of these sigmas is exactly a DDIM step (eta = 0).
"""

from __future__ import annotations

import torch
from torch import Tensor

from fusionframes.diffusion import NoiseSchedule
from fusionframes.models.keyframe_unet import KeyframeUNet


def sigma_schedule(schedule: NoiseSchedule, num_steps: int) -> tuple[Tensor, Tensor]:
    """(timesteps (S,) long, decreasing; sigmas (S + 1,) float32 with a final 0) of a ``num_steps``-step DDIM
    schedule, sigma_i = sqrt((1 - abar_{t_i}) / abar_{t_i})."""
    if schedule.scheduler_config["rescale_betas_zero_snr"]:
        raise ValueError("zero_terminal_snr=True has sigma = inf at the last timestep, which the EDM view of the "
                         "time-reversal samplers cannot represent; use a schedule with zero_terminal_snr=False.")
    if not 1 <= num_steps <= schedule.num_train_timesteps:
        raise ValueError(f"num_steps={num_steps} is out of range; use 1..{schedule.num_train_timesteps}.")
    scheduler = schedule.scheduler("ddim")
    scheduler.set_timesteps(num_steps)
    timesteps = scheduler.timesteps.long()
    abar = schedule.alphas_cumprod.cpu()[timesteps]
    return timesteps, torch.cat([((1 - abar) / abar).sqrt(), abar.new_zeros(1)])


class I2VDenoiser:
    """x0 estimates of a ``KeyframeUNet`` with its first frame given (FVDM image-to-video), for EDM samples.

    ``context`` (2B, L, D) and ``mask`` (2B, L) hold B prompts then B empty prompts (as from
    ``text_encoder.encode(prompts + [""] * B)``); ``positions`` (B, F) are the frames' positions on the source
    timeline. The unconditional branch drops the text and keeps the given frame.
    """

    def __init__(self, model: KeyframeUNet, schedule: NoiseSchedule, context: Tensor, mask: Tensor | None,
                 positions: Tensor) -> None:
        self.model = model
        self.schedule = schedule
        self.context = context
        self.mask = mask
        self.positions = positions

    @torch.no_grad()
    def pair(self, x: Tensor, t: int, first: Tensor) -> tuple[Tensor, Tensor]:
        """(unconditional, conditional) x0 (B, F, C, H, W) of the EDM sample ``x`` (B, F, C, H, W) at training
        timestep ``t`` (sigma_t of ``sigma_schedule``), frame 0 given by ``first`` (B, C, H, W). Both branches
        run in one batched model call; frame 0 of both estimates is ``first`` exactly."""
        b, f = x.shape[:2]
        abar = self.schedule.alphas_cumprod[t].to(x.device, torch.float32)
        x_vp = (x.float() * abar.sqrt()).to(x.dtype)
        x_vp[:, 0] = first.to(x.dtype)
        tau = torch.full((b, f), t, dtype=torch.long, device=x.device)
        tau[:, 0] = 0
        x_vp, tau = torch.cat([x_vp, x_vp]), torch.cat([tau, tau])
        out = self.model(x_vp, tau, self.context, self.mask, torch.cat([self.positions, self.positions]),
                         any_length=True)
        x0 = self.schedule.pred_to_x0(out, x_vp, tau)
        x0[:, 0] = torch.cat([first, first]).to(x0.dtype)
        cond, uncond = x0.chunk(2)
        return uncond, cond
