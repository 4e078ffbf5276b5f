"""Skip training steps whose loss or gradients are not finite; stop a run that keeps producing them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch

log = logging.getLogger(__name__)


class SkipNonFiniteSteps(L.Callback):
    """Drop the gradients of a step with a non-finite loss or gradient, so the optimiser leaves weights
    and moments untouched; count it (``train/nonfinite_steps``) and log its step.

    After ``max_consecutive`` such steps in a row the weights are still those of the last good step: they
    are saved to ``dirpath/filename.ckpt`` and the run stops with an error naming it. Under fp16 mixed
    precision the GradScaler already skips steps with inf gradients while it tunes its scale, so there only
    non-finite losses count. Lightning has no built-in for this (``detect_anomaly`` only raises).
    """

    def __init__(self, dirpath: str | Path, filename: str = "last", max_consecutive: int = 10) -> None:
        if max_consecutive < 1:
            raise ValueError(f"callbacks.nonfinite.max_consecutive must be a positive integer, got {max_consecutive}.")
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self.max_consecutive = max_consecutive
        self.skipped = 0
        self.consecutive = 0
        self._bad_loss = False

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        self._bad_loss |= not bool(torch.isfinite(loss.detach()).all())

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        bad_grads = scaler is None and bool(grads) and not bool(torch.stack([g.isfinite().all() for g in grads]).all())
        if not (self._bad_loss or bad_grads):
            self.consecutive = 0
            return
        optimizer.zero_grad(set_to_none=True)
        self.skipped += 1
        self.consecutive += 1
        log.warning("Step %d skipped: non-finite %s (%d skipped so far, %d in a row).", trainer.global_step,
                    "loss" if self._bad_loss else "gradients", self.skipped, self.consecutive)
        self._bad_loss = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        pl_module.log("train/nonfinite_steps", float(self.skipped))
        if self.consecutive >= self.max_consecutive:
            trainer.save_checkpoint(self.path)
            raise RuntimeError(
                f"Stopped after {self.consecutive} consecutive steps with a non-finite loss or gradients "
                f"(step {trainer.global_step}); the last good weights are saved in {self.path}: lower the learning "
                "rate or check the data, then resume with ckpt_path.")

    def state_dict(self) -> dict[str, int]:
        return {"skipped": self.skipped, "consecutive": self.consecutive}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.skipped = state_dict["skipped"]
        self.consecutive = 0  # a resumed run gets a fresh allowance
