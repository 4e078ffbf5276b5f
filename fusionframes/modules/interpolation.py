"""Interpolation stage (paper §4.2, §5, §6.3): trains the FusionFrames latent interpolator or the MFI baseline."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from torchmetrics.image import PeakSignalNoiseRatio

from fusionframes.diffusion import NoiseSchedule
from fusionframes.models.interpolation_unet import (
    BETWEEN,
    InterpolationUNet,
    deinterleave,
    interleave,
)
from fusionframes.models.t2i import TextToImageModel
from fusionframes.modules.base import OptimizerFactory, StageModule
from fusionframes.utils.media import image_grid, log_image, log_video
from fusionframes.utils.validation import check_guidance, check_probability


class InterpolationModule(StageModule):
    """Trains a whole ``InterpolationUNet`` (mode ``fusionframes``, ``mfi`` or ``mfi_windows``) with the v-prediction
    loss.

    ``unet`` is the T2I backbone bundle (config group ``model/unet``): a copy of its UNet is inflated into
    the interpolator and its text encoder only computes the null context, then the bundle is dropped.
    The schedule has the backbone's betas with ``prediction_type="v_prediction"`` and ``timestep_spacing``
    for sampling. The MoVQ is frozen and saved by reference (``movq_path``).

    Batches (``InterpolationSampler``) hold ``keyframes`` (B, T, 3, H, W), ``targets`` (B, T-1, 3, 3, H, W)
    in [-1, 1] and ``skip`` (B,) long, T = ``num_keyframes``. Training draws per sample a perturbation level
    tp ~ U{0..max_perturbation} (tp forward-diffusion steps applied to the keyframe latents; tp = 0 leaves
    them clean) and zeroes the conditioning with probability ``uncond_prob``; the loss covers the 3·(T-1)
    in-betweens (fusionframes), all 4T-3 frames of the same clip (mfi) or its T-1 windows of 5 frames
    (mfi_windows). ``mfi`` thus trains on the whole 33-frame clip, so its temporal convs see sequences as long as
    at inference (61 and 241 frames); ``mfi_windows`` trains on the paper's 5-frame examples (appendix 10: 2
    keyframes + 3 in-betweens), 8 per clip. All modes see the same data.
    """

    def __init__(
        self,
        unet: TextToImageModel,
        movq_path: str,
        optimizer: OptimizerFactory,
        lr_scheduler: Any = None,
        mode: str = "fusionframes",
        num_keyframes: int = 9,
        resolution: int = 64,
        max_skip: int = 12,
        uncond_prob: float = 0.1,
        max_perturbation: int = 250,
        guidance_scale: float = 0.25,
        num_inference_steps: int = 10,
        timestep_spacing: str = "trailing",
        num_val_videos: int = 1,
        fps: int = 8,
    ) -> None:
        super().__init__(optimizer, lr_scheduler)
        check_probability("model.uncond_prob", uncond_prob)
        if not 0 <= max_perturbation < unet.schedule.num_train_timesteps:
            raise ValueError(f"model.max_perturbation must be in 0..{unet.schedule.num_train_timesteps - 1}, "
                             f"got {max_perturbation}.")
        check_guidance("model.guidance_scale", guidance_scale)
        if num_keyframes < 2:
            raise ValueError(f"model.num_keyframes must be at least 2, got {num_keyframes}.")
        with torch.no_grad():
            null_context, null_mask = unet.text_encoder.encode([""])
        self.model = InterpolationUNet(copy.deepcopy(unet.unet), null_context[0], null_mask[0], mode, max_skip).train()
        self.model.requires_grad_(True)
        self.schedule = NoiseSchedule.from_scheduler_config(
            {**unet.schedule.scheduler_config, "prediction_type": "v_prediction", "timestep_spacing": timestep_spacing})
        self.attach_codec(movq_path, resolution)
        self.num_keyframes = num_keyframes
        self.uncond_prob = uncond_prob
        self.max_perturbation = max_perturbation
        self.guidance_scale = guidance_scale
        self.num_inference_steps = num_inference_steps
        self.num_val_videos = num_val_videos
        self.fps = fps
        self.val_psnr = PeakSignalNoiseRatio(data_range=1.0)

    @property
    def mode(self) -> str:
        return self.model.mode

    def latents(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Keyframe latents (B, T, C, h, w) and in-between latents (B, T-1, 3, C, h, w), shapes checked."""
        keyframes, targets = batch["keyframes"], batch["targets"]
        t = keyframes.shape[1]
        if t != self.num_keyframes:
            raise ValueError(f"the batch has {t} keyframes but model.num_keyframes={self.num_keyframes}; use the "
                             "interpolation sampler with the same num_keyframes.")
        if targets.shape[1:3] != (t - 1, BETWEEN):
            raise ValueError(f"batch targets have shape {tuple(targets.shape)}; {t} keyframes need ({t - 1}, "
                             f"{BETWEEN}) in-between frames per clip (the interpolation sampler with between=3).")
        between = rearrange(self.codec.encode(rearrange(targets, "b g n c h w -> b (g n) c h w")),
                            "b (g n) c h w -> b g n c h w", n=BETWEEN)
        return self.codec.encode(keyframes), between

    def conditioning(self, keyframes: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Training conditioning: (perturbed and possibly zeroed keyframes (B, T, C, h, w), tp (B,) long).

        Per sample: tp ~ U{0..max_perturbation}; the keyframes are noised by tp forward-diffusion steps
        (schedule timestep tp - 1; tp = 0 keeps them exact), then zeroed with probability ``uncond_prob``.
        """
        b = keyframes.shape[0]
        tp = torch.randint(0, self.max_perturbation + 1, (b,), generator=generator, device=self.device)
        keep = torch.rand(b, generator=generator, device=self.device) >= self.uncond_prob
        noise = torch.randn(keyframes.shape, generator=generator, device=self.device, dtype=keyframes.dtype)
        perturbed = self.schedule.add_noise(keyframes, noise, (tp - 1).clamp(min=0))
        perturbed = torch.where(rearrange(tp > 0, "b -> b 1 1 1 1"), perturbed, keyframes)
        return perturbed * rearrange(keep, "b -> b 1 1 1 1").to(keyframes.dtype), tp

    def _loss(self, keyframes: torch.Tensor, between: torch.Tensor, condition: torch.Tensor, skip: torch.Tensor,
              tp: torch.Tensor, generator: torch.Generator, t: torch.Tensor | None = None) -> torch.Tensor:
        """v-prediction loss on the model's sample (in-betweens or the whole clip) given ``condition`` keyframes."""
        x0 = self.model.to_sample(keyframes, between)
        noise = torch.randn(x0.shape, generator=generator, device=self.device, dtype=x0.dtype)
        if t is None:
            t = torch.randint(0, self.schedule.num_train_timesteps, (x0.shape[0],), generator=generator,
                              device=self.device)
        pred = self.model(self.schedule.add_noise(x0, noise, t), t, condition, skip, tp)
        return self.schedule.loss(pred, x0, noise, t)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        generator = self.batch_generator(batch_idx)
        keyframes, between = self.latents(batch)
        condition, tp = self.conditioning(keyframes, generator)
        loss = self._loss(keyframes, between, condition, batch["skip"], tp, generator)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["skip"]))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Loss (clean keyframes, tp = 0, fixed noise, evenly spread t); PSNR of the decoded interpolated
        in-betweens against the true ones; for batch 0 a ground truth | interpolated clip and strip."""
        keyframes, between = self.latents(batch)
        b = keyframes.shape[0]
        generator, t = self.validation_draws(batch_idx, b, self.schedule.num_train_timesteps)
        tp = torch.zeros(b, dtype=torch.long, device=self.device)
        loss = self._loss(keyframes, between, keyframes, batch["skip"], tp, generator, t)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=b)

        latents = self.interpolate(keyframes, batch["skip"], generator=generator)
        frames = self.codec.decode(rearrange(deinterleave(latents)[1], "b g n c h w -> b (g n) c h w")).clamp(-1, 1)
        truth = rearrange(batch["targets"], "b g n c h w -> b (g n) c h w")
        self.val_psnr.update(rearrange((frames + 1) / 2, "b f c h w -> (b f) c h w"),
                             rearrange((truth + 1) / 2, "b f c h w -> (b f) c h w"))
        if batch_idx == 0 and self.num_val_videos:
            n = min(self.num_val_videos, b)
            true_video = interleave(batch["keyframes"][:n], batch["targets"][:n])
            video = self.codec.decode(latents[:n]).clamp(-1, 1)
            skips = ", ".join(str(s) for s in batch["skip"][:n].tolist())
            log_video(self.trainer, "val/clip", torch.cat([true_video[0], video[0]], dim=-1), fps=self.fps,
                      caption=f"ground truth | interpolated ({self.mode}, s={batch['skip'][0].item()})")
            strips = rearrange(torch.stack([true_video, video], dim=1), "b r f c h w -> (b r f) c h w")
            log_image(self.trainer, "val/interpolation", image_grid(strips, nrow=true_video.shape[1]),
                      caption=f"rows: ground truth, interpolated ({self.mode}); skips {skips}")

    def on_validation_epoch_end(self) -> None:
        self.log("val/psnr", self.val_psnr.compute(), prog_bar=True)
        self.val_psnr.reset()

    @torch.no_grad()
    def interpolate(self, keyframe_latents: torch.Tensor, skip: int | torch.Tensor,
                    num_inference_steps: int | None = None, guidance_scale: float | None = None,
                    generator: torch.Generator | None = None, progress: bool = False) -> torch.Tensor:
        """One pass: keyframe latents (B, T, C, h, w), T >= 2 -> (B, 4T-3, C, h, w), keyframes kept exactly.

        ``skip``: s (3 for the first pass 2 -> 8 fps, 1 for the second 8 -> ~30 fps) for all samples or (B,).
        Defaults for steps and the guidance weight w come from the config.
        """
        return self.model.interpolate(
            keyframe_latents, skip, self.schedule, num_inference_steps or self.num_inference_steps,
            self.guidance_scale if guidance_scale is None else guidance_scale, generator=generator, progress=progress)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["parameter_counts"] = self.model.parameter_counts()

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype = torch.float16) -> Path:
        """Write the whole interpolator (loads with ``InterpolationUNet.from_pretrained``) and its v-prediction
        sampling schedule as ``scheduler/``: the directory is a pipeline's ``interpolation/`` stage."""
        self.schedule.scheduler("ddim").save_pretrained(Path(directory) / "scheduler")
        return self.model.save_pretrained(directory, dtype)
