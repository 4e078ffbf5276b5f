"""Text-to-image model bundle: UNet, text encoder and noise schedule, saved and loaded as one directory."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from torch import nn

from fusionframes.diffusion import NoiseSchedule, classifier_free_guidance, sample
from fusionframes.models.text_encoders import ShapesTextEncoder
from fusionframes.utils.pretrained import require_dir


class TextToImageModel(nn.Module):
    """A latent T2I diffusion model: ``unet`` (diffusers UNet2DConditionModel), ``text_encoder``, ``schedule``.

    Directory layout (diffusers-style): ``unet/``, ``text_encoder/``, ``scheduler/``.
    """

    def __init__(self, unet: UNet2DConditionModel, text_encoder: ShapesTextEncoder, schedule: NoiseSchedule) -> None:
        super().__init__()
        self.unet = unet
        self.text_encoder = text_encoder
        self.schedule = schedule

    @classmethod
    def from_pretrained(cls, path: str | Path, config_key: str = "model.t2i_path") -> TextToImageModel:
        root = require_dir(path, config_key)
        return cls(
            UNet2DConditionModel.from_pretrained(root / "unet", torch_dtype=torch.float32),
            ShapesTextEncoder.from_pretrained(root / "text_encoder").float(),
            NoiseSchedule.from_scheduler_config(dict(DDPMScheduler.load_config(root / "scheduler"))),
        )

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype = torch.float16) -> Path:
        directory = Path(directory)
        copy.deepcopy(self.unet).to(dtype).save_pretrained(directory / "unet", safe_serialization=True)
        copy.deepcopy(self.text_encoder).to(dtype).save_pretrained(directory / "text_encoder")
        self.schedule.scheduler("ddpm").save_pretrained(directory / "scheduler")
        return directory

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """UNet prediction for latents (B, C, h, w) at timesteps (B,) given text (B, L, D) and mask (B, L)."""
        return self.unet(z_t, t, encoder_hidden_states=context, encoder_attention_mask=mask).sample

    @torch.no_grad()
    def generate(self, prompts: list[str], latent_size: int, num_inference_steps: int = 25,
                 guidance_scale: float = 4.0, generator: torch.Generator | None = None,
                 progress: bool = False) -> torch.Tensor:
        """Sample one latent per prompt with classifier-free guidance -> (B, C, latent_size, latent_size)."""
        device = next(self.unet.parameters()).device
        context, mask = self.text_encoder.encode(list(prompts) + [""] * len(prompts))
        shape = (len(prompts), self.unet.config.in_channels, latent_size, latent_size)

        def denoise(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            cond, uncond = self(torch.cat([z_t, z_t]), torch.cat([t, t]), context, mask).chunk(2)
            return classifier_free_guidance(cond, uncond, guidance_scale)

        return sample(denoise, shape, self.schedule, num_inference_steps, generator=generator,
                      progress=progress, device=device)
