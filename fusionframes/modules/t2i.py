"""Text-to-image base stage: a diffusers ``UNet2DConditionModel`` and a text encoder on MoVQ latents."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel

from fusionframes.diffusion import NoiseSchedule, classifier_free_guidance, sample
from fusionframes.models.latents import LatentCodec
from fusionframes.models.text_encoders import ShapesTextEncoder
from fusionframes.modules.base import OptimizerFactory, StageModule
from fusionframes.utils.media import image_grid, log_image


class TextToImageModule(StageModule):
    """Trains a T2I UNet and its text encoder with the epsilon (or v) loss on latents of single frames.

    The MoVQ is frozen and loaded by path. Captions are replaced by the empty prompt with probability
    ``caption_dropout`` so the model also learns the unconditional branch for classifier-free guidance.
    Batches hold ``image`` (B, 3, H, W) in [-1, 1] and ``caption`` (list of B strings).
    """

    def __init__(
        self,
        unet: UNet2DConditionModel,
        text_encoder: ShapesTextEncoder,
        schedule: NoiseSchedule,
        movq_path: str,
        optimizer: OptimizerFactory,
        lr_scheduler: Any = None,
        resolution: int = 64,
        caption_dropout: float = 0.1,
        guidance_scale: float = 4.0,
        num_inference_steps: int = 25,
        num_val_images: int = 8,
    ) -> None:
        super().__init__(optimizer, lr_scheduler)
        if not 0.0 <= caption_dropout <= 1.0:
            raise ValueError(f"model.caption_dropout must be in [0, 1], got {caption_dropout}.")
        if guidance_scale < 0:
            raise ValueError(f"model.guidance_scale must be >= 0, got {guidance_scale}.")
        self.unet = unet
        self.text_encoder = text_encoder
        self.schedule = schedule
        self.codec = LatentCodec.from_pretrained(movq_path, "model.movq_path")
        self.freeze("codec", movq_path)
        if resolution % self.codec.factor:
            raise ValueError(f"data.resolution={resolution} must be divisible by the MoVQ factor {self.codec.factor}.")
        self.latent_size = resolution // self.codec.factor
        self.caption_dropout = caption_dropout
        self.guidance_scale = guidance_scale
        self.num_inference_steps = num_inference_steps
        self.num_val_images = num_val_images

    def denoise(self, z_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """UNet prediction for latents (B, C, h, w) at timesteps (B,) given text (B, L, D) and mask (B, L)."""
        return self.unet(z_t, t, encoder_hidden_states=context, encoder_attention_mask=mask).sample

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        z0 = self.codec.encode(batch["image"])
        drop = torch.rand(len(batch["caption"])) < self.caption_dropout
        captions = ["" if d else c for c, d in zip(batch["caption"], drop.tolist())]
        context, mask = self.text_encoder.encode(captions)
        noise = torch.randn_like(z0)
        t = torch.randint(0, self.schedule.num_train_timesteps, (z0.shape[0],), device=self.device)
        pred = self.denoise(self.schedule.add_noise(z0, noise, t), t, context, mask)
        loss = self.schedule.loss(pred, z0, noise, t)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        z0 = self.codec.encode(batch["image"])
        generator = torch.Generator(device=self.device).manual_seed(batch_idx)
        noise = torch.randn(z0.shape, generator=generator, device=self.device)
        t = torch.linspace(0, self.schedule.num_train_timesteps - 1, z0.shape[0], device=self.device).long()
        context, mask = self.text_encoder.encode(list(batch["caption"]))
        loss = self.schedule.loss(self.denoise(self.schedule.add_noise(z0, noise, t), t, context, mask), z0, noise, t)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)
        if batch_idx == 0 and self.num_val_images:
            captions = list(batch["caption"][: self.num_val_images])
            images = self.generate(captions, generator=torch.Generator(device=self.device).manual_seed(0))
            real = batch["image"][: len(captions)]
            log_image(self.trainer, "val/samples", image_grid(torch.cat([real, images]), nrow=len(captions)),
                      caption=" | ".join(captions))

    @torch.no_grad()
    def generate(self, prompts: list[str], generator: torch.Generator | None = None,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 progress: bool = False) -> torch.Tensor:
        """Sample one image per prompt with classifier-free guidance -> (B, 3, H, W) in about [-1, 1]."""
        scale = self.guidance_scale if guidance_scale is None else guidance_scale
        context, mask = self.text_encoder.encode(prompts + [""] * len(prompts))
        shape = (len(prompts), self.unet.config.in_channels, self.latent_size, self.latent_size)

        def denoise(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            cond, uncond = self.denoise(torch.cat([z_t, z_t]), torch.cat([t, t]), context, mask).chunk(2)
            return classifier_free_guidance(cond, uncond, scale)

        z0 = sample(denoise, shape, self.schedule, num_inference_steps or self.num_inference_steps,
                    generator=generator, progress=progress, device=self.device)
        return self.codec.decode(z0).clamp(-1, 1)

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype = torch.float16) -> Path:
        """Write ``unet/`` (diffusers), ``text_encoder/`` and ``scheduler/`` under ``directory``."""
        directory = Path(directory)
        copy.deepcopy(self.unet).to(dtype).save_pretrained(directory / "unet", safe_serialization=True)
        copy.deepcopy(self.text_encoder).to(dtype).save_pretrained(directory / "text_encoder")
        self.schedule.scheduler("ddpm").save_pretrained(directory / "scheduler")
        return directory
