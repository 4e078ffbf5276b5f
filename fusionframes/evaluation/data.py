"""Real clips and prompts for evaluation: the first N samples of any dataset of the framework."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch.utils.data import IterableDataset


def take(dataset: Iterable[dict], count: int, key: str = "video") -> tuple[torch.Tensor, list[str]]:
    """The first ``count`` samples of a map-style or iterable dataset -> (``key`` stacked (N, ...), captions)."""
    if count < 1:
        raise ValueError(f"evaluation.num_videos must be a positive integer, got {count}.")
    items: list[torch.Tensor] = []
    captions: list[str] = []
    samples = iter(dataset) if isinstance(dataset, IterableDataset) else map(dataset.__getitem__,
                                                                             range(min(count, len(dataset))))
    for sample in samples:
        items.append(sample[key])
        captions.append(sample.get("caption", ""))
        if len(items) == count:
            break
    if len(items) < count:
        raise ValueError(f"the real dataset holds {len(items)} samples, fewer than evaluation.num_videos={count}.")
    return torch.stack(items), captions


def prompt_list(prompts: str | list[str], captions: list[str], count: int) -> list[str]:
    """``count`` prompts: the real clips' captions (``"dataset"``), a list (cycled), or a text file (one per line)."""
    if isinstance(prompts, str) and prompts == "dataset":
        chosen = captions
    elif isinstance(prompts, str):
        path = Path(prompts).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"evaluation.prompts={prompts!r} is neither 'dataset', a list nor a text file.")
        chosen = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    else:
        chosen = list(prompts)
    if not chosen or any(not p.strip() for p in chosen):
        raise ValueError("evaluation.prompts holds no prompt or an empty one; give texts such as 'a red circle "
                         "moving right'.")
    return [chosen[i % len(chosen)] for i in range(count)]
