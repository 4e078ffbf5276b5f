"""Text-to-image model bundle: UNet, text encoder and noise schedule, saved and loaded as one directory."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DDPMScheduler, Kandinsky3UNet, UNet2DConditionModel
from torch import nn

from fusionframes.diffusion import NoiseSchedule, classifier_free_guidance, sample
from fusionframes.models.text_encoders import ShapesTextEncoder, T5TextEncoder
from fusionframes.utils.pretrained import require_dir, save_model


class TextToImageModel(nn.Module):
    """A latent T2I diffusion model: ``unet``, ``text_encoder`` and ``schedule``.

    ``unet`` is a diffusers ``UNet2DConditionModel`` or ``Kandinsky3UNet``; ``text_encoder`` anything with
    ``encode(prompts) -> (hidden (B, L, D), mask (B, L))``. Directory layout (diffusers-style): ``unet/``,
    ``text_encoder/``, ``scheduler/`` (plus ``tokenizer/`` for Kandinsky 3 pipeline directories).
    """

    def __init__(self, unet: UNet2DConditionModel | Kandinsky3UNet, text_encoder: ShapesTextEncoder | T5TextEncoder,
                 schedule: NoiseSchedule) -> None:
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
            NoiseSchedule.from_scheduler_config(dict(DDPMScheduler.load_config(require_dir(root / "scheduler",
                                                                                         config_key)))),
        )

    @classmethod
    def from_kandinsky3(cls, path: str | Path, text_encoder_path: str | Path | None = None,
                        config_key: str = "model.backbone.path") -> TextToImageModel:
        """Kandinsky 3 from a local diffusers ``Kandinsky3Pipeline`` directory (``unet/``, ``text_encoder/``,
        ``tokenizer/``, ``scheduler/``); ``text_encoder_path`` overrides the T5 encoder (with its tokenizer)."""
        root = require_dir(path, config_key)
        unet = Kandinsky3UNet.from_pretrained(require_dir(root / "unet", config_key), torch_dtype=torch.float32)
        if text_encoder_path is None:
            text_encoder = T5TextEncoder(str(root / "text_encoder"), config_key=config_key,
                                         tokenizer_path=str(root / "tokenizer"))
        else:
            text_encoder = T5TextEncoder(str(text_encoder_path), config_key="model.backbone.text_encoder_path")
        schedule = NoiseSchedule.from_scheduler_config(dict(DDPMScheduler.load_config(root / "scheduler")))
        return cls(unet, text_encoder, schedule)

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype = torch.float16) -> Path:
        directory = Path(directory)
        save_model(self.unet, directory / "unet", dtype)
        save_model(self.text_encoder, directory / "text_encoder", dtype)
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
