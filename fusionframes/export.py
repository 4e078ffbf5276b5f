"""Turn a training checkpoint into the stage's pretrained directory and a plain state dict.

    uv run python -m fusionframes.export <checkpoint> <out_dir> [--dtype float16]

``<checkpoint>`` is a Lightning ``.ckpt`` file written by ``train.py`` or, with ``trainer=deepspeed_zero1``, the
checkpoint *directory* DeepSpeed writes (its ZeRO shards are consolidated to fp32 by Lightning's
``convert_zero_checkpoint_to_fp32_state_dict``). The stage is rebuilt from the run config the checkpoint holds
(frozen bases load from their recorded paths), then written with its ``save_pretrained`` (what
``FusionFramesPipeline.from_pretrained`` and ``model.init_from`` read) plus ``trainable.safetensors``: every
trainable weight in fp32 under its module path.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict
from safetensors.torch import save_file

from fusionframes.callbacks.export import DTYPES
from fusionframes.modules.base import StageModule
from fusionframes.utils.validation import check_checkpoint


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint as a dict; a DeepSpeed checkpoint directory is consolidated first."""
    path = Path(path)
    if path.is_dir():
        with tempfile.TemporaryDirectory() as tmp:
            consolidated = Path(tmp) / "consolidated.ckpt"
            convert_zero_checkpoint_to_fp32_state_dict(path, consolidated)
            return torch.load(consolidated, map_location="cpu", weights_only=False)
    check_checkpoint("checkpoint", path)
    return torch.load(path, map_location="cpu", weights_only=False)


def restore(path: str | Path) -> StageModule:
    """The stage module of a ``train.py`` checkpoint, with its trained weights."""
    checkpoint = load_checkpoint(path)
    if "config" not in checkpoint:
        raise ValueError(f"checkpoint={path} holds no run config; export checkpoints written by train.py.")
    module = instantiate(checkpoint["config"]["model"], _convert_="all")
    module.load_state_dict(checkpoint["state_dict"])
    return module


def export(path: str | Path, out: str | Path, dtype: str = "float16") -> Path:
    """Write ``save_pretrained(out, dtype)`` and ``out/trainable.safetensors`` (fp32) of the checkpoint's stage."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}.")
    module = restore(path)
    out = Path(module.save_pretrained(out, dtype=DTYPES[dtype]))
    weights = {n: p.detach().float().contiguous() for n, p in module.named_parameters() if p.requires_grad}
    save_file(weights, out / "trainable.safetensors")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a .ckpt file or a DeepSpeed checkpoint directory")
    parser.add_argument("out", help="directory to write")
    parser.add_argument("--dtype", default="float16", choices=sorted(DTYPES))
    args = parser.parse_args()
    print(f"Exported to {export(args.checkpoint, args.out, args.dtype)}")


if __name__ == "__main__":
    main()
