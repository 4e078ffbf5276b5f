"""Loading frozen weights from local directories, with errors that name the config key."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import TypeVar

import torch
from diffusers import ModelMixin

T = TypeVar("T")


def require_dir(path: str | Path | None, config_key: str) -> Path:
    """Return ``path`` as a Path, or raise one clear error naming the config key that set it."""
    if path is None or str(path) == "":
        raise FileNotFoundError(f"{config_key} is not set; point it at a local weights directory.")
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{config_key}={p} does not exist; point it at a local weights directory.")
    return p


def load_frozen(cls: type[T], path: str | Path | None, config_key: str) -> T:
    """``cls.from_pretrained(path)`` (diffusers or fusionframes model), in fp32, eval mode, frozen."""
    kwargs = {"torch_dtype": torch.float32} if issubclass(cls, ModelMixin) else {}
    model = cls.from_pretrained(str(require_dir(path, config_key)), **kwargs)  # type: ignore[attr-defined]
    model = model.to(torch.float32).eval()
    model.requires_grad_(False)
    return model


def weights_digest(path: str | Path) -> str:
    """sha256 over the weight files of a directory (or one file): identifies a frozen base in checkpoints."""
    p = Path(path)
    files = sorted(p.rglob("*.safetensors")) + sorted(p.rglob("*.bin")) if p.is_dir() else [p]
    digest = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def save_model(model: torch.nn.Module, directory: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """``save_pretrained`` of a copy of ``model`` cast to ``dtype`` (the live model keeps its precision)."""
    copy.deepcopy(model).to(dtype).save_pretrained(directory)
    return Path(directory)
