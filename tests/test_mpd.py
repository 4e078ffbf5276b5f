"""Motion Prior Distillation over the TRF and ViBiD time-reversal samplers (MPD spec §6.4, M1-M14).

Exact checks run in float64 on a tiny KeyframeUNet behind the FVDM image-to-video denoiser, or on analytic
denoisers: a zero-motion model (every frame's x0 is its given frame) and the exact denoiser of a static world
(every frame is the given one plus N(0, tau^2) jitter).
"""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from fusionframes.config import CONFIG_DIR
from fusionframes.diffusion import NoiseSchedule, classifier_free_guidance
from fusionframes.diffusion.per_frame import sample_per_frame
from fusionframes.models.keyframe_unet import KeyframeUNet
from fusionframes.models.temporal import frame_positions
from fusionframes.pipeline import guided_denoiser
from fusionframes.sampling.fvdm import held_frames
from fusionframes.sampling.time_reversal import mpd as mpd_module
from fusionframes.sampling.time_reversal.base import build_sampler, flip, renoise
from fusionframes.sampling.time_reversal.denoiser import I2VDenoiser
from fusionframes.sampling.time_reversal.mpd import MPDSampler, mpd_backward_estimate
from fusionframes.sampling.time_reversal.trf import TRFSampler
from fusionframes.sampling.time_reversal.vibid import ViBiDSampler
from tests.test_keyframe_unet import TEXT_DIM, L, perturb, tiny_unet2d

B, F, C, SIZE = 2, 5, 4, 6
SCHEDULE = NoiseSchedule().double()


