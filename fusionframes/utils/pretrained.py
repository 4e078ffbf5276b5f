"""Loading frozen weights from local directories, with errors that name the config key."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import torch
from diffusers import ModelMixin
from safetensors import SafetensorError

T = TypeVar("T")


def require_dir(path: str | Path | None, config_key: str) -> Path:
    """Return ``path`` as a Path, or raise one clear error naming the config key that set it."""
    if path is None or str(path) == "":
        raise FileNotFoundError(f"{config_key} is not set; point it at a local weights directory.")
    if not isinstance(path, (str, Path)):
        raise ValueError(f"{config_key} must be the path of a local weights directory, got {path!r}.")
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{config_key}={p} does not exist; point it at a local weights directory.")
    return p


@contextmanager
def loading(config_key: str, path: str | Path) -> Iterator[None]:
    """Turn a failure to read the weights or configs under ``path`` (truncated or empty safetensors, broken
    JSON, missing entries) into one clear error naming the config key that points there. Errors that
    already name it, and missing files (FileNotFoundError), pass through unchanged."""
    try:
        yield
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as error:
        if f"{config_key}=" in str(error):
            raise
        detail = (str(error).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"{config_key}={path} cannot be loaded ({type(error).__name__}: {detail}); a file in it is "
                         "missing, truncated or not written by save_pretrained.") from error


def load_frozen(cls: type[T], path: str | Path | None, config_key: str) -> T:
    """``cls.from_pretrained(path)`` (diffusers or fusionframes model), in fp32, eval mode, frozen."""
    kwargs = {"torch_dtype": torch.float32} if issubclass(cls, ModelMixin) else {}
    with loading(config_key, path):
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
