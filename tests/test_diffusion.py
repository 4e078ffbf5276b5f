from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from fusionframes.diffusion import (
    NoiseSchedule,
    classifier_free_guidance,
    eps_from_v,
    eps_from_x0,
    sample,
    v_from_x0_eps,
    x0_from_eps,
    x0_from_v,
    xt_from_x0_eps,
)

T = 1000
SCHEDULES = [
    dict(beta_schedule="linear"),
    dict(beta_schedule="cosine"),
    dict(beta_schedule="scaled_linear", prediction_type="v_prediction"),
    dict(beta_schedule="linear", zero_terminal_snr=True, prediction_type="v_prediction"),
]


@pytest.mark.parametrize("kwargs", SCHEDULES)
def test_conversions_invert_exactly(kwargs):
    schedule = NoiseSchedule(T, **kwargs)
    t = torch.tensor([0, 1, 10, 500, T - 2, T - 1])
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64)
    a, s = schedule.alpha_sigma(t, x0)
    assert a.shape == (6, 1, 1, 1) and a.dtype == torch.float64
    torch.testing.assert_close(a**2 + s**2, torch.ones_like(a), rtol=0, atol=1e-12)
    x_t, v = xt_from_x0_eps(x0, eps, a, s), v_from_x0_eps(x0, eps, a, s)
    torch.testing.assert_close(x0_from_v(x_t, v, a, s), x0, rtol=0, atol=1e-12)
    torch.testing.assert_close(eps_from_v(x_t, v, a, s), eps, rtol=0, atol=1e-12)
    torch.testing.assert_close(eps_from_x0(x_t, x0, a, s), eps, rtol=0, atol=1e-9)
    ok = a.flatten() > 1e-3  # x0 from eps is undefined at zero SNR and ill-conditioned next to it
    torch.testing.assert_close(x0_from_eps(x_t, eps, a, s)[ok], x0[ok], rtol=0, atol=1e-9)
    pred = schedule.target(x0, eps, t)
    torch.testing.assert_close(schedule.pred_to_eps(pred, x_t, t), eps, rtol=0, atol=1e-9)
    if schedule.prediction_type == "v_prediction":
        torch.testing.assert_close(schedule.pred_to_x0(pred, x_t, t), x0, rtol=0, atol=1e-12)


def test_zero_terminal_snr():
    schedule = NoiseSchedule(T, zero_terminal_snr=True, prediction_type="v_prediction")
    assert schedule.alphas_cumprod[-1] == 0
    assert schedule.alphas_cumprod[0] > 0.99
    assert schedule.scheduler("ddim").config.timestep_spacing == "trailing"
    assert NoiseSchedule(T).alphas_cumprod[-1] > 0


@pytest.mark.parametrize("kwargs", SCHEDULES)
def test_add_noise_and_target_match_diffusers(kwargs):
    schedule = NoiseSchedule(T, **kwargs)
    reference = schedule.scheduler("ddpm")
    assert isinstance(reference, DDPMScheduler) and isinstance(schedule.scheduler("ddim"), DDIMScheduler)
    torch.testing.assert_close(reference.alphas_cumprod, schedule.alphas_cumprod)
    x0, noise = torch.randn(2, 4, 3, 8, 8).unbind(0)
    t = torch.tensor([0, 250, 700, T - 1])
    torch.testing.assert_close(schedule.add_noise(x0, noise, t), reference.add_noise(x0, noise, t))
    expected = reference.get_velocity(x0, noise, t) if schedule.prediction_type == "v_prediction" else noise
    torch.testing.assert_close(schedule.target(x0, noise, t), expected)
    assert schedule.loss(expected, x0, noise, t) == 0


