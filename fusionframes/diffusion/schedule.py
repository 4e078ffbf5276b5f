"""Discrete-time noise schedule: betas from diffusers, forward process, training target and loss."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, SchedulerMixin
from diffusers.training_utils import compute_snr
from torch import Tensor, nn

from fusionframes.diffusion import parameterization as P

BETA_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}
SCHEDULER_KINDS = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler}


class NoiseSchedule(nn.Module):
    """Variance-preserving schedule x_t = alpha_t x0 + sigma_t eps, alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t).

    Betas come from a diffusers ``DDPMScheduler`` (``cosine`` is diffusers' ``squaredcos_cap_v2``;
    ``zero_terminal_snr`` applies diffusers' ``rescale_betas_zero_snr`` so abar_{T-1} = 0, which needs
    v-prediction). ``timestep_spacing`` of the sampling schedulers defaults to "trailing" with zero-terminal
    SNR and diffusers' "leading" otherwise. Timesteps ``t`` are long (B,) or per-frame (B, F) and broadcast
    over x of shape (B, [F,] C, H, W).

    Buffer ``alphas_cumprod``: float32 (T,), derived from the config and therefore not saved in state dicts.
    """

    alphas_cumprod: Tensor

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "linear",
        zero_terminal_snr: bool = False,
        prediction_type: str = "epsilon",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        timestep_spacing: str | None = None,
    ) -> None:
        super().__init__()
        if beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule={beta_schedule!r} is not supported; use one of {tuple(BETA_SCHEDULES)}.")
        P.check_prediction_type(prediction_type)
        if zero_terminal_snr and prediction_type != "v_prediction":
            raise ValueError(
                f"zero_terminal_snr=True needs prediction_type='v_prediction' (got {prediction_type!r}): "
                "eps cannot recover x0 at zero SNR."
            )
        self.num_train_timesteps = num_train_timesteps
        self.prediction_type = prediction_type
        self.scheduler_config: dict[str, Any] = dict(
            num_train_timesteps=num_train_timesteps,
            beta_start=beta_start,
            beta_end=beta_end,
            beta_schedule=BETA_SCHEDULES[beta_schedule],
            prediction_type=prediction_type,
            rescale_betas_zero_snr=zero_terminal_snr,
            timestep_spacing=timestep_spacing or ("trailing" if zero_terminal_snr else "leading"),
            clip_sample=False,
        )
        ddpm = DDPMScheduler(**self.scheduler_config)
        self.register_buffer("alphas_cumprod", ddpm.alphas_cumprod.clone(), persistent=False)

    @classmethod
    def from_scheduler_config(cls, config: dict[str, Any]) -> NoiseSchedule:
        """Rebuild from a diffusers scheduler config (e.g. a saved ``scheduler/scheduler_config.json``)."""
        names = {v: k for k, v in BETA_SCHEDULES.items()}
        return cls(
            num_train_timesteps=config["num_train_timesteps"],
            beta_schedule=names.get(config["beta_schedule"], config["beta_schedule"]),
            zero_terminal_snr=config.get("rescale_betas_zero_snr", False),
            prediction_type=config.get("prediction_type", "epsilon"),
            beta_start=config.get("beta_start", 1e-4),
            beta_end=config.get("beta_end", 0.02),
            timestep_spacing=config.get("timestep_spacing"),
        )

    def scheduler(self, kind: str = "ddim", **kwargs: Any) -> SchedulerMixin:
        """A fresh diffusers DDIM/DDPM scheduler with this schedule's betas and prediction type.

        ``kwargs`` override scheduler config entries (e.g. ``timestep_spacing``, ``variance_type``).
        """
        if kind not in SCHEDULER_KINDS:
            raise ValueError(f"scheduler kind={kind!r} is not supported; use one of {tuple(SCHEDULER_KINDS)}.")
        return SCHEDULER_KINDS[kind](**{**self.scheduler_config, **kwargs})

    def alpha_sigma(self, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha_t, sigma_t) at long ``t`` (B,) or (B, F), right-padded with 1s to ``x.ndim``, in x's dtype."""
        if t.shape != x.shape[: t.ndim]:
            raise ValueError(
                f"timesteps of shape {tuple(t.shape)} do not match x of shape {tuple(x.shape)}; "
                "use (B,) or (B, F) matching x's leading dimensions."
            )
        abar = self.alphas_cumprod.to(t.device)[t].to(torch.promote_types(self.alphas_cumprod.dtype, x.dtype))
        abar = abar[(...,) + (None,) * (x.ndim - t.ndim)]
        return abar.sqrt().to(x.dtype), (1 - abar).sqrt().to(x.dtype)

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """x_t = alpha_t x0 + sigma_t noise; x0, noise (B, [F,] C, H, W), t long (B,) or (B, F)."""
        return P.xt_from_x0_eps(x0, noise, *self.alpha_sigma(t, x0))

    def target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """Regression target: eps = noise, or v = alpha_t noise - sigma_t x0."""
        if self.prediction_type == "epsilon":
            return noise
        return P.v_from_x0_eps(x0, noise, *self.alpha_sigma(t, x0))

    def loss(self, pred: Tensor, x0: Tensor, noise: Tensor, t: Tensor, snr_gamma: float | None = None,
             high_noise_gamma: float | None = None) -> Tensor:
        """Scalar MSE (in float32) between the model output ``pred`` and ``target(x0, noise, t)``.

        ``snr_gamma``: Min-SNR-gamma weighting (Hang et al. 2023, as in diffusers' training scripts): each
        sample's (or frame's, for (B, F) timesteps) MSE is weighted by min(SNR_t, gamma) / SNR_t for eps
        targets and min(SNR_t, gamma) / (SNR_t + 1) for v targets, which shifts the gradient from the
        nearly clean timesteps to the noisy ones.
        ``high_noise_gamma`` (eps targets only): each MSE is also weighted by clamp(1 / SNR_t, 1, gamma). An eps
        error at SNR_t < 1 is an x0 error scaled down by SNR_t, so the plain loss hardly sees what is decided
        there (a video's layout and the direction of its motion); this weights those steps as an x0 loss
        would, up to ``gamma`` times the rest.
        """
        error = F.mse_loss(pred.float(), self.target(x0, noise, t).float(), reduction="none")
        if snr_gamma is None and high_noise_gamma is None:
            return error.mean()
        snr = compute_snr(self, t)
        weight = torch.ones_like(snr)
        if snr_gamma is not None:
            weight = torch.clamp(snr, max=snr_gamma) / (snr if self.prediction_type == "epsilon" else snr + 1)
        if high_noise_gamma is not None:
            if self.prediction_type != "epsilon":
                raise ValueError(f"high_noise_gamma weights eps targets; this schedule predicts "
                                 f"{self.prediction_type!r}, whose loss already weights the noisy steps.")
            weight = weight * torch.clamp(1 / snr, min=1, max=high_noise_gamma)
        return (error.flatten(t.ndim).mean(-1) * weight).mean()

    def pred_to_x0(self, pred: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """Model output (eps or v, per prediction_type) at (x_t, t) -> x0."""
        return P.pred_to_x0(pred, x_t, *self.alpha_sigma(t, x_t), self.prediction_type)

    def pred_to_eps(self, pred: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """Model output (eps or v, per prediction_type) at (x_t, t) -> eps."""
        return P.pred_to_eps(pred, x_t, *self.alpha_sigma(t, x_t), self.prediction_type)

    def extra_repr(self) -> str:
        c = self.scheduler_config
        return (
            f"T={self.num_train_timesteps}, beta_schedule={c['beta_schedule']}, "
            f"zero_terminal_snr={c['rescale_betas_zero_snr']}, prediction_type={self.prediction_type}"
        )
