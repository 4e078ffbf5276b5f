"""Inbetweening between two given keyframes with the pipeline's keyframe model and a time-reversal sampler.

A method is a file of the Hydra group ``conf/inbetween`` (gi, trf, vibid, mpd_trf, mpd_vibid), built by
``base.build_sampler``; GI also needs the backward-motion model exported by ``experiment=gi_backward``. Keyframes
are image files of the pipeline's resolution (encoded with its MoVQ) or ``.safetensors`` files holding one keyframe
latent (C, h, w). What ``python sample.py inbetween.method=<method> ...`` runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError
from PIL import Image, UnidentifiedImageError
from safetensors.torch import load_file
from torch import Tensor

from fusionframes.config import CONFIG_DIR
from fusionframes.data.samplers import frames_to_tensor
from fusionframes.models.backward_motion import BackwardKeyframeUNet
from fusionframes.models.latents import LatentCodec
from fusionframes.models.temporal import frame_positions
from fusionframes.pipeline import FusionFramesPipeline
from fusionframes.sampling.time_reversal.base import build_sampler
from fusionframes.sampling.time_reversal.denoiser import I2VDenoiser
from fusionframes.sampling.time_reversal.gi import GISampler
from fusionframes.utils.validation import check_choice

METHODS_DIR = CONFIG_DIR / "inbetween"


def methods() -> list[str]:
    """The inbetweening methods: the configs of ``conf/inbetween``."""
    return sorted(path.stem for path in METHODS_DIR.glob("*.yaml"))


def method_config(method: str, settings: Mapping[str, Any] | None = None, key: str = "inbetween") -> DictConfig:
    """``conf/inbetween/<method>.yaml`` with ``settings`` (e.g. ``{"num_steps": 10}``) merged over it; ``key``
    names the method (``<key>.method``) and the settings (``<key>.settings``) in errors."""
    check_choice(f"{key}.method", method, methods())
    config = OmegaConf.load(METHODS_DIR / f"{method}.yaml")
    if not settings:
        return config
    OmegaConf.set_struct(config, True)
    try:
        config = OmegaConf.merge(config, settings)
    except ConfigKeyError as error:
        known = sorted(k for k in config if k != "_target_")
        raise ValueError(f"{key}.settings.{error.full_key} is not a setting of {method}; its settings are "
                         f"{known}.") from None
    OmegaConf.set_struct(config, False)
    return config


def needs_backward(config: Mapping[str, Any]) -> bool:
    """Whether a method config's sampler is GI's, which needs a backward-motion model."""
    return issubclass(get_class(config["_target_"]), GISampler)


def load_keyframe(path: str | Path, key: str, codec: LatentCodec, resolution: int) -> Tensor:
    """A keyframe latent (C, h, w): an image file of ``resolution`` x ``resolution`` pixels encoded with ``codec``,
    or a ``.safetensors`` file holding one latent; ``key`` names the setting in errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{key}={path} does not exist; give an image file or a .safetensors keyframe latent.")
    size = resolution // codec.factor
    shape = (codec.channels, size, size)
    if path.suffix == ".safetensors":
        tensors = list(load_file(path).values())
        if len(tensors) != 1 or tuple(tensors[0].shape) != shape:
            found = [tuple(t.shape) for t in tensors]
            raise ValueError(f"{key}={path} holds tensors of shapes {found}; give one keyframe latent of shape "
                             f"{shape}.")
        return tensors[0].float().to(codec.movq.device)
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
    except UnidentifiedImageError:
        raise ValueError(f"{key}={path} is not an image file or a .safetensors keyframe latent.") from None
    if pixels.shape[:2] != (resolution, resolution):
        raise ValueError(f"{key}={path} is {pixels.shape[1]}x{pixels.shape[0]} pixels; this pipeline's frames are "
                         f"{resolution}x{resolution}, give an image of that size.")
    return codec.encode(frames_to_tensor(pixels[None]).to(codec.movq.device))[0]


def load_backward(directory: str | Path, pipeline: FusionFramesPipeline, forward_dir: str | Path,
                  key: str = "inbetween.backward_dir") -> BackwardKeyframeUNet:
    """The backward-motion model at ``directory`` on the pipeline's keyframe model (loaded from ``forward_dir``)."""
    model = BackwardKeyframeUNet.from_pretrained(directory, pipeline.keyframes, forward_dir, key)
    return model.to(pipeline.device).eval()


@torch.no_grad()
def inbetween(pipeline: FusionFramesPipeline, start: Tensor, end: Tensor, prompt: str, config: Mapping[str, Any],
              num_frames: int = 16, backward: BackwardKeyframeUNet | None = None,
              generator: torch.Generator | None = None, progress: bool = False) -> Tensor:
    """Keyframe latents (B, F, C, h, w) from ``start`` to ``end`` (B, C, h, w), frames 0 and F-1 exactly.

    ``config``: a method config (``method_config``); the keyframe model is text-conditioned on ``prompt`` (both
    directions) and sees the frames ``pipeline.frame_stride`` source frames apart, as in text-to-video.
    """
    b = start.shape[0]
    context, mask = pipeline.encode_prompt([prompt] * b)
    positions = frame_positions(b, num_frames, pipeline.frame_stride, start.device)
    schedule = pipeline.t2i.schedule
    runtime: dict[str, Any] = {"denoiser": I2VDenoiser(pipeline.keyframes, schedule, context, mask, positions),
                               "schedule": schedule}
    if needs_backward(config):
        if backward is None:
            raise ValueError("GI needs a backward-motion model; set inbetween.backward_dir to an export of "
                             "experiment=gi_backward.")
        runtime["backward"] = I2VDenoiser(backward, schedule, context, mask, positions)
    try:
        sampler = build_sampler(config, **runtime)
    except InstantiationException as error:  # a bad setting: the sampler's own one-sentence error
        if isinstance(error.__cause__, ValueError):
            raise error.__cause__ from None
        raise
    return sampler.sample(start, end, num_frames, generator, progress)
