"""Start-up checks of config values, each failing with one sentence that names the key and what is allowed."""

from __future__ import annotations

import math
import numbers
import zipfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch


def in_traced_graph(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is being traced by torch.compile, captured into a CUDA graph or has no values (the meta
    device of shape-only runs such as FLOP counting): a value check that reads it on the host would split the
    compiled graph, break the capture or fail there, so such checks are skipped."""
    return (tensor.is_meta or torch.compiler.is_compiling()
            or (tensor.is_cuda and torch.cuda.is_current_stream_capturing()))


def is_int(value: Any) -> bool:
    """An integer (Python or numpy) that is not a bool (YAML's true/false, which Python counts as ints)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(key: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer in [minimum, maximum]; returns it."""
    if not is_int(value) or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if minimum is not None and maximum is not None:
            allowed = f"an integer in [{minimum}, {maximum}]"
        elif minimum is not None:
            allowed = {0: "an integer >= 0", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
        else:
            allowed = "an integer" if maximum is None else f"an integer <= {maximum}"
        raise ValueError(f"{key} must be {allowed}, got {value!r}.")
    return value


def check_number(key: str, value: Any, minimum: float | None = None, maximum: float | None = None,
                 hint: str = "") -> float:
    """A finite real number (int or float, not a bool) in [minimum, maximum]; returns it as a float."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    if not ok or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if minimum is not None and maximum is not None:
            allowed = f"a number in [{minimum:g}, {maximum:g}]"
        elif minimum is not None:
            allowed = f"a number >= {minimum:g}"
        else:
            allowed = "a finite number"
        raise ValueError(f"{key} must be {allowed}{hint}, got {value!r}.")
    return float(value)


def check_choice(key: str, value: Any, choices: Collection[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{key}={value!r} is not allowed; choose one of {list(choices)}.")
    return value


def check_probability(key: str, value: Any) -> None:
    check_number(key, value, 0.0, 1.0)


def check_guidance(key: str, value: Any) -> None:
    check_number(key, value, 0.0, hint=" (0 turns guidance off)")


def check_seed(key: str, value: Any) -> None:
    """None or an integer in [0, 2**32): what numpy and Lightning seed with."""
    if value is not None:
        check_int(key, value, 0, 2**32 - 1)


def check_checkpoint(key: str, path: Any) -> None:
    """A Lightning checkpoint file that exists and is a complete zip archive (torch.save's format);
    reads only its directory at the end, so a truncated or overwritten file is caught before the run.
    A directory must be a DeepSpeed checkpoint (``trainer=deepspeed_zero1``): DeepSpeed's ``latest`` names
    the tag directory it loads."""
    if not isinstance(path, (str, Path)):
        raise ValueError(f"{key} must be the path of a .ckpt file, got {path!r}.")
    p = Path(path)
    if p.is_dir():
        latest = p / "latest"
        if not latest.is_file() or not (p / latest.read_text().strip()).is_dir():
            raise ValueError(f"{key}={p} is a directory but not a complete DeepSpeed checkpoint (its 'latest' file "
                             "must name a tag directory beside it); give a .ckpt file or a DeepSpeed checkpoint.")
        return
    if not p.is_file():
        raise FileNotFoundError(f"{key}={p} does not exist; give a .ckpt file written by train.py.")
    try:
        with zipfile.ZipFile(p):
            pass
    except (zipfile.BadZipFile, OSError) as error:
        raise ValueError(f"{key}={p} is not a readable checkpoint ({error}); it may be truncated, use an "
                         "earlier one.") from None


def check_run_config(cfg: Any) -> None:
    """What ``train.py`` checks before building anything: the seed and the checkpoint to resume from."""
    check_seed("seed", cfg.get("seed"))
    if cfg.get("ckpt_path") is not None:
        check_checkpoint("ckpt_path", cfg.ckpt_path)
