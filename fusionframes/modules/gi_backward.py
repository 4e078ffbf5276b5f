"""Backward-motion fine-tuning of Generative Inbetweening (GI spec §3.3, Alg. 1) on the FVDM keyframe model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio

from fusionframes.models.backward_motion import BackwardKeyframeUNet, record_attention_maps
from fusionframes.models.keyframe_unet import KeyframeUNet
from fusionframes.models.t2i import TextToImageModel
from fusionframes.modules.base import OptimizerFactory, StageModule
from fusionframes.sampling.time_reversal.denoiser import I2VDenoiser
from fusionframes.sampling.time_reversal.gi import GISampler
from fusionframes.utils.media import image_grid, log_image, log_video


class GIBackwardModule(StageModule):
    """Teaches a copy of the forward image-to-video model to generate motion backwards in time.

    The forward model is the ``KeyframeUNet`` exported at ``init_from`` (an FVDM keyframe run: its first frame given
    and held at timestep 0), frozen and saved by reference like the T2I backbone ``unet`` and the MoVQ. The backward
    model is its ``BackwardKeyframeUNet``: only the value and output projection weights of its temporal attention
    train. A step (batches as for the keyframe stage: ``video`` (B, F, 3, H, W) or ``latents``, ``positions``,
    ``caption`` or precomputed ``text_embedding``/``text_mask``), with clip latents z (B, F, C, h, w):

        t ~ U{0..T-1} per clip, n ~ N(0, I); z_t = add_noise(z, n, t) at every frame
        forward (no grad): z_t with frame 0 := z[:, 0] at timestep 0, maps recorded          (the I2V input)
        backward:          flip(z_t) with frame 0 := z[:, -1] at timestep 0, maps reversed  (the same noise)
        loss = MSE(output, the schedule's target (eps or v) of flip(z), flip(n)) over frames 1..F-1

    The caption (forward motion) conditions both paths, as in sampling. No caption dropout (GI [code]).
    ``sampling``: ``GISampler`` settings of the validation samples between the first and last frames of
    ``num_val_videos`` validation clips (logged, with the PSNR of their in-between frames against the truth).
    """

    def __init__(
        self,
        unet: TextToImageModel,
        init_from: str,
        movq_path: str,
        optimizer: OptimizerFactory,
        lr_scheduler: Any = None,
        unet_path: str | None = None,
        num_frames: int = 16,
        resolution: int = 64,
        sampling: dict[str, Any] | None = None,
        num_val_videos: int = 2,
        fps: int = 2,
    ) -> None:
        super().__init__(optimizer, lr_scheduler)
        self.backbone = unet
        self.freeze("backbone", unet_path)
        self.forward_model = KeyframeUNet.from_pretrained(init_from, unet.unet, config_key="model.init_from")
        self.freeze("forward_model", init_from)
        self.model = BackwardKeyframeUNet(self.forward_model)
        self.attach_codec(movq_path, resolution)
        self.init_from = init_from
        self.num_frames = num_frames
        self.sampling = dict(sampling or {})
        self.sampler(None, None, None)  # checks the sampling settings now
        self.num_val_videos = num_val_videos
        self.fps = fps

    @property
    def schedule(self):
        return self.backbone.schedule

    def text(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Text states (B, L, D) and mask (B, L) of the captions (precomputed ones from latent shards if present)."""
        if "text_embedding" in batch:
            return batch["text_embedding"], batch["text_mask"]
        return self.backbone.text_encoder.encode(list(batch["caption"]))

    def latents(self, batch: dict[str, Any]) -> torch.Tensor:
        """(B, F, C, h, w) latents of the batch in forward time order."""
        return self.clip_latents(batch, self.num_frames)

    def _loss(self, batch: dict[str, Any], generator: torch.Generator, t: torch.Tensor | None = None) -> torch.Tensor:
        z0 = self.latents(batch)
        b, f = z0.shape[:2]
        if t is None:
            t = torch.randint(0, self.schedule.num_train_timesteps, (b,), generator=generator, device=self.device)
        noise = torch.randn(z0.shape, generator=generator, device=self.device, dtype=z0.dtype)
        z_t = self.schedule.add_noise(z0, noise, t)
        tau = t[:, None].repeat(1, f)
        tau[:, 0] = 0
        context, mask = self.text(batch)
        forward_input = torch.cat([z0[:, :1], z_t[:, 1:]], dim=1)
        backward_input = torch.cat([z0[:, -1:], z_t.flip(1)[:, 1:]], dim=1)
        with torch.no_grad(), record_attention_maps(self.forward_model, self.model.maps):
            self.forward_model(forward_input, tau, context, mask, batch["positions"], any_length=True)
        pred = self.model(backward_input, tau, context, mask, batch["positions"], any_length=True)
        self.model.maps.clear()
        target_t = t[:, None].expand(b, f - 1)
        return self.schedule.loss(pred[:, 1:], z0.flip(1)[:, 1:], noise.flip(1)[:, 1:], target_t)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch, self.batch_generator(batch_idx))
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Loss at fixed noise and evenly spread timesteps; GI samples between true first and last frames."""
        b = len(batch["caption"])
        generator, t = self.validation_draws(batch_idx, b, self.schedule.num_train_timesteps)
        self.log("val/loss", self._loss(batch, generator, t), prog_bar=True, sync_dist=True)
        if batch_idx == 0 and self.num_val_videos:
            n = min(self.num_val_videos, b)
            truth = self.latents(batch)[:n]
            captions = list(batch["caption"][:n])
            latents = self.inbetween(truth[:, 0], truth[:, -1], captions, batch["positions"][:n],
                                     torch.Generator(device=self.device).manual_seed(0))
            videos = self.codec.decode(latents).clamp(-1, 1)
            reference = self.codec.decode(truth).clamp(-1, 1)
            psnr = peak_signal_noise_ratio(videos[:, 1:-1], reference[:, 1:-1], data_range=2.0)
            self.log("val/inbetween_psnr", psnr, sync_dist=True, batch_size=n)
            strips = torch.cat([reference, videos], dim=1).flatten(0, 1)
            log_image(self.trainer, "val/inbetween", image_grid(strips, nrow=self.num_frames),
                      caption="rows: truth, GI | " + " | ".join(captions))
            log_video(self.trainer, "val/inbetween_clip", videos[0], fps=self.fps, caption=captions[0])

    @torch.no_grad()
    def inbetween(self, start: torch.Tensor, end: torch.Tensor, captions: list[str], positions: torch.Tensor,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        """GI latents (B, F, C, h, w) between keyframe latents ``start`` and ``end`` (B, C, h, w) at ``positions``
        (B, F), with this module's ``sampling`` settings."""
        context, mask = self.backbone.text_encoder.encode(captions + [""] * len(captions))
        return self.sampler(context, mask, positions).sample(start, end, positions.shape[1], generator)

    def sampler(self, context: torch.Tensor | None, mask: torch.Tensor | None,
                positions: torch.Tensor | None) -> GISampler:
        """The ``GISampler`` of the forward and backward models for text ``context`` (2B, L, D), ``mask`` (2B, L)
        and ``positions`` (B, F), with this module's ``sampling`` settings."""
        forward, backward = (I2VDenoiser(model, self.schedule, context, mask, positions)
                             for model in (self.forward_model, self.model))
        return GISampler(forward, self.schedule, backward, **self.sampling)

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype = torch.float16) -> Path:
        """Write the backward model's trainable weights and config (the forward model stays by path)."""
        return self.model.save_pretrained(directory, dtype, forward_dir=self.init_from)
