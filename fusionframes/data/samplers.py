"""Clip samplers shared by every data source: which source frames to take and how to lay them out.

A sampler picks `Clip.indices` from a source of `num_source_frames` frames (None when the source is
too short), the data source decodes or renders only those frames as (len(indices), C, H, W) floats
in [-1, 1], and `arrange` turns them into the training sample dict of its stage.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from einops import rearrange


@dataclass
class Clip:
    """Source frame indices to take, plus sampler-specific info such as {"start": 17, "skip": 3}."""

    indices: list[int]
    info: dict[str, int] = field(default_factory=dict)


def _positive_int(owner: str, name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{owner} {name} must be a positive integer, got {value!r}.")
    return int(value)


def _random_start(num_source_frames: int, span: int, rng: np.random.Generator) -> int | None:
    """Uniform start of a window of `span` frames, or None when the source is shorter."""
    if num_source_frames < span:
        return None
    return int(rng.integers(num_source_frames - span + 1))


class ClipSampler(ABC):
    """Chooses frames from a source video and arranges them into a sample dict."""

    @property
    @abstractmethod
    def min_source_frames(self) -> int:
        """Shortest source (in frames) this sampler can draw a clip from."""

    @abstractmethod
    def sample(self, num_source_frames: int, rng: np.random.Generator) -> Clip | None:
        """A random clip, or None when the source is too short (the caller skips and counts it)."""

    @abstractmethod
    def arrange(self, frames: torch.Tensor, clip: Clip) -> dict[str, torch.Tensor]:
        """frames: (len(clip.indices), C, H, W) float in [-1, 1] -> the sample dict."""


class ImageSampler(ClipSampler):
    """Text-to-image: one random frame -> {"image": (C, H, W)}."""

    @property
    def min_source_frames(self) -> int:
        return 1

    def sample(self, num_source_frames: int, rng: np.random.Generator) -> Clip | None:
        start = _random_start(num_source_frames, 1, rng)
        return None if start is None else Clip([start], {"start": start})

    def arrange(self, frames: torch.Tensor, clip: Clip) -> dict[str, torch.Tensor]:
        return {"image": frames[0]}


class KeyframeSampler(ClipSampler):
    """Keyframes: `num_frames` frames `stride` apart from a random start (2 fps from 24 fps video).

    -> {"video": (num_frames, C, H, W), "positions": long (num_frames,) = indices - start}.
    """

    def __init__(self, num_frames: int = 16, stride: int = 12) -> None:
        self.num_frames = _positive_int("KeyframeSampler", "num_frames", num_frames)
        self.stride = _positive_int("KeyframeSampler", "stride", stride)

    @property
    def min_source_frames(self) -> int:
        return (self.num_frames - 1) * self.stride + 1

    def sample(self, num_source_frames: int, rng: np.random.Generator) -> Clip | None:
        start = _random_start(num_source_frames, self.min_source_frames, rng)
        if start is None:
            return None
        return Clip([start + k * self.stride for k in range(self.num_frames)], {"start": start})

    def arrange(self, frames: torch.Tensor, clip: Clip) -> dict[str, torch.Tensor]:
        positions = torch.tensor(clip.indices, dtype=torch.long) - clip.info["start"]
        return {"video": frames, "positions": positions}


class InterpolationSampler(ClipSampler):
    """Interpolation: (num_keyframes - 1) * (between + 1) + 1 frames at a random skip s, random start.

    Keyframes are every (between + 1)-th frame, targets the `between` frames after each keyframe.
    -> {"keyframes": (num_keyframes, C, H, W), "targets": (num_keyframes - 1, between, C, H, W),
        "skip": long ()}.
    """

    def __init__(self, skips: Iterable[int] = range(1, 13), num_keyframes: int = 9, between: int = 3) -> None:
        self.skips = tuple(sorted({_positive_int("InterpolationSampler", "skip", s) for s in skips}))
        if not self.skips:
            raise ValueError("InterpolationSampler skips must hold at least one positive integer, got none.")
        self.num_keyframes = _positive_int("InterpolationSampler", "num_keyframes", num_keyframes)
        if self.num_keyframes < 2:
            raise ValueError(f"InterpolationSampler num_keyframes must be at least 2, got {num_keyframes}.")
        self.between = _positive_int("InterpolationSampler", "between", between)
        self.total = (self.num_keyframes - 1) * (self.between + 1) + 1

    def span(self, skip: int) -> int:
        """Source frames covered by one clip at this skip."""
        return (self.total - 1) * skip + 1

    @property
    def min_source_frames(self) -> int:
        return self.span(self.skips[0])

    def sample(self, num_source_frames: int, rng: np.random.Generator) -> Clip | None:
        fitting = [s for s in self.skips if self.span(s) <= num_source_frames]
        if not fitting:
            return None
        skip = fitting[rng.integers(len(fitting))]
        start = _random_start(num_source_frames, self.span(skip), rng)
        return Clip([start + k * skip for k in range(self.total)], {"start": start, "skip": skip})

    def arrange(self, frames: torch.Tensor, clip: Clip) -> dict[str, torch.Tensor]:
        groups = rearrange(frames[:-1], "(k g) c h w -> k g c h w", g=self.between + 1)
        return {
            "keyframes": frames[:: self.between + 1],
            "targets": groups[:, 1:],
            "skip": torch.tensor(clip.info["skip"], dtype=torch.long),
        }


class ClipSequenceSampler(ClipSampler):
    """Decoder: `num_frames` consecutive frames from a random start -> {"video": (num_frames, C, H, W)}."""

    def __init__(self, num_frames: int = 8) -> None:
        self.num_frames = _positive_int("ClipSequenceSampler", "num_frames", num_frames)

    @property
    def min_source_frames(self) -> int:
        return self.num_frames

    def sample(self, num_source_frames: int, rng: np.random.Generator) -> Clip | None:
        start = _random_start(num_source_frames, self.num_frames, rng)
        return None if start is None else Clip(list(range(start, start + self.num_frames)), {"start": start})

    def arrange(self, frames: torch.Tensor, clip: Clip) -> dict[str, torch.Tensor]:
        return {"video": frames}


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (F, H, W, 3) -> float32 (F, 3, H, W) in [-1, 1]."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 of shape (F, H, W, 3), got {frames.dtype} {frames.shape}.")
    video = np.ascontiguousarray(rearrange(frames, "f h w c -> f c h w"), dtype=np.float32)
    video /= 127.5
    video -= 1.0
    return torch.from_numpy(video)
