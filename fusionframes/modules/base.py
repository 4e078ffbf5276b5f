"""Behaviour shared by every stage: frozen parts kept out of optimiser and checkpoints, optimiser set-up."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from fusionframes.models.latents import LatentCodec
from fusionframes.utils.pretrained import weights_digest
from fusionframes.utils.validation import check_int

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


class StageModule(L.LightningModule):
    """Base LightningModule of a training stage.

    Frozen sub-modules are registered with :meth:`freeze`: their parameters stop requiring grad, they stay
    in eval mode, and they are saved by reference (path and sha256 of their weights) instead of being
    copied into every checkpoint. A checkpoint therefore holds the trainable weights and the resolved config.
    """

    def __init__(self, optimizer: OptimizerFactory, lr_scheduler: Callable | None = None) -> None:
        super().__init__()
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self._frozen: dict[str, str | None] = {}
        self._digests: dict[str, str] = {}
        self.run_config: dict[str, Any] | None = None  # resolved Hydra config, set by the training entry point
        self.seed = 0  # base of the per-batch generators; the training entry point sets it from the config
        self.strict_loading = False  # frozen weights are absent from checkpoints; load_state_dict checks the rest

    def freeze(self, name: str, path: str | Path | None = None) -> None:
        """Freeze sub-module ``name`` (dotted path; loaded from ``path``, recorded in checkpoints)."""
        module = self.get_submodule(name)
        module.requires_grad_(False)
        module.eval()
        self._frozen[name] = None if path is None else str(path)

    def attach_codec(self, movq_path: str, resolution: int | None = None) -> None:
        """Load the frozen MoVQ as ``self.codec`` (config key ``model.movq_path``); for a frame ``resolution``,
        check it divides by the MoVQ's downsampling factor and set ``self.latent_size``."""
        self.codec = LatentCodec.from_pretrained(movq_path, "model.movq_path")
        self.freeze("codec", movq_path)
        if resolution is not None:
            if check_int("data.resolution", resolution, 1) % self.codec.factor:
                raise ValueError(
                    f"data.resolution={resolution} must be divisible by the MoVQ factor {self.codec.factor}.")
            self.latent_size = resolution // self.codec.factor

    def train(self, mode: bool = True) -> StageModule:
        super().train(mode)
        for name in self._frozen:
            self.get_submodule(name).eval()
        return self

    def _frozen_keys(self) -> set[str]:
        """State-dict keys that are not saved: parameters without grad and buffers of frozen sub-modules.

        Decided per parameter, so temporal layers inserted inside a frozen backbone are still saved.
        """
        keys = {n for n, p in self.named_parameters(remove_duplicate=False) if not p.requires_grad}
        for name in self._frozen:
            keys |= {f"{name}.{b}" for b, _ in self.get_submodule(name).named_buffers(remove_duplicate=False)}
        return keys

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        state = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", "")
        frozen = self._frozen_keys()
        return {k: v for k, v in state.items() if k[len(prefix):] not in frozen}

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        frozen = self._frozen_keys()
        missing = [k for k in result.missing_keys if k not in frozen]
        if missing or result.unexpected_keys:
            raise RuntimeError(
                f"Checkpoint does not match the model: missing trainable keys {missing[:5]}, "
                f"unexpected keys {result.unexpected_keys[:5]}."
            )
        return result

    def batch_generator(self, batch_idx: int) -> torch.Generator:
        """A generator seeded by (seed, training batch index across epochs, rank), on the module's device.

        Every random draw of a training step (noise, timesteps, dropout of conditions) comes from it, so a
        resumed run draws exactly what an uninterrupted one would, whatever the global RNG state. The index
        across epochs is Lightning's restored counter (``batch_idx`` outside a trainer): after a resume at
        the end of an iterable loader's epoch, Lightning does not restart ``batch_idx`` at 0.
        """
        index = self.trainer.fit_loop.epoch_loop.total_batch_idx if self._trainer is not None else batch_idx
        key = [self.seed, index, self.global_rank]
        seed = int(np.random.SeedSequence(key).generate_state(1, dtype=np.uint64)[0] >> 1)
        return torch.Generator(device=self.device).manual_seed(seed)

    def validation_draws(self, batch_idx: int, batch_size: int, num_train_timesteps: int
                         ) -> tuple[torch.Generator, torch.Tensor]:
        """(generator seeded by ``batch_idx``, timesteps (B,) evenly spread over the schedule): the fixed noise and
        levels of a validation loss, so val/loss compares across training steps."""
        generator = torch.Generator(device=self.device).manual_seed(batch_idx)
        t = torch.linspace(0, num_train_timesteps - 1, batch_size, device=self.device).long()
        return generator, t

    def clip_latents(self, batch: dict[str, Any], num_frames: int) -> torch.Tensor:
        """(B, F, C, h, w) latents of a clip batch (precomputed ``latents``, or the MoVQ's encoding of ``video``),
        F checked against ``num_frames``."""
        z0 = batch["latents"] if "latents" in batch else self.codec.encode(batch["video"])
        if z0.shape[1] != num_frames:
            raise ValueError(f"the batch has {z0.shape[1]} frames but model.num_frames={num_frames}; "
                             "use the keyframes sampler with the same num_frames.")
        return z0

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.trainable_parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        refs = {}
        for name, path in self._frozen.items():
            if path is not None and name not in self._digests:
                self._digests[name] = weights_digest(path)
            refs[name] = {"path": path, "sha256": self._digests.get(name)}
        checkpoint["frozen_base"] = refs
        if self.run_config is not None:
            checkpoint["config"] = self.run_config
