"""Export a trained stage as a loadable directory (safetensors + config) at the end of training."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


class ExportPretrained(L.Callback):
    """Calls ``pl_module.save_pretrained(dirpath, dtype)`` on rank zero when fit ends."""

    def __init__(self, dirpath: str | Path, dtype: str = "float16") -> None:
        if dtype not in DTYPES:
            raise ValueError(f"callbacks.export.dtype must be one of {sorted(DTYPES)}, got {dtype!r}.")
        self.dirpath = Path(dirpath)
        self.dtype = DTYPES[dtype]

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            path = pl_module.save_pretrained(self.dirpath, dtype=self.dtype)
            print(f"Exported {type(pl_module).__name__} to {path}")
