"""Text-to-image base stage: trains a ``TextToImageModel`` (UNet + text encoder) on frozen MoVQ latents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel

from fusionframes.diffusion import NoiseSchedule
from fusionframes.models.t2i import TextToImageModel
from fusionframes.models.text_encoders import ShapesTextEncoder
from fusionframes.modules.base import OptimizerFactory, StageModule
from fusionframes.utils.media import image_grid, log_image
from fusionframes.utils.validation import check_guidance, check_int, check_probability


class TextToImageModule(StageModule):
    """Epsilon (or v) loss on latents of single frames; UNet and text encoder both train.

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
        check_probability("model.caption_dropout", caption_dropout)
        check_guidance("model.guidance_scale", guidance_scale)
        check_int("model.num_inference_steps", num_inference_steps, 1, schedule.num_train_timesteps)
        check_int("model.num_val_images", num_val_images, 0)
        self.model = TextToImageModel(unet, text_encoder, schedule)
        self.attach_codec(movq_path, resolution)
        self.caption_dropout = caption_dropout
        self.guidance_scale = guidance_scale
        self.num_inference_steps = num_inference_steps
        self.num_val_images = num_val_images

    def _loss(self, image: torch.Tensor, captions: list[str], generator: torch.Generator,
              t: torch.Tensor | None = None) -> torch.Tensor:
        """Diffusion loss of images (B, 3, H, W) with noise (and timesteps unless given) from ``generator``."""
        z0 = self.codec.encode(image)
        noise = torch.randn(z0.shape, generator=generator, device=self.device)
        if t is None:
            t = torch.randint(0, self.model.schedule.num_train_timesteps, (z0.shape[0],), generator=generator,
                              device=self.device)
        context, mask = self.model.text_encoder.encode(captions)
        pred = self.model(self.model.schedule.add_noise(z0, noise, t), t, context, mask)
        return self.model.schedule.loss(pred, z0, noise, t)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        generator = self.batch_generator(batch_idx)
        drop = (torch.rand(len(batch["caption"]), generator=generator, device=self.device) < self.caption_dropout)
        captions = ["" if d else c for c, d in zip(batch["caption"], drop.tolist())]
        loss = self._loss(batch["image"], captions, generator)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Loss at fixed noise and evenly spread timesteps; a grid of real (top) and sampled (bottom) images."""
        image = batch["image"]
        generator, t = self.validation_draws(batch_idx, image.shape[0], self.model.schedule.num_train_timesteps)
        self.log("val/loss", self._loss(image, list(batch["caption"]), generator, t), prog_bar=True, sync_dist=True)
        if batch_idx == 0 and self.num_val_images:
            captions = list(batch["caption"][: self.num_val_images])
            latents = self.model.generate(captions, self.latent_size, self.num_inference_steps, self.guidance_scale,
                                          generator=torch.Generator(device=self.device).manual_seed(0))
            images = self.codec.decode(latents).clamp(-1, 1)
            log_image(self.trainer, "val/samples", image_grid(torch.cat([image[: len(captions)], images]),
                                                              nrow=len(captions)), caption=" | ".join(captions))

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype = torch.float16) -> Path:
        """Write ``unet/``, ``text_encoder/`` and ``scheduler/`` under ``directory`` (loads with TextToImageModel)."""
        return self.model.save_pretrained(directory, dtype)