def latents(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def sigma_of(t: int) -> torch.Tensor:
    abar = SCHEDULE.alphas_cumprod[t]
    return ((1 - abar) / abar).sqrt()


class ZeroMotion:
    """An image-to-video model with no motion: every frame's x0 (both branches) is the given frame."""

    def pair(self, x, t, first):
        x0 = first[:, None].expand_as(x).clone()
        return x0, x0.clone()


class StaticWorld:
    """Exact denoiser of a static scene: frames are the given frame plus independent N(0, tau^2) jitter."""

    def __init__(self, tau: float) -> None:
        self.tau = tau

    def pair(self, x, t, first):
        shrink = self.tau**2 / (self.tau**2 + sigma_of(t) ** 2)
        x0 = first[:, None] + shrink * (x - first[:, None])
        x0[:, 0] = first
        return x0, x0.clone()


class Spy:
    """Records (t, "start" | "end") of every pair call; raises on the end keyframe if ``forbid_end_at`` holds t."""

    def __init__(self, denoiser, end: torch.Tensor, forbid_end_at: set[int] = frozenset()) -> None:
        self.denoiser, self.end, self.forbid_end_at, self.calls = denoiser, end, forbid_end_at, []

    def pair(self, x, t, first):
        which = "end" if first is self.end else "start"
        if which == "end" and t in self.forbid_end_at:
            raise AssertionError(f"the end-conditioned path ran at t={t}")
        self.calls.append((t, which))
        return self.denoiser.pair(x, t, first)


@pytest.fixture(scope="module")
def model() -> KeyframeUNet:
    return perturb(KeyframeUNet(tiny_unet2d())).double().eval()


def tiny_denoiser(model: KeyframeUNet, same_text: bool = False) -> I2VDenoiser:
    """The FVDM i2v denoiser of the tiny model; ``same_text``: the unconditional branch gets the prompt too."""
    context = latents(2 * B, L, TEXT_DIM, seed=1)
    if same_text:
        context = context[:B].repeat(2, 1, 1)
    return I2VDenoiser(model, SCHEDULE, context, None, frame_positions(B, F))


def keyframes(batch: int = B, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    return latents(batch, C, SIZE, SIZE, seed=seed), latents(batch, C, SIZE, SIZE, seed=seed + 1)


def run(sampler, start, end, seed: int = 3) -> torch.Tensor:
    return sampler.sample(start, end, F, generator=torch.Generator().manual_seed(seed))


# --- the distilled backward estimate (Eq. 13-17) ---------------------------------------------------------------


@pytest.mark.parametrize("indexing", ["reversed", "literal"])
def test_backward_estimate_is_anchored_at_each_samples_end_keyframe(indexing):  # M1, M11
    x, xf = latents(3, F, C, SIZE, SIZE, seed=0) * 5, latents(3, F, C, SIZE, SIZE, seed=1)
    z_end = latents(3, C, SIZE, SIZE, seed=2)
    estimate = mpd_backward_estimate(x, xf, z_end, 5.0, indexing)
    torch.testing.assert_close(estimate[:, -1], z_end, rtol=0, atol=1e-12)


def test_reversed_residuals_are_the_forward_estimate_translated_to_the_end_keyframe():  # M2, M12
    x, xf = latents(B, F, C, SIZE, SIZE, seed=0) * 3, latents(B, F, C, SIZE, SIZE, seed=1)
    z_end = latents(B, C, SIZE, SIZE, seed=2)
    assert torch.equal(flip(flip(x)), x)
    closed_form = xf + (z_end - xf[:, -1])[:, None]
    torch.testing.assert_close(mpd_backward_estimate(x, xf, z_end, 3.0), closed_form, rtol=0, atol=1e-12)


@pytest.mark.parametrize("sigma", [1e-2, 1.0, 700.0])
def test_reversed_estimate_does_not_depend_on_the_sample_noise_and_literal_does(sigma):  # M3
    x0, z_end = latents(B, F, C, SIZE, SIZE, seed=0), latents(B, C, SIZE, SIZE, seed=1)
    draws = [x0 + sigma * latents(B, F, C, SIZE, SIZE, seed=s) for s in (2, 3)]
    reversed_ = [mpd_backward_estimate(x, x0, z_end, sigma) for x in draws]  # oracle denoiser: xf = x0
    torch.testing.assert_close(reversed_[0], reversed_[1], rtol=0, atol=1e-9 * sigma)
    literal = [mpd_backward_estimate(x, x0, z_end, sigma, "literal") for x in draws]
    error = (literal[0] - reversed_[0]).pow(2).mean().sqrt()
    assert error > 0.5 * sigma


def test_zero_endpoint_residual_leaves_the_forward_estimate_and_zero_motion_gives_the_end_keyframe():  # M6, M7
    x, xf = latents(B, F, C, SIZE, SIZE, seed=0) * 4, latents(B, F, C, SIZE, SIZE, seed=1)
    # The forward estimate already ends at the keyframe: the distilled estimate is xf, so Eq. 18 is xf for any lam.
    torch.testing.assert_close(mpd_backward_estimate(x, xf, xf[:, -1].clone(), 4.0), xf, rtol=0, atol=1e-12)
    # No motion in the forward estimate: the distilled estimate is the end keyframe in every frame, which is
    # what the end-conditioned path of a model without motion predicts.
    z_start, z_end = latents(B, C, SIZE, SIZE, seed=2), latents(B, C, SIZE, SIZE, seed=3)
    still = ZeroMotion().pair(x, 500, z_start)[1]
    distilled = mpd_backward_estimate(x, still, z_end, 4.0)
    torch.testing.assert_close(distilled, z_end[:, None].expand_as(xf), rtol=0, atol=1e-12)
    torch.testing.assert_close(distilled, flip(ZeroMotion().pair(flip(x), 500, z_end)[1]), rtol=0, atol=1e-12)


# --- MPD against its base samplers ------------------------------------------------------------------------------


@pytest.mark.parametrize("base", [TRFSampler, ViBiDSampler])
def test_mpd_with_a_zero_motion_residual_equals_its_base_sampler(model, base):  # M4
    """MPD with a zero motion residual equals its base sampler: with gamma = 0 no step distils the forward path's
    motion residual, and MPD is TRF or ViBiD bit for bit, from the same generator. (Inside a distillation step a
    zero motion residual makes the distilled estimate the end keyframe itself, the test above; the step still
    moves along the forward path's noise, so it is not a base step.)"""
    denoiser = tiny_denoiser(model)
    start, end = keyframes()
    sampler = base(denoiser, SCHEDULE, num_steps=4)
    mpd = MPDSampler(sampler, gamma=0.0)
    assert mpd.num_mpd_steps == 0
    assert torch.equal(run(mpd, start, end), run(sampler, start, end))


def test_mpd_with_lam_zero_steps_along_the_forward_path_alone(model):  # M5
    denoiser = tiny_denoiser(model)
    start, end = keyframes()
    mpd = MPDSampler(TRFSampler(denoiser, SCHEDULE, num_steps=5), gamma=1.0, k=1, lam=0.0)
    x = latents(B, F, C, SIZE, SIZE, seed=4) * 3
    uncond, cond = denoiser.pair(x, mpd.timesteps[1], start)
    assert torch.equal(mpd.step(x, 1, start, end), cond + (mpd.sigmas[2] / mpd.sigmas[1]) * (x - uncond))
    # Without a null condition (the unconditional branch sees the prompt too) that is FVDM image-to-video sampling.
    same = tiny_denoiser(model, same_text=True)
    mpd = MPDSampler(TRFSampler(same, SCHEDULE, num_steps=5), gamma=1.0, k=1, lam=0.0)
    reference = fvdm_image_to_video(model, same.context, start, 5, 1.0)
    torch.testing.assert_close(run(mpd, start, end)[:, :-1], reference[:, :-1], atol=1e-5, rtol=1e-4)


def fvdm_image_to_video(model, context, start, num_steps, guidance_scale, seed: int = 3) -> torch.Tensor:
    """FVDM's i2v DDIM sampling ([0, t, ..., t]) from the noise the time-reversal samplers draw with ``seed``."""
    given = torch.zeros(B, F, C, SIZE, SIZE, dtype=torch.float64)
    given[:, 0] = start
    x_T = torch.randn(B, F, C, SIZE, SIZE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    denoise = guided_denoiser(model, context, None, frame_positions(2 * B, F), guidance_scale)
    return sample_per_frame(denoise, x_T.shape, SCHEDULE, num_steps, held_frames("i2v", B, F), given, x_T=x_T,
                            progress=False)


def test_mpd_schedule_call_counts_renoising_and_no_end_model_during_distillation(monkeypatch):  # M8, M9, M10
    start, end = keyframes()
    renoises = []
    monkeypatch.setattr(mpd_module, "renoise", lambda *a, **kw: renoises.append(1) or renoise(*a, **kw))
    for base, gamma, k, num_mpd in ((TRFSampler, 0.3, 2, 3), (ViBiDSampler, 0.25, 3, 2)):
        probe = base(ZeroMotion(), SCHEDULE, num_steps=10)
        spy = Spy(StaticWorld(0.1), end, forbid_end_at=set(probe.timesteps[:num_mpd]))
        sampler = MPDSampler(base(spy, SCHEDULE, num_steps=10), gamma=gamma, k=k, lam=0.5)
        assert sampler.num_mpd_steps == num_mpd
        base_steps = []
        original = sampler.base.step
        monkeypatch.setattr(sampler.base, "step", lambda x, i, *a: base_steps.append(i) or original(x, i, *a))
        renoises.clear()
        run(sampler, start, end)
        assert base_steps == list(range(num_mpd, 10))
        assert len(renoises) == num_mpd * (k - 1)
        for i, t in enumerate(sampler.timesteps):
            calls = [which for step, which in spy.calls if step == t]
            assert calls == (["start"] * k if i < num_mpd else ["start", "end"])


def test_renoising_adds_the_variance_between_the_two_levels():  # M9
    x = torch.zeros(400_000, dtype=torch.float64)
    noisy = renoise(x, 3.0, 2.0, torch.Generator().manual_seed(0))
    assert abs(noisy.var().item() / (3.0**2 - 2.0**2) - 1) < 0.01


def test_mpd_defaults_follow_table_3_per_base_and_bad_settings_are_clear_errors():
    trf, vibid = TRFSampler(ZeroMotion(), SCHEDULE), ViBiDSampler(ZeroMotion(), SCHEDULE)
    assert (MPDSampler(trf).lam, MPDSampler(trf).k, MPDSampler(trf).gamma, MPDSampler(trf).num_mpd_steps) == \
        (0.5, 2, 0.3, 7)
    assert (MPDSampler(vibid).lam, MPDSampler(vibid).k, MPDSampler(vibid).gamma, MPDSampler(vibid).num_mpd_steps) == \
        (1.0, 3, 0.2, 5)
    assert MPDSampler(trf, rounding="ceil").num_mpd_steps == 8
    assert MPDSampler(trf, num_mpd_steps=2).num_mpd_steps == 2
    with pytest.raises(ValueError, match="no defaults for a MPDSampler base"):
        MPDSampler(MPDSampler(trf))
    with pytest.raises(ValueError, match="residual_indexing='forward'"):
        MPDSampler(trf, residual_indexing="forward")
    with pytest.raises(ValueError, match="gamma"):
        MPDSampler(trf, gamma=1.5)
    with pytest.raises(ValueError, match="alpha"):
        TRFSampler(ZeroMotion(), SCHEDULE, alpha=2.0)


# --- the base samplers ------------------------------------------------------------------------------------------


def test_trf_with_alpha_one_is_forward_sampling_and_fusing_steps_equals_fusing_x0(model):  # M13
    denoiser = tiny_denoiser(model)
    start, end = keyframes()
    trf = TRFSampler(denoiser, SCHEDULE, num_steps=4, guidance_scale=3.0, alpha=1.0, hold_keyframes=False)
    reference = fvdm_image_to_video(model, denoiser.context, start, 4, 3.0)
    result = run(trf, start, end)
    torch.testing.assert_close(result[:, :-1], reference[:, :-1], atol=1e-5, rtol=1e-4)
    assert torch.equal(result[:, -1], end)
    # The spec's Eq. 5-7: fuse the two Euler steps; TRFSampler fuses x0 and steps once (the step is affine).
    x = latents(B, F, C, SIZE, SIZE, seed=4) * 3
    for alpha in (0.5, "linear"):
        trf = TRFSampler(denoiser, SCHEDULE, num_steps=4, guidance_scale=3.0, alpha=alpha, hold_keyframes=False)
        s, s_next, t = trf.sigmas[1], trf.sigmas[2], trf.timesteps[1]
        forward = classifier_free_guidance(*reversed(denoiser.pair(x, t, start)), 3.0)
        backward = classifier_free_guidance(*reversed(denoiser.pair(flip(x), t, end)), 3.0)
        x_fwd = forward + (s_next / s) * (x - forward)
        x_bwd = backward + (s_next / s) * (flip(x) - backward)
        a = 0.5 if alpha == 0.5 else torch.linspace(1, 0, F, dtype=torch.float64).view(1, F, 1, 1, 1)
        torch.testing.assert_close(trf.step(x, 1, start, end), a * x_fwd + (1 - a) * flip(x_bwd), rtol=1e-12,
                                   atol=1e-12)


def test_vibid_step_is_the_spec_step_and_dds_pins_the_far_keyframe(model):  # M14
    denoiser = tiny_denoiser(model)
    start, end = keyframes()
    vibid = ViBiDSampler(denoiser, SCHEDULE, num_steps=4)
    x = latents(B, F, C, SIZE, SIZE, seed=4) * 3
    s, s_next, t = vibid.sigmas[1], vibid.sigmas[2], vibid.timesteps[1]
    # MPD spec §2.4, written out: forward half, re-noise, backward half on the flipped video.
    xu, xh = denoiser.pair(x, t, start)
    xh[:, -1] = end
    x_prev = xh + (s_next / s) * (x - xu)
    x_re = x_prev + (s**2 - s_next**2) ** 0.5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(5),
                                                            dtype=torch.float64)
    yu, yh = denoiser.pair(flip(x_re), t, end)
    yh[:, -1] = start
    expected = flip(yh + (s_next / s) * (flip(x_re) - yu))
    assert torch.equal(vibid.step(x, 1, start, end, torch.Generator().manual_seed(5)), expected)
    # At the last step (sigma_next = 0) a half-step returns its x0 estimate: both keyframes are in place.
    last = vibid.num_steps - 1
    forward = vibid.half_step(x, last, start, end)
    assert torch.equal(forward[:, -1], end) and torch.equal(forward[:, 0], start)
    backward = flip(vibid.half_step(flip(x), last, end, start))
    assert torch.equal(backward[:, 0], start) and torch.equal(backward[:, -1], end)


@pytest.mark.parametrize("name", ["trf", "vibid", "mpd_trf", "mpd_vibid"])
def test_static_scene_in_betweens_stay_close_to_the_identical_keyframes(name):
    """Identical start and end keyframes of a static scene (the exact denoiser of a world in which every frame is
    the given one plus N(0, tau^2) jitter): from noise of sigma ~16, every in-between frame ends within the
    world's jitter tau of the keyframe, and the keyframes come back exactly."""
    tau = 0.05
    config = OmegaConf.load(CONFIG_DIR / "inbetween" / f"{name}.yaml")
    sampler = build_sampler(config, denoiser=StaticWorld(tau), schedule=SCHEDULE)
    keyframe = latents(3, C, SIZE, SIZE, seed=6)
    video = run(sampler, keyframe, keyframe)
    assert torch.equal(video[:, 0], keyframe) and torch.equal(video[:, -1], keyframe)
    rms = (video[:, 1:-1] - keyframe[:, None]).pow(2).mean(dim=(2, 3, 4)).sqrt()
    assert (rms < tau).all(), rms


def test_inbetween_configs_build_the_spec_samplers(model):
    denoiser = tiny_denoiser(model)
    built = {name: build_sampler(OmegaConf.load(CONFIG_DIR / "inbetween" / f"{name}.yaml"), denoiser=denoiser,
                                 schedule=SCHEDULE) for name in ("trf", "vibid", "mpd_trf", "mpd_vibid")}
    assert isinstance(built["trf"], TRFSampler) and built["trf"].alpha == 0.5 and built["trf"].num_steps == 25
    assert isinstance(built["vibid"], ViBiDSampler) and built["vibid"].cfgpp and built["vibid"].dds
    for name, base, settings in (("mpd_trf", TRFSampler, (0.5, 2, 0.3, 7)), ("mpd_vibid", ViBiDSampler,
                                                                              (1.0, 3, 0.2, 5))):
        mpd = built[name]
        assert isinstance(mpd, MPDSampler) and type(mpd.base) is base and mpd.base.denoiser is denoiser
        assert (mpd.lam, mpd.k, mpd.gamma, mpd.num_mpd_steps) == settings
        assert mpd.residual_indexing == "reversed"
