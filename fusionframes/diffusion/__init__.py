"""Diffusion maths: noise schedules, eps/v/x0 parameterisations, guidance and sampling (diffusers underneath)."""

from __future__ import annotations

from fusionframes.diffusion.guidance import classifier_free_guidance
from fusionframes.diffusion.parameterization import (
    eps_from_v,
    eps_from_x0,
    pred_to_eps,
    pred_to_x0,
    v_from_x0_eps,
    x0_from_eps,
    x0_from_v,
    xt_from_x0_eps,
)
from fusionframes.diffusion.sampling import sample
from fusionframes.diffusion.schedule import NoiseSchedule

__all__ = [
    "NoiseSchedule",
    "classifier_free_guidance",
    "eps_from_v",
    "eps_from_x0",
    "pred_to_eps",
    "pred_to_x0",
    "sample",
    "v_from_x0_eps",
    "x0_from_eps",
    "x0_from_v",
    "xt_from_x0_eps",
]
