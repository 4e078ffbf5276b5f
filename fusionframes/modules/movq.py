"""Image MoVQ training (shapes-world base stage): diffusers ``VQModel(norm_type="spatial")`` on frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import VQModel
from torchmetrics.functional.image import peak_signal_noise_ratio

from fusionframes.modules.base import OptimizerFactory, StageModule
from fusionframes.utils.media import image_grid, log_image
from fusionframes.utils.pretrained import save_model


class MoVQModule(StageModule):
    """Trains a MoVQ autoencoder on single frames.

    Validation keeps ``movq.config.scaling_factor`` at 1 / std of the unquantised latents, so later stages
    diffuse unit-variance latents ``scaling_factor * E(x)``.

    The downstream stages use latents *unquantised* (as Kandinsky 3 does), so the decoder is trained on
    both the quantised and the unquantised encoder output: ``L = |x - D(q(E x))| + |x - D(E x)| + beta*commit``
    (L1 plus MSE for each). Batches hold ``image`` (B, 3, H, W) in [-1, 1].
    """

    def __init__(self, movq: VQModel, optimizer: OptimizerFactory, commit_weight: float = 1.0,
                 lr_scheduler: Any = None) -> None:
        super().__init__(optimizer, lr_scheduler)
        self.movq = movq
        self.commit_weight = commit_weight

    @staticmethod
    def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(pred, target) + F.mse_loss(pred, target)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> quantised reconstruction, unquantised reconstruction, commit loss (B,)."""
        latents = self.movq.encode(image).latents
        quantised = self.movq.decode(latents)
        plain = self.movq.decode(latents, force_not_quantize=True).sample
        return quantised.sample, plain, quantised.commit_loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        image = batch["image"]
        rec_q, rec, commit = self(image)
        loss_q = self.reconstruction_loss(rec_q, image)
        loss_plain = self.reconstruction_loss(rec, image)
        loss = loss_q + loss_plain + self.commit_weight * commit.mean()
        self.log_dict({"train/loss": loss, "train/rec_quantised": loss_q, "train/rec": loss_plain,
                       "train/commit": commit.mean()}, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        image = batch["image"]
        latents = self.movq.encode(image).latents
        rec = self.movq.decode(latents, force_not_quantize=True).sample
        if batch_idx == 0:  # latents are scaled to unit variance for diffusion: keep the factor current
            self.movq.register_to_config(scaling_factor=1.0 / latents.float().std().clamp_min(1e-6).item())
        psnr = peak_signal_noise_ratio(rec, image, data_range=2.0)  # [-1, 1] spans 2
        self.log_dict({"val/mse": F.mse_loss(rec, image), "val/psnr": psnr}, prog_bar=True, sync_dist=True)
        if batch_idx == 0:
            n = min(8, image.shape[0])
            log_image(self.trainer, "val/reconstructions", image_grid(torch.cat([image[:n], rec[:n]]), nrow=n))

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype = torch.float16) -> Path:
        """Write the MoVQ as a diffusers directory (safetensors + config) that later stages load by path."""
        return save_model(self.movq, directory, dtype)
