"""Frame-axis operators of ZeroSmooth (spec §2.3, §2.6): keyframe measurement operators with their
DDNM back-projection, and sliding temporal windows fused with FreeNoise's weights.

A measurement operator A (F, F') maps a long video of F' frames to its F keyframes (keyframe i at frame
s·i, in both layouts: "paper" F' = s·F with s - 1 frames after the last keyframe, "inclusive"
F' = s·(F - 1) + 1). Back-projection ties a long-branch tensor h to keyframe states h_k:
h + A⁺(h_k - A h) = (I - A⁺A) h + A⁺ h_k, so that A applied to the result gives h_k.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

LAYOUTS = ("paper", "inclusive")
#: sample: A_s picks frame s·i; interp_align_false / interp_align_true: linear downsampling F' -> F with
#: align_corners False (A_1) / True (A_2), the paper's reading; pairs_forward / pairs_backward: the mean of
#: frames s·i .. s·i + s - 1 / s·i - s + 1 .. s·i (the spec's "symmetric pairs" alternative, §6 item 2).
OPERATORS = ("sample", "interp_align_false", "interp_align_true", "pairs_forward", "pairs_backward")
FUSIONS = ("pyramid", "uniform")


def long_length(num_keyframes: int, scale: int, layout: str) -> int:
    """Frames of the long branch for ``num_keyframes`` keyframes: s·F (paper) or s·(F - 1) + 1 (inclusive)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r} is not supported; use one of {LAYOUTS}.")
    return scale * num_keyframes if layout == "paper" else scale * (num_keyframes - 1) + 1


def frame_matmul(matrix: Tensor, x: Tensor, dim: int = 1) -> Tensor:
    """Apply ``matrix`` (M, N) to the frame axis ``dim`` of x (..., N, ...) -> (..., M, ...), in x's dtype."""
    out = torch.tensordot(matrix.to(device=x.device, dtype=x.dtype), x.movedim(dim, 0), dims=1)
    return out.movedim(0, dim)


@dataclass(frozen=True)
class FrameOperator:
    """A measurement operator on frames: ``matrix`` A (F, F') and its pseudo-inverse ``pinv`` (F', F), float64.

    ``stride`` is set for the sampling operator A_s, whose back-projection is an exact replacement of the
    keyframe frames (every s-th) by h_k, computed as such.
    """

    matrix: Tensor
    pinv: Tensor
    stride: int | None = None

    def backproject(self, h: Tensor, h_k: Tensor, dim: int = 1) -> Tensor:
        """h (..., F', ...) tied to h_k (..., F, ...) along frame axis ``dim``: (I - A⁺A) h + A⁺ h_k."""
        if self.stride is not None:
            index = [slice(None)] * h.ndim
            index[dim] = slice(None, self.stride * h_k.shape[dim], self.stride)
            out = h.clone()
            out[tuple(index)] = h_k.to(h.dtype)
            return out
        return h + frame_matmul(self.pinv, h_k.to(h.dtype) - frame_matmul(self.matrix, h, dim), dim)


@lru_cache(maxsize=64)
def frame_operator(kind: str, num_keyframes: int, num_frames: int, scale: int) -> FrameOperator:
    """The ``kind`` operator (OPERATORS) from ``num_frames`` F' to ``num_keyframes`` F, keyframe i at s·i."""
    if kind not in OPERATORS:
        raise ValueError(f"frame operator {kind!r} is not supported; use one of {OPERATORS}.")
    if scale * (num_keyframes - 1) >= num_frames:
        raise ValueError(f"{num_frames} frames cannot hold {num_keyframes} keyframes {scale} apart.")
    n, m, s = num_keyframes, num_frames, scale
    matrix = torch.zeros(n, m, dtype=torch.float64)
    if kind == "sample":
        matrix[torch.arange(n), torch.arange(n) * s] = 1.0
    elif kind.startswith("interp"):
        identity = torch.eye(m, dtype=torch.float64).reshape(m, 1, m)
        matrix = F.interpolate(identity, size=n, mode="linear", align_corners=kind.endswith("true"))[:, 0].T
    else:
        for i in range(n):
            lo, hi = (s * i, s * i + s) if kind == "pairs_forward" else (s * i - s + 1, s * i + 1)
            lo, hi = max(lo, 0), min(hi, m)
            matrix[i, lo:hi] = 1.0 / (hi - lo)
    return FrameOperator(matrix, torch.linalg.pinv(matrix), s if kind == "sample" else None)


def window_starts(num_frames: int, window: int, overlap: int) -> list[int]:
    """First frames of the windows of ``window`` frames, ``overlap`` shared by neighbours, covering
    ``num_frames``: K = ceil((F' - o) / (F - o)) windows at w·(F - o), the last moved to end at F'."""
    if not 0 <= overlap < window:
        raise ValueError(f"overlap={overlap} must be in [0, window={window}).")
    if num_frames <= window:
        return [0]
    count = math.ceil((num_frames - overlap) / (window - overlap))
    return [min(w * (window - overlap), num_frames - window) for w in range(count)]


def window_weights(num_frames: int, window: int, overlap: int, fusion: str = "pyramid") -> Tensor:
    """Fusion weights (K, F') float64 of the windows of ``window_starts``: zero outside a window, and per frame
    summing to 1 over the windows covering it. ``pyramid`` (FreeNoise): [1, 2, ..., W/2, W/2, ..., 2, 1]
    over window-local positions ([1, ..., (W+1)/2, ..., 1] for odd W); ``uniform``: equal weights."""
    if fusion not in FUSIONS:
        raise ValueError(f"fusion={fusion!r} is not supported; use one of {FUSIONS}.")
    starts = window_starts(num_frames, window, overlap)
    size = min(window, num_frames)
    local = torch.arange(size, dtype=torch.float64)
    ramp = torch.minimum(local + 1, size - local) if fusion == "pyramid" else torch.ones(size, dtype=torch.float64)
    weights = torch.zeros(len(starts), num_frames, dtype=torch.float64)
    for w, a in enumerate(starts):
        weights[w, a: a + size] = ramp
    return weights / weights.sum(0, keepdim=True)


def windowed(fn: Callable[[Tensor], Tensor], x: Tensor, window: int, overlap: int, fusion: str = "pyramid",
             dim: int = 1) -> Tensor:
    """``fn`` applied to sliding windows of x's frame axis ``dim`` and fused by ``window_weights``; plain
    ``fn(x)`` when the frames fit in one window. ``fn`` maps (..., W, ...) to the same shape."""
    num_frames = x.shape[dim]
    if num_frames <= window:
        return fn(x)
    weights = window_weights(num_frames, window, overlap, fusion).to(device=x.device, dtype=x.dtype)
    out = torch.zeros_like(x)
    for w, a in enumerate(window_starts(num_frames, window, overlap)):
        shape = [1] * x.ndim
        shape[dim] = window
        out.narrow(dim, a, window).add_(weights[w, a: a + window].reshape(shape) * fn(x.narrow(dim, a, window)))
    return out
