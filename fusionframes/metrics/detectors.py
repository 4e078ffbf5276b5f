"""Feature extractors and classifiers behind FVD, IS and CLIPSIM, loaded from local paths only.

Every detector here is an ``nn.Module`` taking videos (B, F, 3, H, W) in [-1, 1] (the framework's
convention) and converting them to what the wrapped network expects:

- :class:`I3DFeatures`: StyleGAN-V's TorchScript I3D (``i3d_torchscript.pt``), the FVD detector of the
  StyleGAN-V protocol: uint8 clips (B, 3, T, H, W), called with ``rescale=True, resize=True,
  return_features=True`` -> (B, 400).
- :class:`InceptionLogits`: StyleGAN2-ADA / StyleGAN-V's TorchScript Inception-v3
  (``inception-2015-12-05.pt``), the IS classifier: uint8 frames (N, 3, H, W), called with
  ``no_output_bias=True`` -> class probabilities (N, 1008), returned as log-probabilities (logits for IS).
- the shapes-world classifier (:class:`~fusionframes.models.shapes_classifier.ShapesVideoClassifier`), a
  directory written by the framework, which serves as both (embedding for FVD, joint attribute logits for IS).

A missing path is one error naming the config key; nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from einops import rearrange
from torch import nn

from fusionframes.models.shapes_classifier import ShapesVideoClassifier
from fusionframes.utils.pretrained import require_dir


def require_file(path: str | Path | None, config_key: str, what: str) -> Path:
    """``path`` as a Path to an existing file, or one clear error naming ``config_key``."""
    if path is None or str(path) == "":
        raise FileNotFoundError(f"{config_key} is not set; point it at a local {what} (weights are never downloaded).")
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{config_key}={p} is not a file; point it at a local {what} "
                                "(weights are never downloaded).")
    return p


def to_uint8_video(videos: torch.Tensor) -> torch.Tensor:
    """(B, F, 3, H, W) in [-1, 1] -> uint8 (B, F, 3, H, W), rounded as StyleGAN-V quantises generated videos."""
    return (videos.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)


class I3DFeatures(nn.Module):
    """StyleGAN-V's TorchScript I3D: videos (B, F, 3, H, W) in [-1, 1] -> features (B, 400) before the softmax."""

    def __init__(self, detector: torch.jit.ScriptModule, num_features: int = 400) -> None:
        super().__init__()
        self.detector = detector
        self.num_features = num_features

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        clips = rearrange(to_uint8_video(videos), "b f c h w -> b c f h w")
        return self.detector(clips, rescale=True, resize=True, return_features=True)


class InceptionLogits(nn.Module):
    """StyleGAN's TorchScript Inception-v3: videos (B, F, 3, H, W) in [-1, 1] -> per-frame log-probabilities
    (B·F, K); torchmetrics' InceptionScore applies the softmax, which gives the detector's probabilities back."""

    def __init__(self, detector: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        frames = rearrange(to_uint8_video(videos), "b f c h w -> (b f) c h w")
        return self.detector(frames, no_output_bias=True).clamp_min(1e-12).log()


class ShapesJointLogits(nn.Module):
    """The shapes-world classifier as an IS classifier: videos -> joint (colour, shape, motion) log-probabilities."""

    def __init__(self, classifier: ShapesVideoClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        return self.classifier.joint_log_probs(videos)


def _load_script(path: Path) -> torch.jit.ScriptModule:
    return torch.jit.load(str(path), map_location="cpu").eval()


def _frozen(module: nn.Module) -> nn.Module:
    module.requires_grad_(False)
    return module.eval()


def load_video_features(path: str | Path | None, config_key: str) -> nn.Module:
    """FVD feature extractor: a shapes-world classifier directory, or StyleGAN-V's I3D TorchScript file."""
    if path is not None and Path(path).expanduser().is_dir():
        return _frozen(ShapesVideoClassifier.from_pretrained(require_dir(path, config_key), config_key))
    return _frozen(I3DFeatures(_load_script(require_file(path, config_key, "I3D TorchScript file"))))


def load_video_classifier(path: str | Path | None, config_key: str) -> nn.Module:
    """IS classifier: a shapes-world classifier directory (one prediction per clip), or StyleGAN's Inception-v3
    TorchScript file (one prediction per frame)."""
    if path is not None and Path(path).expanduser().is_dir():
        classifier = ShapesVideoClassifier.from_pretrained(require_dir(path, config_key), config_key)
        return _frozen(ShapesJointLogits(classifier))
    return _frozen(InceptionLogits(_load_script(require_file(path, config_key, "Inception TorchScript file"))))


class CLIPEmbeddings(nn.Module):
    """A transformers ``CLIPModel`` whose ``get_image_features`` / ``get_text_features`` return the projected
    embeddings (B, D) as tensors, as torchmetrics' CLIPScore expects: transformers >= 5 returns model outputs
    whose ``pooler_output`` holds them."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = model.config

    @staticmethod
    def _embeddings(output: torch.Tensor | object) -> torch.Tensor:
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self._embeddings(self.model.get_image_features(pixel_values=pixel_values))

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self._embeddings(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))


def load_clip(path: str | Path | None, config_key: str):
    """(:class:`CLIPEmbeddings`, CLIPProcessor) from a local transformers CLIP directory (``save_pretrained``)."""
    from transformers import CLIPModel, CLIPProcessor

    root = require_dir(path, config_key)
    if not (root / "config.json").is_file():
        raise FileNotFoundError(f"{config_key}={root} has no config.json; it is not a transformers CLIP directory.")
    model = CLIPModel.from_pretrained(root, local_files_only=True)
    return _frozen(CLIPEmbeddings(model)), CLIPProcessor.from_pretrained(root, local_files_only=True)