def test_per_frame_timesteps_broadcast():
    schedule = NoiseSchedule(T, prediction_type="v_prediction")
    x0, noise = torch.randn(2, 2, 5, 3, 4, 4).unbind(0)  # (B, F, C, H, W)
    t = torch.tensor([100, 900])
    per_frame = t[:, None].expand(2, 5)
    assert torch.equal(schedule.add_noise(x0, noise, per_frame), schedule.add_noise(x0, noise, t))
    assert torch.equal(schedule.target(x0, noise, per_frame), schedule.target(x0, noise, t))
    mixed = torch.tensor([[0, 10, 200, 600, 999]] * 2)
    x_t = schedule.add_noise(x0, noise, mixed)
    for f in range(5):
        frame_t = mixed[:, f]
        torch.testing.assert_close(x_t[:, f], schedule.add_noise(x0[:, f], noise[:, f], frame_t))
    with pytest.raises(ValueError, match=r"timesteps of shape \(3,\)"):
        schedule.add_noise(x0, noise, torch.tensor([1, 2, 3]))


@pytest.mark.parametrize(
    "kwargs, kind, steps",
    [
        (dict(), "ddim", 10),
        (dict(beta_schedule="cosine", prediction_type="v_prediction"), "ddim", 7),
        (dict(zero_terminal_snr=True, prediction_type="v_prediction"), "ddim", 10),
        (dict(), "ddpm", 10),
    ],
)
def test_sample_with_oracle_returns_x0(kwargs, kind, steps):
    schedule = NoiseSchedule(T, **kwargs).double()
    x0 = torch.rand(2, 3, 3, 4, 4, dtype=torch.float64) * 2 - 1
    calls = []

    def oracle(x_t, t):
        assert t.dtype == torch.long and t.shape == (2,)
        calls.append(int(t[0]))
        return schedule.target(x0, eps_from_x0(x_t, x0, *schedule.alpha_sigma(t, x_t)), t)

    g = torch.Generator().manual_seed(0)
    out = sample(oracle, x0.shape, schedule, steps, kind=kind, generator=g, progress=False, dtype=torch.float64)
    assert len(calls) == steps and calls == sorted(calls, reverse=True)
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-6)


def test_sample_is_seeded_and_accepts_x_T():
    schedule = NoiseSchedule(T)
    denoise = lambda x, t: 0.1 * x  # noqa: E731
    a = sample(denoise, (1, 3, 4, 4), schedule, 3, generator=torch.Generator().manual_seed(1), progress=False)
    b = sample(denoise, (1, 3, 4, 4), schedule, 3, generator=torch.Generator().manual_seed(1), progress=False)
    assert torch.equal(a, b)
    x_T = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(sample(denoise, (1, 3, 4, 4), schedule, 3, x_T=x_T, progress=False), a)
    # CUDA graphs apply to CUDA tensors only (measured against eager in benchmarks/interpolation_speed.py).
    assert torch.equal(sample(denoise, (1, 3, 4, 4), schedule, 3, x_T=x_T, progress=False, cuda_graph=True), a)


def test_classifier_free_guidance():
    cond, uncond = torch.randn(2, 3, 4)
    torch.testing.assert_close(classifier_free_guidance(cond, uncond, 3.0), uncond + 3.0 * (cond - uncond))
    torch.testing.assert_close(classifier_free_guidance(cond, uncond, 1.0), cond)
    torch.testing.assert_close(classifier_free_guidance(cond, uncond, 0.0), uncond)
    with pytest.raises(ValueError, match="scale=-1"):
        classifier_free_guidance(cond, uncond, -1.0)


def test_validation_errors():
    with pytest.raises(ValueError, match="beta_schedule='quadratic'.*'cosine'"):
        NoiseSchedule(beta_schedule="quadratic")
    with pytest.raises(ValueError, match="prediction_type='sample'.*'v_prediction'"):
        NoiseSchedule(prediction_type="sample")
    with pytest.raises(ValueError, match="zero_terminal_snr"):
        NoiseSchedule(zero_terminal_snr=True)
    schedule = NoiseSchedule(T)
    with pytest.raises(ValueError, match="kind='euler'.*'ddim'"):
        schedule.scheduler("euler")
    denoise = lambda x, t: x  # noqa: E731
    for steps in (0, T + 1):
        with pytest.raises(ValueError, match=f"num_steps={steps}.*1..{T}"):
            sample(denoise, (1, 1, 2, 2), schedule, steps, progress=False)
    with pytest.raises(ValueError, match="kind='euler'"):
        sample(denoise, (1, 1, 2, 2), schedule, 2, kind="euler", progress=False)
    with pytest.raises(ValueError, match="eta=1.0"):
        sample(denoise, (1, 1, 2, 2), schedule, 2, kind="ddpm", eta=1.0, progress=False)
    with pytest.raises(ValueError, match="x_T has shape"):
        sample(denoise, (1, 1, 2, 2), schedule, 2, x_T=torch.zeros(2, 1, 2, 2), progress=False)


