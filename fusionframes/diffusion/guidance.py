"""Classifier-free guidance (Ho & Salimans, 2022)."""

from __future__ import annotations

from torch import Tensor


def classifier_free_guidance(cond: Tensor, uncond: Tensor, scale: float) -> Tensor:
    """guided = uncond + scale * (cond - uncond); scale 1 is the conditional output, 0 the unconditional.

    Works on any prediction (eps, v or x0) of any shape, ``cond`` and ``uncond`` alike. The interpolation
    model's context guidance ``(1 + w) f(cond) - w f(zeros)`` is ``scale = 1 + w``.
    """
    if scale < 0:
        raise ValueError(f"guidance scale={scale} is negative; use a scale >= 0 (1 means no guidance).")
    return uncond + scale * (cond - uncond)
