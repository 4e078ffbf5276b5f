"""ZeroSmooth: frame operators, sliding windows, correction hooks and the self-cascaded sampler on a tiny model."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import Attention

from fusionframes.diffusion import NoiseSchedule, sample
from fusionframes.models.keyframe_unet import KeyframeUNet
from fusionframes.models.temporal import TemporalAttentionLayer, frame_positions
from fusionframes.pipeline import guided_denoiser
from fusionframes.sampling.frame_operators import (
    OPERATORS,
    frame_operator,
    long_length,
    window_starts,
    window_weights,
    windowed,
)
from fusionframes.sampling.zerosmooth import (
    LAMBDA_SCHEDULES,
    ZeroSmoothConfig,
    ZeroSmoothSampler,
    adain_to_keyframes,
    shared_noise,
)
from fusionframes.sampling.zerosmooth_attention import CorrectionState, correction_hooks
from tests.test_keyframe_unet import BACKBONES, SIZE, TEXT_DIM, L, perturb

KEYFRAMES = 4  # the tiny model's training length: F = 4, window 4, overlap 2


@pytest.mark.parametrize("layout", ["paper", "inclusive"])
@pytest.mark.parametrize("scale", [2, 4])
def test_operator_algebra(scale, layout):
    n = 5
    m = long_length(n, scale, layout)
    h = torch.randn(2, m, 3, 7, dtype=torch.float64)
    h_k = torch.randn(2, n, 3, 7, dtype=torch.float64)
    for kind in OPERATORS:
        op = frame_operator(kind, n, m, scale)
        torch.testing.assert_close(op.matrix @ op.pinv, torch.eye(n, dtype=torch.float64), rtol=0, atol=1e-10)
        torch.testing.assert_close(op.matrix.sum(1), torch.ones(n, dtype=torch.float64))  # biases pass through
        # Measurement consistency: the back-projected states measure exactly the keyframe states.
        corrected = op.backproject(h, h_k)
        torch.testing.assert_close(torch.einsum("ij,bj...->bi...", op.matrix, corrected), h_k, rtol=0, atol=1e-10)
    sampling = frame_operator("sample", n, m, scale)
    assert torch.equal(sampling.matrix.nonzero()[:, 1], torch.arange(n) * scale)
    corrected = sampling.backproject(h, h_k)
    keep = torch.ones(m, dtype=torch.bool)
    keep[: scale * n: scale] = False
    assert torch.equal(corrected[:, ::scale][:, :n], h_k) and torch.equal(corrected[:, keep], h[:, keep])


def test_operators_match_the_spec_worked_example():
    a1 = torch.tensor([[.5, .5, 0, 0, 0, 0], [0, 0, .5, .5, 0, 0], [0, 0, 0, 0, .5, .5]], dtype=torch.float64)
    a2 = torch.tensor([[1, 0, 0, 0, 0, 0], [0, 0, .5, .5, 0, 0], [0, 0, 0, 0, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(frame_operator("interp_align_false", 3, 6, 2).matrix, a1)
    torch.testing.assert_close(frame_operator("interp_align_true", 3, 6, 2).matrix, a2)
    assert frame_operator("pairs_backward", 3, 6, 2).matrix[1].tolist() == [0, .5, .5, 0, 0, 0]


@pytest.mark.parametrize("frames, window, overlap", [(32, 16, 8), (61, 16, 8), (13, 4, 2), (9, 4, 0), (7, 5, 3)])
@pytest.mark.parametrize("fusion", ["pyramid", "uniform"])
def test_window_blending_covers_every_frame_once_in_weight(frames, window, overlap, fusion):
    weights = window_weights(frames, window, overlap, fusion)
    starts = window_starts(frames, window, overlap)
    assert starts[0] == 0 and starts[-1] + window == frames
    assert (weights >= 0).all() and (weights.sum(0) - 1).abs().max() < 1e-12
    for w, a in enumerate(starts):  # zero outside its window
        assert weights[w, :a].abs().sum() == 0 and weights[w, a + window:].abs().sum() == 0
    if (frames, window, overlap) == (32, 16, 8):
        assert starts == [0, 8, 16]
    # The identity through the windows is the identity; a frame inside one window only gets that window's output.
    x = torch.randn(3, frames, 5, dtype=torch.float64)
    torch.testing.assert_close(windowed(lambda v: v, x, window, overlap, fusion), x)
    outputs = []
    out = windowed(lambda v: outputs.append(v.flip(1)) or outputs[-1], x, window, overlap, fusion)
    single = (weights > 0).sum(0) == 1
    for w, a in enumerate(starts):
        only_here = single.clone()
        only_here[:a] = False
        only_here[a + window:] = False
        local = only_here.nonzero()[:, 0]
        assert torch.equal(out[:, local], outputs[w][:, local - a])


def test_one_window_is_full_attention():
    attention = TemporalAttentionLayer(8, 16, groups=4, head_dim=8).attention
    x = torch.randn(6, 4, 8)
    assert torch.equal(windowed(attention, x, 4, 2), attention(x))


def test_lambda_schedules_lie_in_unit_interval_and_do_not_increase_while_denoising():
    scheduler = NoiseSchedule().scheduler("ddim")
    scheduler.set_timesteps(50)
    for name in LAMBDA_SCHEDULES:
        config = ZeroSmoothConfig(lambda_schedule=name, lambda_value=0.3, lambda_power=2.0)
        values = [config.correction_weight(int(t), 1000) for t in scheduler.timesteps]
        assert all(0 <= v <= 1 for v in values) and values == sorted(values, reverse=True)
    assert ZeroSmoothConfig().correction_weight(980, 1000) == pytest.approx(0.98)


@pytest.mark.parametrize("layout", ["paper", "inclusive"])
def test_keyframe_noise_is_shared_across_stages(layout):
    config = ZeroSmoothConfig(layout=layout)
    frames = ZeroSmoothSampler(None, NoiseSchedule(), config).stage_frames(5)
    assert frames == ([5, 10, 20] if layout == "paper" else [5, 9, 17])
    noise = shared_noise([(2, n, 3, 4, 4) for n in frames], 2, True, torch.Generator().manual_seed(0),
                         torch.device("cpu"), torch.float32)
    for k in (1, 2):
        assert torch.equal(noise[k][:, ::2][:, : frames[k - 1]], noise[k - 1])
        assert not torch.equal(noise[k][:, 1], noise[k][:, 0])


def tiny_model(backbone: str = "unet2d", variant: str = "conv1d_attn1d_blocks") -> KeyframeUNet:
    return perturb(KeyframeUNet(BACKBONES[backbone](), variant, num_frames=KEYFRAMES), scale=0.2).eval()


def text() -> tuple[torch.Tensor, None, torch.Tensor]:
    """One prompt and the empty prompt (random states), no mask, keyframe positions (2, F)."""
    return torch.randn(2, L, TEXT_DIM, generator=torch.Generator().manual_seed(0)), None, frame_positions(2, KEYFRAMES)


SHAPE = (1, KEYFRAMES, 4, SIZE, SIZE)


@pytest.mark.parametrize("layout", ["paper", "inclusive"])
def test_zero_correction_weight_equals_plain_sampling_of_the_long_branch(layout):
    model = tiny_model()
    schedule = NoiseSchedule()
    config = ZeroSmoothConfig(layout=layout, lambda_schedule="constant", lambda_value=0.0, num_inference_steps=2,
                              eta=0.0, guidance_scale=2.0)
    context, mask, positions = text()
    sampler = ZeroSmoothSampler(model, schedule, config)
    out = sampler(context, mask, positions, SHAPE, generator=torch.Generator().manual_seed(0))
    frames = sampler.stage_frames(KEYFRAMES)
    assert [z.shape[1] for z in out] == frames

    # Plain DDIM of the 4x branch alone from its own (shared) initial noise, temporal attention in windows.
    noise = shared_noise([(1, n, 4, SIZE, SIZE) for n in frames], 2, True, torch.Generator().manual_seed(0),
                         torch.device("cpu"), torch.float32)[-1]
    long_positions = sampler.stage_positions(positions)[-1]
    with correction_hooks(model, CorrectionState(window=KEYFRAMES, overlap=KEYFRAMES // 2)):
        plain = sample(guided_denoiser(model, context, mask, long_positions, 2.0), noise.shape, schedule, 2,
                       x_T=noise, progress=False)
    assert torch.equal(out[-1], plain)


def test_scale_one_reproduces_the_base_model_for_any_correction_weight():
    model = tiny_model()
    config = ZeroSmoothConfig(scale=1, num_stages=1, num_inference_steps=2, eta=1.0,
                              kv_operators=["interp_align_false", "pairs_backward"])
    out = ZeroSmoothSampler(model, NoiseSchedule(), config)(*text(), SHAPE, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out[1], out[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("layout", ["paper", "inclusive"])
def test_full_correction_gives_every_module_the_short_branch_states_at_the_keyframes(layout):
    model = tiny_model()
    context, mask, positions = text()
    sampler = ZeroSmoothSampler(model, NoiseSchedule(), ZeroSmoothConfig(layout=layout, num_stages=1))
    frames = sampler.stage_frames(KEYFRAMES)
    long_positions = sampler.stage_positions(positions)[1]
    state = CorrectionState(window=KEYFRAMES, overlap=2, lam=1.0, operators=sampler.operators(*frames),
                            generator=torch.Generator().manual_seed(0))
    t = torch.tensor([700, 700])
    with torch.no_grad(), correction_hooks(model, state):
        state.mode, state.num_frames = "record", frames[0]
        model(torch.randn(2, frames[0], 4, SIZE, SIZE), t, context, mask, positions)
        short = state.bank_out
        state.mode, state.num_frames, state.bank_in, state.bank_out = "correct", frames[1], short, {}
        corrected = model(torch.randn(2, frames[1], 4, SIZE, SIZE), t, context, mask, long_positions, any_length=True)
        state.lam, state.bank_out = 0.0, {}
        plain = model(torch.randn(2, frames[1], 4, SIZE, SIZE), t, context, mask, long_positions, any_length=True)
    assert set(state.bank_in) == set(state.bank_out) and len(short) > 3
    for key, h_k in short.items():  # the states passed on: query states, equal to the short branch's at s*i
        assert torch.equal(state.bank_out[key][:, : 2 * KEYFRAMES: 2], h_k), key
    assert torch.isfinite(corrected).all() and not torch.allclose(corrected, plain)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_hooks_reach_every_attention_module_and_leave_the_model_as_it_was(backbone):
    model = tiny_model(backbone)
    context, mask, positions = text()
    z = torch.randn(2, KEYFRAMES, 4, SIZE, SIZE)
    t = torch.tensor([500, 500])
    with torch.no_grad():
        before = model(z, t, context, mask, positions)
        state = CorrectionState(num_frames=KEYFRAMES, window=KEYFRAMES, overlap=2, mode="record")
        with correction_hooks(model, state):
            recorded = model(z, t, context, mask, positions)
        after = model(z, t, context, mask, positions)
    spatial = {n for n, m in model.unet.named_modules() if isinstance(m, Attention)}
    temporal = {k for k, m in model.temporal["blocks"].items() if isinstance(m, TemporalAttentionLayer)}
    assert set(state.bank_out) == spatial | temporal and spatial and temporal
    assert torch.equal(recorded, before) and torch.equal(after, before)
    assert all(type(m.processor).__name__ != "SpatialCorrectionProcessor" for n, m in model.unet.named_modules()
               if isinstance(m, Attention))


@pytest.mark.parametrize("backbone", BACKBONES)
def test_interpolating_given_keyframes_keeps_them_and_fills_between(backbone):
    config = ZeroSmoothConfig(layout="inclusive", num_inference_steps=2, adain_color=backbone == "kandinsky3")
    keyframes = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5))
    out = ZeroSmoothSampler(tiny_model(backbone), NoiseSchedule(), config)(
        *text(), SHAPE, keyframes=keyframes, generator=torch.Generator().manual_seed(0))
    assert [z.shape[1] for z in out] == [4, 7, 13]  # FusionFrames' T -> 4T - 3 layout
    assert torch.equal(out[0], keyframes) and all(torch.isfinite(z).all() for z in out)


def test_adain_matches_keyframe_statistics():
    reference = torch.randn(2, 3, 4, 5, 5) * 3 + 1
    z = adain_to_keyframes(torch.randn(2, 5, 4, 5, 5), reference, 2)
    torch.testing.assert_close(z[:, ::2].mean((-2, -1)), reference.mean((-2, -1)), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(z[:, ::2].std((-2, -1)), reference.std((-2, -1)), rtol=1e-4, atol=1e-4)


def test_clear_errors():
    with pytest.raises(ValueError, match="attends within 2x2-position windows"):
        ZeroSmoothSampler(tiny_model(variant="conv1d_attn3d_blocks"), NoiseSchedule(),
                          ZeroSmoothConfig(num_inference_steps=1))(*text(), SHAPE)
    with pytest.raises(ValueError, match=r"zerosmooth.modules has \['spatial'\]"):
        ZeroSmoothConfig(modules=["spatial"])
    with pytest.raises(ValueError, match="layout='even' is not supported"):
        ZeroSmoothConfig(layout="even")
    with pytest.raises(ValueError, match="zerosmooth.lambda_schedule='step'"):
        ZeroSmoothConfig(lambda_schedule="step")
    with pytest.raises(ValueError, match="frame operator 'nearest'"):
        frame_operator("nearest", 3, 6, 2)
