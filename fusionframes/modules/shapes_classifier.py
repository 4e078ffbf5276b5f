"""Shapes-world classifier stage: trains the FVD / IS detector of the shapes world on ground-truth attributes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from fusionframes.data.shapes import ShapeScene
from fusionframes.models.shapes_classifier import ATTRIBUTE_CLASSES, ShapesVideoClassifier
from fusionframes.modules.base import OptimizerFactory, StageModule


def attribute_labels(metas: list[str], device: torch.device) -> dict[str, torch.Tensor]:
    """Class indices (B,) of every attribute from the batch's ``meta`` JSON strings (ShapeScene.to_dict)."""
    scenes = [ShapeScene.from_dict(json.loads(m)) for m in metas]
    return {name: torch.tensor([classes.index(getattr(s, name)) for s in scenes], device=device)
            for name, classes in ATTRIBUTE_CLASSES.items()}


class ShapesClassifierModule(StageModule):
    """Cross-entropy over every attribute of :data:`ATTRIBUTE_CLASSES` for clips ``video`` (B, F, 3, H, W).

    Training clips get Gaussian pixel noise of a random standard deviation in [0, ``noise_std``] so the
    detector is not thrown by the small artefacts of decoded samples. Validation logs ``val/acc_<attribute>``
    and ``val/acc_all`` (every attribute right).
    """

    def __init__(self, classifier: dict[str, Any], optimizer: OptimizerFactory, lr_scheduler: Any = None,
                 noise_std: float = 0.05) -> None:
        super().__init__(optimizer, lr_scheduler)
        if noise_std < 0:
            raise ValueError(f"model.noise_std must be >= 0, got {noise_std}.")
        self.classifier = ShapesVideoClassifier(**classifier)
        self.noise_std = noise_std
        self.val_accuracy = nn.ModuleDict({name: MulticlassAccuracy(len(classes), average="micro")
                                           for name, classes in ATTRIBUTE_CLASSES.items()})
        self.val_all = MeanMetric()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        video = batch["video"]
        generator = self.batch_generator(batch_idx)
        std = torch.rand(video.shape[0], 1, 1, 1, 1, generator=generator, device=self.device) * self.noise_std
        noise = torch.randn(video.shape, generator=generator, device=self.device, dtype=video.dtype)
        logits = self.classifier.logits(video + std * noise)
        labels = attribute_labels(batch["meta"], self.device)
        losses = {name: F.cross_entropy(logits[name], labels[name]) for name in logits}
        loss = torch.stack(list(losses.values())).sum()
        self.log_dict({"train/loss": loss, **{f"train/loss_{k}": v for k, v in losses.items()}}, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self.classifier.logits(batch["video"])
        labels = attribute_labels(batch["meta"], self.device)
        correct = torch.ones_like(labels["colour"], dtype=torch.bool)
        for name, metric in self.val_accuracy.items():
            metric.update(logits[name], labels[name])
            correct &= logits[name].argmax(-1) == labels[name]
        self.val_all.update(correct.float())

    def on_validation_epoch_end(self) -> None:
        values = {f"val/acc_{name}": metric.compute() for name, metric in self.val_accuracy.items()}
        self.log_dict({**values, "val/acc_all": self.val_all.compute()}, prog_bar=True)
        for metric in (*self.val_accuracy.values(), self.val_all):
            metric.reset()

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype = torch.float16) -> Path:
        """Write the classifier (loads with ``ShapesVideoClassifier.from_pretrained``)."""
        return self.classifier.save_pretrained(directory, dtype)