def test_timestep_spacing_round_trips_through_the_scheduler_config():
    schedule = NoiseSchedule(beta_schedule="cosine", prediction_type="v_prediction", timestep_spacing="trailing")
    assert schedule.scheduler("ddim").config.timestep_spacing == "trailing"
    rebuilt = NoiseSchedule.from_scheduler_config(dict(schedule.scheduler("ddim").config))
    assert rebuilt.scheduler_config["timestep_spacing"] == "trailing"
    assert NoiseSchedule().scheduler_config["timestep_spacing"] == "leading"


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_weighting(prediction_type: str) -> None:
    """Min-SNR-gamma: weight min(SNR, gamma) / SNR (eps) or / (SNR + 1) (v) per sample or per frame."""
    schedule = NoiseSchedule(prediction_type=prediction_type)
    torch.manual_seed(0)
    x0, noise, pred = torch.randn(3, 2, 4, 5, 5), torch.randn(3, 2, 4, 5, 5), torch.randn(3, 2, 4, 5, 5)
    t = torch.tensor([[10, 20], [500, 600], [990, 999]])
    abar = schedule.alphas_cumprod[t]
    snr = abar / (1 - abar)
    weight = torch.clamp(snr, max=5.0) / (snr if prediction_type == "epsilon" else snr + 1)
    per_frame = (pred - schedule.target(x0, noise, t)).square().mean((2, 3, 4))
    assert torch.allclose(schedule.loss(pred, x0, noise, t, snr_gamma=5.0), (per_frame * weight).mean())
    if prediction_type == "epsilon":  # gamma above every SNR: plain MSE; small gamma mutes clean timesteps
        assert torch.allclose(schedule.loss(pred, x0, noise, t, snr_gamma=1e9), schedule.loss(pred, x0, noise, t))
        assert weight[0].max() < 0.1 and torch.equal(weight[2], torch.ones(2))
    scalar_t = t[:, 0]
    assert torch.allclose(schedule.loss(pred, x0, noise, scalar_t, snr_gamma=5.0),
                          schedule.loss(pred, x0, noise, scalar_t[:, None].expand(3, 2), snr_gamma=5.0))


def test_high_noise_weighting() -> None:
    """high_noise_gamma: eps MSE weighted by clamp(1/SNR, 1, gamma): 1 where SNR >= 1, gamma at the noisiest
    steps, 1/SNR between; v-prediction schedules refuse it."""
    schedule = NoiseSchedule(beta_schedule="cosine")
    torch.manual_seed(0)
    x0, noise, pred = torch.randn(4, 4, 5, 5), torch.randn(4, 4, 5, 5), torch.randn(4, 4, 5, 5)
    t = torch.tensor([10, 500, 700, 999])
    abar = schedule.alphas_cumprod[t]
    weight = torch.clamp((1 - abar) / abar, min=1, max=30.0)
    assert weight[0] == 1 and weight[-1] == 30 and 1 < weight[2] < 30
    per_sample = (pred - noise).square().mean((1, 2, 3))
    assert torch.allclose(schedule.loss(pred, x0, noise, t, high_noise_gamma=30.0), (per_sample * weight).mean())
    assert torch.allclose(schedule.loss(pred, x0, noise, t, high_noise_gamma=1.0), schedule.loss(pred, x0, noise, t))
    with pytest.raises(ValueError, match="high_noise_gamma weights eps targets"):
        NoiseSchedule(prediction_type="v_prediction").loss(pred, x0, noise, t, high_noise_gamma=30.0)
