"""Shapes-world classifier stage: trains the FVD / IS detector of the shapes world on ground-truth attributes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from fusionframes.data.shapes import ShapeScene
from fusionframes.models.shapes_classifier import ATTRIBUTE_CLASSES, ShapesVideoClassifier
from fusionframes.modules.base import OptimizerFactory, StageModule
from fusionframes.utils.validation import check_probability


def attribute_labels(metas: list[str], device: torch.device) -> dict[str, torch.Tensor]:
    """Class indices (B,) of every attribute from the batch's ``meta`` JSON strings (ShapeScene.to_dict)."""
    scenes = [ShapeScene.from_dict(json.loads(m)) for m in metas]
    return {name: torch.tensor([classes.index(getattr(s, name)) for s in scenes], device=device)
            for name, classes in ATTRIBUTE_CLASSES.items()}


class AttributeAccuracy(nn.Module):
    """Accuracy of every attribute and of all of them at once (``all``), accumulated over batches."""

    def __init__(self) -> None:
        super().__init__()
        self.each = nn.ModuleDict({name: MulticlassAccuracy(len(classes), average="micro")
                                   for name, classes in ATTRIBUTE_CLASSES.items()})
        self.all = MeanMetric()

    def update(self, logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> None:
        correct = torch.ones_like(labels["colour"], dtype=torch.bool)
        for name, metric in self.each.items():
            metric.update(logits[name], labels[name])
            correct &= logits[name].argmax(-1) == labels[name]
        self.all.update(correct.float())

    def compute(self) -> dict[str, torch.Tensor]:
        return {**{name: metric.compute() for name, metric in self.each.items()}, "all": self.all.compute()}

    def reset(self) -> None:
        for metric in (*self.each.values(), self.all):
            metric.reset()


class ShapesClassifierModule(StageModule):
    """Cross-entropy over every attribute of :data:`ATTRIBUTE_CLASSES` for clips ``video`` (B, F, 3, H, W).

    Generated videos reach the classifier through the MoVQ decoder, which softens the outline of a shape a
    few pixels wide; so with probability ``reconstruct_prob`` a training clip is replaced by its
    reconstruction through the frozen MoVQ (``movq_path``), and every clip gets Gaussian pixel noise of a
    random standard deviation in [0, ``noise_std``]. ``init_from``: a classifier directory to continue from.
    Validation logs ``val/acc_<attribute>`` and ``val/acc_all`` (every attribute right) on the true clips
    and, with a MoVQ, ``val/acc_<attribute>_reconstructed`` on their reconstructions.
    """

    def __init__(self, classifier: dict[str, Any], optimizer: OptimizerFactory, lr_scheduler: Any = None,
                 noise_std: float = 0.05, movq_path: str | None = None, reconstruct_prob: float = 0.0,
                 init_from: str | None = None) -> None:
        super().__init__(optimizer, lr_scheduler)
        if noise_std < 0:
            raise ValueError(f"model.noise_std must be >= 0, got {noise_std}.")
        check_probability("model.reconstruct_prob", reconstruct_prob)
        if reconstruct_prob > 0 and movq_path is None:
            raise ValueError("model.reconstruct_prob > 0 needs model.movq_path (the MoVQ that reconstructs clips).")
        self.classifier = ShapesVideoClassifier(**classifier)
        if init_from is not None:
            self.classifier.load_state_dict(ShapesVideoClassifier.from_pretrained(init_from, "model.init_from")
                                            .state_dict())
        if movq_path is not None:
            self.attach_codec(movq_path)
        self.noise_std = noise_std
        self.reconstruct_prob = reconstruct_prob
        self.val_true = AttributeAccuracy()
        self.val_reconstructed = AttributeAccuracy() if movq_path is not None else None

    @torch.no_grad()
    def reconstruct(self, video: torch.Tensor) -> torch.Tensor:
        """Clips (B, F, 3, H, W) through the frozen MoVQ (encode, decode unquantised), clamped to [-1, 1]."""
        return self.codec.decode(self.codec.encode(video)).clamp(-1, 1).to(video.dtype)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        video = batch["video"]
        generator = self.batch_generator(batch_idx)
        if self.reconstruct_prob > 0:
            chosen = torch.rand(video.shape[0], generator=generator, device=self.device) < self.reconstruct_prob
            if chosen.any():
                video = video.clone()
                video[chosen] = self.reconstruct(video[chosen])
        std = torch.rand(video.shape[0], generator=generator, device=self.device) * self.noise_std
        noise = torch.randn(video.shape, generator=generator, device=self.device, dtype=video.dtype)
        logits = self.classifier.logits(video + rearrange(std, "b -> b 1 1 1 1") * noise)
        labels = attribute_labels(batch["meta"], self.device)
        losses = {name: F.cross_entropy(logits[name], labels[name]) for name in logits}
        loss = torch.stack(list(losses.values())).sum()
        self.log_dict({"train/loss": loss, **{f"train/loss_{k}": v for k, v in losses.items()}}, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        labels = attribute_labels(batch["meta"], self.device)
        self.val_true.update(self.classifier.logits(batch["video"]), labels)
        if self.val_reconstructed is not None:
            self.val_reconstructed.update(self.classifier.logits(self.reconstruct(batch["video"])), labels)

    def on_validation_epoch_end(self) -> None:
        for metrics, suffix in ((self.val_true, ""), (self.val_reconstructed, "_reconstructed")):
            if metrics is not None:
                self.log_dict({f"val/acc_{k}{suffix}": v for k, v in metrics.compute().items()}, prog_bar=not suffix)
                metrics.reset()

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype = torch.float16) -> Path:
        """Write the classifier (loads with ``ShapesVideoClassifier.from_pretrained``)."""
        return self.classifier.save_pretrained(directory, dtype)
