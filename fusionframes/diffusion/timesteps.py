"""Training timesteps: one per clip (scalar) or one per frame by FVDM's probabilistic sampling (PTSS).

FVDM (Liu et al., "Redefining Temporal Modeling in Video Diffusion: The Vectorized Timestep Approach", §2.3):
with probability p a clip gets an independent uniform timestep for every frame; otherwise every frame shares
one timestep, as in a conventional video diffusion model. The paper's best p is 0.2, constant in training.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fusionframes.utils.validation import check_probability

TIMESTEP_MODES = ("scalar", "vectorized")
PTSS_GRANULARITIES = ("sample", "batch")


def check_timestep_options(mode: str, p: float, granularity: str, prefix: str = "model.") -> None:
    """Raise one clear ValueError for a bad timestep ``mode``, PTSS probability ``p`` or ``granularity``."""
    if mode not in TIMESTEP_MODES:
        raise ValueError(f"{prefix}timesteps={mode!r} is not a timestep mode; use one of {TIMESTEP_MODES}.")
    check_probability(f"{prefix}ptss_p", p)
    if granularity not in PTSS_GRANULARITIES:
        raise ValueError(f"{prefix}ptss_granularity={granularity!r} is not supported; use one of "
                         f"{PTSS_GRANULARITIES}.")


def ptss_timesteps(batch: int, num_frames: int, num_train_timesteps: int, p: float, granularity: str = "sample",
                   generator: torch.Generator | None = None, device: torch.device | str | None = None) -> Tensor:
    """Per-frame training timesteps (B, F) long in [0, T) by probabilistic timestep sampling.

    Each clip (``granularity="sample"``) or the whole batch (``"batch"``, one coin per step as in the official
    code) draws independent uniform timesteps per frame with probability ``p``, else one timestep shared by all
    frames. The shared timesteps are drawn first, as ``torch.randint(0, T, (B,))``, so with p = 0 the result
    is exactly the scalar timesteps drawn from the same generator state, broadcast over frames.
    """
    check_timestep_options("vectorized", p, granularity, prefix="")
    shared = torch.randint(0, num_train_timesteps, (batch,), generator=generator, device=device)
    independent = torch.randint(0, num_train_timesteps, (batch, num_frames), generator=generator, device=device)
    coin = torch.rand(batch if granularity == "sample" else 1, generator=generator, device=device) < p
    return torch.where(coin[:, None], independent, shared[:, None].expand(batch, num_frames))
