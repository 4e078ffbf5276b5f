"""Keyframe stage (paper §4.1): a frozen T2I UNet with trainable temporal modules generates 16 keyframes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from lightning.pytorch.strategies import SingleDeviceStrategy

from fusionframes.diffusion.cuda_graph import GraphedTrainingCall
from fusionframes.diffusion.timesteps import check_timestep_options, ptss_timesteps
from fusionframes.models.keyframe_unet import KeyframeUNet
from fusionframes.models.t2i import TextToImageModel
from fusionframes.models.temporal import frame_positions
from fusionframes.modules.base import OptimizerFactory, StageModule
from fusionframes.pipeline import generate_keyframes
from fusionframes.utils.media import image_grid, log_image, log_video
from fusionframes.utils.validation import check_guidance, check_probability


class KeyframesModule(StageModule):
    """Trains only the temporal modules of a ``KeyframeUNet`` with the backbone's noise-prediction loss.

    ``unet`` is the frozen T2I backbone bundle (UNet, text encoder, schedule; config group ``model/unet``);
    it and the MoVQ are frozen and saved by reference (``unet_path``, ``movq_path``).
    Batches hold ``video`` (B, F, 3, H, W) in [-1, 1] (or precomputed ``latents`` (B, F, C, h, w)),
    ``positions`` (B, F) frame indices on the source timeline and ``caption`` (B strings), and from latent
    shards ``text_embedding`` (B, L, D), ``text_mask`` (B, L) (+ ``null_text_*``, the empty prompt's).
    Captions are dropped to the empty prompt with probability ``caption_dropout`` for guidance.
    ``timesteps``: "scalar" (one noise level per clip) or "vectorized" (FVDM: per-frame levels (B, F) drawn by
    PTSS, independent per frame with probability ``ptss_p``, per clip or per batch by ``ptss_granularity``;
    noising, loss target and the network's conditioning are per frame).
    ``snr_gamma``: Min-SNR-gamma weighting of the training loss (None: plain MSE; validation stays plain).
    ``high_noise_gamma``: weight the noisy steps (SNR < 1) of the training loss by 1/SNR, capped at this value
    (None: off; see ``NoiseSchedule.loss``).
    ``cuda_graphs``: capture the training forward and backward of the keyframe UNet as CUDA graphs at the first
    batch and replay them (``GraphedTrainingCall``; one CUDA device, fixed batch shapes); validation and sampling
    stay eager.
    """

    def __init__(
        self,
        unet: TextToImageModel,
        temporal: dict[str, Any],
        movq_path: str,
        optimizer: OptimizerFactory,
        lr_scheduler: Any = None,
        unet_path: str | None = None,
        init_from: str | None = None,
        num_frames: int = 16,
        frame_stride: int = 12,
        resolution: int = 64,
        caption_dropout: float = 0.1,
        guidance_scale: float = 5.0,
        num_inference_steps: int = 50,
        num_val_videos: int = 2,
        fps: int = 2,
        timesteps: str = "scalar",
        ptss_p: float = 0.2,
        ptss_granularity: str = "sample",
        snr_gamma: float | None = None,
        high_noise_gamma: float | None = None,
        cuda_graphs: bool = False,
    ) -> None:
        super().__init__(optimizer, lr_scheduler)
        check_probability("model.caption_dropout", caption_dropout)
        check_timestep_options(timesteps, ptss_p, ptss_granularity)
        check_guidance("model.guidance_scale", guidance_scale)
        if snr_gamma is not None and snr_gamma <= 0:
            raise ValueError(f"model.snr_gamma must be > 0 or null (plain MSE), got {snr_gamma}.")
        if high_noise_gamma is not None and high_noise_gamma < 1:
            raise ValueError(f"model.high_noise_gamma must be >= 1 or null (off), got {high_noise_gamma}.")
        self.backbone = unet
        self.freeze("backbone", unet_path)
        self.model = KeyframeUNet(unet.unet, num_frames=num_frames, **temporal)
        if init_from is not None:  # continue from exported temporal weights (optimiser state starts fresh)
            self.model.load_temporal_weights(init_from, "model.init_from")
        self.attach_codec(movq_path, resolution)
        self.num_frames = num_frames
        self.frame_stride = frame_stride
        self.caption_dropout = caption_dropout
        self.guidance_scale = guidance_scale
        self.num_inference_steps = num_inference_steps
        self.num_val_videos = num_val_videos
        self.fps = fps
        self.timesteps = timesteps
        self.ptss_p = ptss_p
        self.ptss_granularity = ptss_granularity
        self.snr_gamma = snr_gamma
        self.high_noise_gamma = high_noise_gamma
        self.graphed = GraphedTrainingCall(self.model) if cuda_graphs else None

    def on_fit_start(self) -> None:
        strategy = self.trainer.strategy
        if self.graphed is not None and (self.device.type != "cuda" or not isinstance(strategy, SingleDeviceStrategy)):
            raise ValueError(f"model.cuda_graphs=true needs training on one CUDA device (no DDP or DeepSpeed); got "
                             f"{type(strategy).__name__} on {self.device}, so set model.cuda_graphs=false.")

    @property
    def schedule(self):
        return self.backbone.schedule

    def latents(self, batch: dict[str, Any]) -> torch.Tensor:
        """(B, F, C, h, w) latents of the batch, checked against the configured frame count."""
        return self.clip_latents(batch, self.num_frames)

    def text(self, batch: dict[str, Any], drop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Text states (B, L, D) and mask (B, L) bool of the batch, the empty prompt's where ``drop`` (B,) is set:
        precomputed ones (``text_embedding`` from latent shards) or the frozen text encoder's."""
        if "text_embedding" not in batch:
            return self.backbone.text_encoder.encode(["" if d else c for c, d in zip(batch["caption"], drop.tolist())])
        context, mask = batch["text_embedding"], batch["text_mask"]
        if not drop.any():
            return context, mask
        if "null_text_embedding" not in batch:
            raise ValueError("caption dropout with precomputed text embeddings needs the empty prompt's; set "
                             "data.datamodule.train.null_text_path to the null_text.safetensors of the latent shards.")
        return (torch.where(drop[:, None, None], batch["null_text_embedding"], context),
                torch.where(drop[:, None], batch["null_text_mask"], mask))

    def _loss(self, batch: dict[str, Any], drop: torch.Tensor, generator: torch.Generator,
              t: torch.Tensor | None = None, snr_gamma: float | None = None,
              high_noise_gamma: float | None = None) -> torch.Tensor:
        z0 = self.latents(batch)
        noise = torch.randn(z0.shape, generator=generator, device=self.device)
        if t is None:
            t = self.training_timesteps(z0.shape[0], generator)
        context, mask = self.text(batch, drop)
        model = self.graphed if self.graphed is not None and self.training else self.model
        pred = model(self.schedule.add_noise(z0, noise, t), t, context.detach(), mask, batch["positions"])
        return self.schedule.loss(pred, z0, noise, t, snr_gamma, high_noise_gamma)

    def training_timesteps(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Timesteps (B,) for scalar training, or PTSS per-frame timesteps (B, F) for vectorized (FVDM)."""
        if self.timesteps == "scalar":
            return torch.randint(0, self.schedule.num_train_timesteps, (batch,), generator=generator,
                                 device=self.device)
        t = ptss_timesteps(batch, self.num_frames, self.schedule.num_train_timesteps, self.ptss_p,
                           self.ptss_granularity, generator, self.device)
        self.log("train/ptss_independent", (t != t[:, :1]).any(1).float().mean(), batch_size=batch)
        return t

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        generator = self.batch_generator(batch_idx)
        drop = torch.rand(len(batch["caption"]), generator=generator, device=self.device) < self.caption_dropout
        loss = self._loss(batch, drop, generator, snr_gamma=self.snr_gamma, high_noise_gamma=self.high_noise_gamma)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Loss at fixed noise and evenly spread timesteps; keyframe strips and a decoded clip of samples."""
        b = len(batch["caption"])
        generator, t = self.validation_draws(batch_idx, b, self.schedule.num_train_timesteps)
        keep = torch.zeros(b, dtype=torch.bool, device=self.device)
        self.log("val/loss", self._loss(batch, keep, generator, t), prog_bar=True, sync_dist=True)
        if batch_idx == 0 and self.num_val_videos:
            captions = list(batch["caption"][: self.num_val_videos])
            latents = self.generate(captions, generator=torch.Generator(device=self.device).manual_seed(0))
            videos = self.codec.decode(latents).clamp(-1, 1)
            strips = rearrange(videos, "b f c h w -> (b f) c h w")
            log_image(self.trainer, "val/keyframes", image_grid(strips, nrow=self.num_frames),
                      caption=" | ".join(captions))
            log_video(self.trainer, "val/clip", videos[0], fps=self.fps, caption=captions[0])

    @torch.no_grad()
    def generate(self, prompts: list[str], generator: torch.Generator | None = None,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 progress: bool = False) -> torch.Tensor:
        """Sample keyframe latents (B, F, C, h, w) for B prompts with classifier-free guidance."""
        n = len(prompts)
        context, mask = self.backbone.text_encoder.encode(list(prompts) + [""] * n)
        shape = (n, self.num_frames, self.codec.channels, self.latent_size, self.latent_size)
        positions = frame_positions(2 * n, self.num_frames, self.frame_stride, self.device)
        return generate_keyframes(self.model, self.schedule, context, mask, positions, shape,
                                  num_inference_steps or self.num_inference_steps,
                                  self.guidance_scale if guidance_scale is None else guidance_scale,
                                  generator, progress)

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype = torch.float16) -> Path:
        """Write the temporal weights (``temporal.safetensors`` + ``config.json``); the backbone stays by path."""
        return self.model.save_pretrained(directory, dtype)
