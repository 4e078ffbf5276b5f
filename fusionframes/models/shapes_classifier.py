"""Shapes-world video classifier: the framework's own FVD feature extractor and IS classifier for the shapes world.

A small 3D CNN trained by ``python train.py experiment=shapes/classifier`` to recognise every ground-truth
attribute of a 16-keyframe clip (colour, shape, motion, background, speed). It plays the role I3D plays
in the StyleGAN-V FVD protocol (its embedding are the FVD features) and Inception plays in IS (its joint
colour x shape x motion prediction is the IS class distribution).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors.torch import load_file, save_file
from torch import nn

from fusionframes.data.shapes import BACKGROUNDS, COLOURS, MOTIONS, SHAPES, SPEEDS
from fusionframes.utils.pretrained import require_dir

#: Ground-truth attributes the classifier predicts, with their classes in label order.
ATTRIBUTE_CLASSES: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS), "shape": SHAPES, "motion": MOTIONS, "background": tuple(BACKGROUNDS), "speed": SPEEDS,
}
#: Attributes a caption asks for that define the IS classes (6 x 4 x 6 = 144 joint classes).
JOINT_ATTRIBUTES: tuple[str, ...] = ("colour", "shape", "motion")
WEIGHTS_NAME, CONFIG_NAME = "model.safetensors", "config.json"


def _conv_block(in_channels: int, out_channels: int, kernel: tuple[int, int, int], stride: tuple[int, int, int],
                padding: tuple[int, int, int], pool: bool = False) -> nn.Sequential:
    layers = [nn.Conv3d(in_channels, out_channels, kernel, stride, padding, bias=False),
              nn.BatchNorm3d(out_channels), nn.SiLU()]
    return nn.Sequential(*layers, *([nn.MaxPool3d((1, 2, 2))] if pool else []))


class ShapesVideoClassifier(nn.Module):
    """Videos (B, F, 3, H, W) in [-1, 1] -> embedding (B, feature_dim) (:meth:`forward`, the FVD features) and
    per-attribute logits (:meth:`logits`).

    Frames are resized to ``resolution``; two 1x3x3 convs, each followed by 2x2 max pooling, then three
    3x3x3 conv blocks reduce (F, 64, 64) to (F/4, 4, 4). (A 4x4 patchifying stem, or GroupNorm in place of
    BatchNorm, left the shape head at chance: a shape is a few pixels wide, its outline must be seen at full
    resolution.) The embedding projects the time-averaged 4x4 grid (where the shape is)
    together with the maximum over time and space of every channel (what the shape is, wherever it is) to
    ``feature_dim``. Any F >= 1 works; trained on 16 keyframes at 2 fps.
    """

    def __init__(self, width: int = 32, feature_dim: int = 64, resolution: int = 64) -> None:
        super().__init__()
        if resolution % 16:
            raise ValueError(f"resolution must be a multiple of 16, got {resolution}.")
        self.config = {"width": width, "feature_dim": feature_dim, "resolution": resolution}
        self.resolution = resolution
        self.num_features = feature_dim  # read by torchmetrics' Fréchet distance
        self.backbone = nn.Sequential(
            _conv_block(3, width // 2, (1, 3, 3), (1, 1, 1), (0, 1, 1), pool=True),
            _conv_block(width // 2, width, (1, 3, 3), (1, 1, 1), (0, 1, 1), pool=True),
            _conv_block(width, 2 * width, (3, 3, 3), (1, 2, 2), (1, 1, 1)),
            _conv_block(2 * width, 4 * width, (3, 3, 3), (2, 2, 2), (1, 1, 1)),
            _conv_block(4 * width, 4 * width, (3, 3, 3), (2, 1, 1), (1, 1, 1)),
        )
        grid = resolution // 16
        self.project = nn.Linear(4 * width * (grid * grid + 1), feature_dim)
        self.heads = nn.ModuleDict({name: nn.Linear(feature_dim, len(classes))
                                    for name, classes in ATTRIBUTE_CLASSES.items()})

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        """(B, F, 3, H, W) in [-1, 1] -> embedding (B, feature_dim)."""
        b = videos.shape[0]
        frames = rearrange(videos.float(), "b f c h w -> (b f) c h w")
        if frames.shape[-1] != self.resolution or frames.shape[-2] != self.resolution:
            frames = F.interpolate(frames, size=(self.resolution, self.resolution), mode="bilinear", antialias=True)
        x = self.backbone(rearrange(frames, "(b f) c h w -> b c f h w", b=b))
        where = rearrange(x.mean(dim=2), "b c h w -> b (c h w)")
        return self.project(torch.cat([where, x.amax(dim=(2, 3, 4))], dim=1))

    def logits(self, videos: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits (B, classes) for every attribute of :data:`ATTRIBUTE_CLASSES`."""
        features = F.silu(self(videos))
        return {name: head(features) for name, head in self.heads.items()}

    def joint_log_probs(self, videos: torch.Tensor) -> torch.Tensor:
        """log p(colour) + log p(shape) + log p(motion) for every joint class: (B, 144), colour-major."""
        logits = self.logits(videos)
        joint = logits[JOINT_ATTRIBUTES[0]].log_softmax(-1)
        for name in JOINT_ATTRIBUTES[1:]:
            joint = (joint[:, :, None] + logits[name].log_softmax(-1)[:, None, :]).flatten(1)
        return joint

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write ``model.safetensors`` (in ``dtype`` if given) and ``config.json`` (sizes and class names)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: (v if dtype is None else v.to(dtype)).contiguous() for k, v in self.state_dict().items()}
        save_file(state, directory / WEIGHTS_NAME)
        config = {**self.config, "attributes": {k: list(v) for k, v in ATTRIBUTE_CLASSES.items()}}
        (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, config_key: str = "classifier_path") -> ShapesVideoClassifier:
        """Load a directory written by :meth:`save_pretrained` (fp32, eval mode)."""
        root = require_dir(directory, config_key)
        if not (root / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{config_key}={root} has no {CONFIG_NAME}; it is not a shapes classifier "
                                    "directory (python train.py experiment=shapes/classifier writes one).")
        config = json.loads((root / CONFIG_NAME).read_text())
        attributes = {k: tuple(v) for k, v in config.pop("attributes").items()}
        if attributes != ATTRIBUTE_CLASSES:
            raise ValueError(f"{config_key}={root} was trained on other shapes-world classes {attributes}.")
        model = cls(**config)
        model.load_state_dict({k: v.float() for k, v in load_file(root / WEIGHTS_NAME).items()})
        return model.eval()
