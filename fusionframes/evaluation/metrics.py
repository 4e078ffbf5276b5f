"""The metrics an evaluation config asks for, built once per evaluation (real-video statistics are kept)."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig

from fusionframes.metrics.clipsim import CLIPSIM
from fusionframes.metrics.detectors import load_video_classifier, load_video_features
from fusionframes.metrics.fvd import FrechetVideoDistance
from fusionframes.metrics.inception_score import VideoInceptionScore
from fusionframes.metrics.shapes import ShapesClassifierAccuracy, ShapesGroundTruthScores
from fusionframes.models.shapes_classifier import ShapesVideoClassifier


class VideoMetrics:
    """FVD, IS, CLIPSIM and the shapes-world scores over generated videos, each only when configured.

    ``cfg`` (``evaluation.metrics``): ``fvd_detector`` / ``is_classifier`` (paths, null to skip), ``clip_path``
    (null to skip), ``shapes_scores`` (ground-truth pixel scores and, when ``is_classifier`` is the shapes
    classifier, its attribute accuracy), ``num_frames`` (16) and ``is_splits``. Real clips enter FVD once
    (:meth:`add_real`) and stay across :meth:`reset`.
    """

    def __init__(self, cfg: DictConfig, device: torch.device, prefix: str = "evaluation.metrics") -> None:
        self.fvd = self.inception = self.clipsim = self.shapes = self.attributes = None
        if cfg.fvd_detector:
            detector = load_video_features(cfg.fvd_detector, f"{prefix}.fvd_detector")
            self.fvd = FrechetVideoDistance(detector, cfg.num_frames, reset_real_features=False).to(device)
        if cfg.is_classifier:
            classifier = load_video_classifier(cfg.is_classifier, f"{prefix}.is_classifier")
            self.inception = VideoInceptionScore(classifier, cfg.num_frames, cfg.is_splits).to(device)
        if cfg.clip_path:
            self.clipsim = CLIPSIM(cfg.clip_path, f"{prefix}.clip_path").to(device)
        if cfg.shapes_scores:
            self.shapes = ShapesGroundTruthScores()
            shapes_classifier = getattr(self.inception.inception, "classifier", None) if self.inception else None
            if isinstance(shapes_classifier, ShapesVideoClassifier):
                self.attributes = ShapesClassifierAccuracy(shapes_classifier).to(device)
        self.num_frames = cfg.num_frames

    def add_real(self, videos: torch.Tensor) -> None:
        """Real clips (B, F, 3, H, W) in [-1, 1] for FVD."""
        if self.fvd is not None:
            self.fvd.update(videos, real=True)

    def update(self, videos: torch.Tensor, prompts: list[str], keyframes: torch.Tensor | None = None) -> None:
        """Generated videos (B, F, 3, H, W) in [-1, 1] and their prompts; the shapes classifier, trained on
        2 fps keyframes, sees ``keyframes`` (B, K, 3, H, W) when given, else the first ``num_frames`` frames."""
        if self.fvd is not None:
            self.fvd.update(videos, real=False)
        if self.inception is not None:
            self.inception.update(videos)
        if self.clipsim is not None:
            self.clipsim.update(videos, prompts)
        if self.shapes is not None:
            self.shapes.update(videos.cpu(), prompts)
        if self.attributes is not None:
            self.attributes.update(videos[:, : self.num_frames] if keyframes is None else keyframes, prompts)

    def compute(self) -> dict[str, float]:
        values: dict[str, Any] = {}
        if self.fvd is not None:
            values["fvd"] = self.fvd.compute()
        if self.inception is not None:
            values["is"], values["is_std"] = self.inception.compute()
        if self.clipsim is not None:
            values["clipsim"] = self.clipsim.compute()
        if self.shapes is not None:
            values.update(self.shapes.compute())
        if self.attributes is not None:
            values.update({f"classifier_{k}": v for k, v in self.attributes.compute().items()})
        return {k: float(v) for k, v in values.items()}

    def reset(self) -> None:
        for metric in (self.fvd, self.inception, self.clipsim, self.shapes, self.attributes):
            if metric is not None:
                metric.reset()
