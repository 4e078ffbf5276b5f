"""Exact conversions between the x0, eps and v parameterisations of a Gaussian diffusion.

With alpha_t = sqrt(abar_t) and sigma_t = sqrt(1 - abar_t) (so alpha^2 + sigma^2 = 1):

    x_t = alpha x0 + sigma eps
    v   = alpha eps - sigma x0
    x0  = alpha x_t - sigma v
    eps = sigma x_t + alpha v

All functions take tensors of one shape, or ``alpha``/``sigma`` already broadcastable to it
(e.g. (B, 1, 1, 1) or (B, F, 1, 1, 1) against (B, F, C, H, W)); see ``NoiseSchedule.alpha_sigma``.
"""

from __future__ import annotations

from torch import Tensor

PREDICTION_TYPES = ("epsilon", "v_prediction")


def xt_from_x0_eps(x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """Forward diffusion: x_t = alpha x0 + sigma eps."""
    return alpha * x0 + sigma * eps


def x0_from_eps(x_t: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """x0 = (x_t - sigma eps) / alpha; undefined where alpha = 0 (zero terminal SNR)."""
    return (x_t - sigma * eps) / alpha


def eps_from_x0(x_t: Tensor, x0: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """eps = (x_t - alpha x0) / sigma."""
    return (x_t - alpha * x0) / sigma


def v_from_x0_eps(x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """v = alpha eps - sigma x0."""
    return alpha * eps - sigma * x0


def x0_from_v(x_t: Tensor, v: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """x0 = alpha x_t - sigma v."""
    return alpha * x_t - sigma * v


def eps_from_v(x_t: Tensor, v: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """eps = sigma x_t + alpha v."""
    return sigma * x_t + alpha * v


def check_prediction_type(prediction_type: str) -> None:
    """Raise ValueError unless ``prediction_type`` is one of PREDICTION_TYPES."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type={prediction_type!r} is not supported; use one of {PREDICTION_TYPES}.")


def pred_to_x0(pred: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor, prediction_type: str) -> Tensor:
    """Model output (eps or v, per ``prediction_type``) -> x0."""
    check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return x0_from_eps(x_t, pred, alpha, sigma)
    return x0_from_v(x_t, pred, alpha, sigma)


def pred_to_eps(pred: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor, prediction_type: str) -> Tensor:
    """Model output (eps or v, per ``prediction_type``) -> eps."""
    check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return pred
    return eps_from_v(x_t, pred, alpha, sigma)
