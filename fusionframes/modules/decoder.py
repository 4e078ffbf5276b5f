"""Temporal MoVQ decoder stage (paper §4.3, Table 3): fine-tunes a video decoder on frozen MoVQ latents of clips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call

from fusionframes.metrics.reconstruction import VideoReconstructionMetrics, frame_lpips, load_lpips
from fusionframes.models.discriminator import PatchDiscriminator3D
from fusionframes.models.temporal_decoder import TemporalMoVQDecoder
from fusionframes.modules.base import OptimizerFactory, StageModule
from fusionframes.utils.media import image_grid, log_image


class VideoDecoderModule(StageModule):
    """Trains a :class:`TemporalMoVQDecoder` to reconstruct clips from the frozen MoVQ encoder's unquantised latents.

    Batches hold ``video`` (B, F, 3, H, W) in [-1, 1] (the ``clip`` sampler). The loss is
    ``L1 + lpips_weight * LPIPS`` (LPIPS only when ``lpips_path`` is set) ``+ discriminator_weight * hinge
    generator loss`` of a space-time PatchGAN (only when ``discriminator_weight > 0``).

    The discriminator trains from the same optimiser step as the decoder: the generator term sees the
    discriminator's weights detached and the discriminator's hinge loss sees the reconstruction detached, so each
    network receives only its own gradient (simultaneous GAN updates; gradient clipping applies to both jointly).

    Validation logs PSNR, SSIM, MSE, temporal error (and LPIPS) of the video decoder as ``val/<metric>`` and of
    the frozen image decoder, frame by frame, as ``val/<metric>_image_decoder``, plus an image strip.
    With ``finetune="temporal"`` the decoder's spatial weights are copies of the frozen MoVQ and, like it, are
    kept out of checkpoints.
    """

    def __init__(
        self,
        movq_path: str,
        optimizer: OptimizerFactory,
        decoder: dict[str, Any] | None = None,
        finetune: str = "decoder",
        lr_scheduler: Any = None,
        lpips_path: str | None = None,
        lpips_weight: float = 1.0,
        discriminator_weight: float = 0.0,
        discriminator_channels: int = 64,
    ) -> None:
        super().__init__(optimizer, lr_scheduler)
        if lpips_weight < 0:
            raise ValueError(f"model.lpips_weight must be >= 0, got {lpips_weight}.")
        if discriminator_weight < 0:
            raise ValueError(f"model.discriminator_weight must be >= 0 (0 turns the discriminator off), "
                             f"got {discriminator_weight}.")
        self.attach_codec(movq_path)
        self.video_decoder = TemporalMoVQDecoder(self.codec.movq, finetune=finetune, base_path=movq_path,
                                                 **(decoder or {}))
        self.lpips = None if lpips_path is None else load_lpips(lpips_path, "model.lpips_path")
        if self.lpips is not None:
            self.freeze("lpips", lpips_path)
        self.lpips_weight = lpips_weight
        self.discriminator = PatchDiscriminator3D(discriminator_channels) if discriminator_weight > 0 else None
        self.discriminator_weight = discriminator_weight
        self.val_video = VideoReconstructionMetrics(with_lpips=self.lpips is not None)
        self.val_image = VideoReconstructionMetrics(with_lpips=self.lpips is not None)

    def _lpips(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-frame LPIPS (B·F,) of videos (B, F, 3, H, W) in [-1, 1]."""
        return frame_lpips(self.lpips, pred, target)

    def _adversarial(self, rec: torch.Tensor, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(generator hinge loss, discriminator hinge loss); each only carries gradient to its own network."""
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        generator = -functional_call(self.discriminator, frozen, (rec,)).mean()
        discriminator = (F.relu(1 - self.discriminator(video)).mean()
                         + F.relu(1 + self.discriminator(rec.detach())).mean())
        return generator, discriminator

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        video = batch["video"]
        rec = self.video_decoder.decode(self.codec.encode(video) / self.codec.scale)
        terms = {"l1": F.l1_loss(rec, video)}
        loss = terms["l1"]
        if self.lpips is not None:
            terms["lpips"] = self._lpips(rec, video).mean()
            loss = loss + self.lpips_weight * terms["lpips"]
        if self.discriminator is not None:
            terms["generator"], terms["discriminator"] = self._adversarial(rec, video)
            loss = loss + self.discriminator_weight * terms["generator"] + terms["discriminator"]
        self.log_dict({"train/loss": loss, **{f"train/{k}": v for k, v in terms.items()}}, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        video = batch["video"]
        z = self.codec.encode(video)
        rec = self.video_decoder.decode(z / self.codec.scale).clamp(-1, 1)
        image_rec = self.codec.decode(z).clamp(-1, 1)
        for metrics, pred in ((self.val_video, rec), (self.val_image, image_rec)):
            metrics.update(pred, video, None if self.lpips is None else self._lpips(pred, video))
        if batch_idx == 0:
            strip = image_grid(torch.cat([video[0], image_rec[0], rec[0]]), nrow=video.shape[1])
            log_image(self.trainer, "val/reconstructions", strip,
                      caption="rows: ground truth | image decoder | video decoder")

    def on_validation_epoch_end(self) -> None:
        for metrics, suffix in ((self.val_video, ""), (self.val_image, "_image_decoder")):
            self.log_dict({f"val/{k}{suffix}": v for k, v in metrics.compute().items()}, prog_bar=not suffix)
            metrics.reset()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["parameter_counts"] = self.video_decoder.parameter_counts()

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype = torch.float16) -> Path:
        """Write the video decoder (loads with ``TemporalMoVQDecoder.from_pretrained``)."""
        return self.video_decoder.save_pretrained(directory, dtype)
