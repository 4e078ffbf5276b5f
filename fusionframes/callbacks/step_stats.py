"""Per-rank training-step statistics for scaling measurements (throughput, peak memory, optimiser-state size)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch


def tensor_bytes(obj: Any, seen: set[int]) -> int:
    """Bytes of the distinct tensors (by data pointer) in nested dicts, lists and tuples."""
    if isinstance(obj, torch.Tensor):
        if obj.data_ptr() in seen:
            return 0
        seen.add(obj.data_ptr())
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v, seen) for v in obj)
    return 0


def optimizer_state_bytes(optimizer: Any) -> int:
    """Bytes this rank holds for an optimiser's state: its ``state`` tensors (AdamW's moments) and, for
    DeepSpeed's ZeRO optimiser, the fp32 master partition; wrappers are followed through ``.optimizer``."""
    seen: set[int] = set()
    total = 0
    while optimizer is not None:
        total += tensor_bytes(dict(getattr(optimizer, "state", {}) or {}), seen)
        total += tensor_bytes(list(getattr(optimizer, "single_partition_of_fp32_groups", [])), seen)
        optimizer = getattr(optimizer, "optimizer", None)
    return total


class StepStats(L.Callback):
    """Write ``dirpath/step_stats_rank<r>.json`` at the end of fit: the batch wall times (seconds between
    consecutive training-batch ends, the device synchronised, data loading included), the loss of every
    batch, the global step training started at, this rank's peak allocated device memory and optimiser-state
    bytes, the world size and the batch size. ``benchmarks/zero1_scaling.py`` reads them; Lightning's
    ``ThroughputMonitor`` logs samples/s but neither the optimiser's share of memory nor the start step.
    """

    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)
        self.batch_seconds: list[float] = []
        self.losses: list[float] = []
        self.start_step = 0
        self.batch_size = 0
        self._last: float | None = None

    def _sync(self, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start_step = trainer.global_step
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        self._sync(pl_module)
        self._last = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._sync(pl_module)
        now = time.perf_counter()
        self.batch_seconds.append(now - self._last)
        self._last = now
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss))
        if not self.batch_size and isinstance(batch, dict):
            self.batch_size = len(next(v for v in batch.values() if isinstance(v, (torch.Tensor, list))))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        cuda = pl_module.device.type == "cuda"
        stats = {
            "world_size": trainer.world_size,
            "rank": trainer.global_rank,
            "batch_size": self.batch_size,
            "start_step": self.start_step,
            "end_step": trainer.global_step,
            "batch_seconds": self.batch_seconds,
            "losses": self.losses,
            "peak_memory_bytes": torch.cuda.max_memory_allocated(pl_module.device) if cuda else 0,
            "optimizer_state_bytes": sum(optimizer_state_bytes(o) for o in trainer.optimizers),
        }
        self.dirpath.mkdir(parents=True, exist_ok=True)
        (self.dirpath / f"step_stats_rank{trainer.global_rank}.json").write_text(json.dumps(stats))
