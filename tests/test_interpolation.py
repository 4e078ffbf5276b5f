"""Interpolation stage: InterpolationUNet (FusionFrames and MFI) on tiny backbones, the module, and train.py."""

from __future__ import annotations

import copy
import itertools
from functools import partial

import pytest
import torch
from torch import nn

from fusionframes.data.samplers import Clip, InterpolationSampler
from fusionframes.diffusion import NoiseSchedule
from fusionframes.models.interpolation_unet import (
    MODES,
    InterpolationUNet,
    context_guidance,
)
from fusionframes.models.t2i import TextToImageModel
from fusionframes.modules.interpolation import InterpolationModule
from fusionframes.training import train
from tests.conftest import ASSETS
from tests.test_keyframe_unet import BACKBONES, TEXT_DIM

C, SIZE = 4, 4  # latent channels, 4x4 latents


def build(backbone: str = "unet2d", mode: str = "fusionframes") -> tuple[InterpolationUNet, nn.Module, torch.Tensor]:
    """(interpolator, the untouched 2D UNet, its null context (1, L, D))."""
    unet = BACKBONES[backbone]()
    torch.manual_seed(2)
    null = torch.randn(1, 3, TEXT_DIM)
    return InterpolationUNet(copy.deepcopy(unet), null[0], mode=mode).eval(), unet, null


def inputs(model: InterpolationUNet, t: int = 3, b: int = 2) -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    keyframes = torch.randn(b, t, C, SIZE, SIZE)
    return {"sample": torch.randn(model.sample_shape(keyframes)), "timestep": torch.tensor([10, 700][:b]),
            "keyframes": keyframes, "skip": torch.tensor([1, 3][:b]), "perturbation": torch.tensor([0, 120][:b])}


def schedule() -> NoiseSchedule:
    return NoiseSchedule(beta_schedule="cosine", prediction_type="v_prediction", timestep_spacing="trailing")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backbone", BACKBONES)
def test_untrained_model_is_the_2d_unet_on_z1_and_predicts_identical_frames(backbone: str, mode: str) -> None:
    model, unet, null = build(backbone, mode)
    x = inputs(model)
    with torch.no_grad():
        out = model(**x)
        # z_t^1 of each group (fusionframes) or every frame (mfi; mfi_windows: of every window) -> (2, n, C, h, w)
        frames = (x["sample"][:, :, 0] if mode == "fusionframes" else x["sample"]).flatten(1, -4)
        reference = torch.stack([unet(frames[:, i], x["timestep"], encoder_hidden_states=null.expand(2, -1, -1),
                                      encoder_attention_mask=torch.ones(2, 3, dtype=torch.bool)).sample
                                 for i in range(frames.shape[1])], dim=1)
    assert out.shape == x["sample"].shape
    if mode == "fusionframes":
        assert torch.equal(out[:, :, 0], out[:, :, 1]) and torch.equal(out[:, :, 0], out[:, :, 2])
        out = out[:, :, 0]
    assert torch.allclose(out.flatten(1, -4), reference, atol=1e-5)


def test_temporal_convs_are_inert_at_alpha_zero_then_mix_groups_and_alpha_gets_gradient() -> None:
    model, _, _ = build()
    x = inputs(model, t=4)
    changed = {**x, "sample": x["sample"].clone()}
    changed["sample"][:, 0] += 1.0  # only group 0 changes
    with torch.no_grad():
        before = model(**x)
        for layer in model.temporal.values():
            layer.conv.weight.add_(torch.randn_like(layer.conv.weight))
        assert torch.equal(model(**x), before)  # alpha = 0: conv weights do not matter
        assert torch.equal(model(**changed)[:, 1:], before[:, 1:])  # groups are independent

    model.zero_grad()
    model(**x).square().mean().backward()
    assert all(layer.alpha.grad.abs() > 0 for layer in model.temporal.values())
    assert all(layer.conv.weight.grad.abs().max() == 0 for layer in model.temporal.values())

    with torch.no_grad():
        for layer in model.temporal.values():
            layer.alpha.fill_(0.5)
        mixed = model(**changed)
        assert not torch.allclose(mixed[:, 1], model(**x)[:, 1])  # group 0's input now reaches group 1


def test_mfi_windows_are_independent_and_their_frames_mix() -> None:
    """mfi_windows (appendix 10): the temporal convs run over the 5 frames of a window, never across windows."""
    model, _, _ = build(mode="mfi_windows")
    x = inputs(model, t=4)
    assert x["sample"].shape[1:3] == (3, 5)
    changed = {**x, "sample": x["sample"].clone()}
    changed["sample"][:, 0, 0] += 1.0  # the first frame of window 0 only
    with torch.no_grad():
        for layer in model.temporal.values():
            layer.alpha.fill_(0.5)
        before, after = model(**x), model(**changed)
    assert torch.equal(after[:, 1:], before[:, 1:])  # other windows are untouched
    assert not torch.allclose(after[:, 0, 1:], before[:, 0, 1:])  # frame 0 reaches the window's other frames


def test_skip_and_perturbation_embeddings_start_at_zero_and_are_checked() -> None:
    model, _, _ = build()
    x = inputs(model)
    with torch.no_grad():
        out = model(**x)
        assert torch.equal(model(**{**x, "skip": torch.tensor([12, 7]), "perturbation": torch.tensor([250, 3])}), out)
    with pytest.raises(ValueError, match="skip values \\[1, 13\\] are out of range; this model takes 0..12"):
        model(**{**x, "skip": torch.tensor([1, 13])})
    with pytest.raises(ValueError, match="unknown interpolation mode 'masked'"):
        InterpolationUNet(BACKBONES["unet2d"](), torch.zeros(1, TEXT_DIM), mode="masked")


@pytest.mark.parametrize("mode", MODES)
def test_interpolate_gives_4t_minus_3_frames_with_exact_keyframes_and_two_passes(mode: str) -> None:
    model, _, _ = build(mode=mode)
    generator = torch.Generator().manual_seed(0)
    for t in (2, 3, 16):
        keyframes = torch.randn(1, t, C, SIZE, SIZE)
        video = model.interpolate(keyframes, 3, schedule(), 1, generator=generator)
        assert video.shape == (1, 4 * t - 3, C, SIZE, SIZE)
        assert torch.equal(video[:, ::4], keyframes)
    second = model.interpolate(video, 1, schedule(), 1, generator=generator)  # 16 -> 61 -> 241
    assert video.shape[1] == 61 and second.shape == (1, 241, C, SIZE, SIZE)
    assert torch.equal(second[:, ::4], video)


def test_context_guidance_is_one_batched_call_with_zeroed_keyframes() -> None:
    calls = []

    def stub(sample, timestep, keyframes, skip, perturbation):
        calls.append((sample, timestep, keyframes, skip, perturbation))
        return sample * 0 + keyframes.mean(dim=(1, 2, 3, 4))[:, None, None, None, None, None] + 1.0

    sample, keyframes = torch.randn(2, 4, 3, C, SIZE, SIZE), torch.randn(2, 5, C, SIZE, SIZE)
    t, skip, w = torch.tensor([5, 9]), torch.tensor([3, 1]), 0.25
    guided = context_guidance(stub, sample, t, keyframes, skip, w)
    assert len(calls) == 1
    batch_sample, batch_t, batch_keyframes, batch_skip, batch_tp = calls[0]
    assert torch.equal(batch_sample, torch.cat([sample, sample])) and torch.equal(batch_t, torch.cat([t, t]))
    assert torch.equal(batch_keyframes, torch.cat([keyframes, torch.zeros_like(keyframes)]))
    assert torch.equal(batch_skip, torch.cat([skip, skip])) and not batch_tp.any()
    cond = keyframes.mean(dim=(1, 2, 3, 4))[:, None, None, None, None, None] + 1.0
    assert torch.allclose(guided, ((1 + w) * cond - w * 1.0).expand_as(sample))


@pytest.mark.parametrize("mode", MODES)
def test_33_frame_clip_reaches_the_unet_in_channel_order(mode: str) -> None:
    """Frame k of a 33-frame clip is the constant k: the UNet's input channels show which frame went where."""
    sampler = InterpolationSampler(skips=[1])
    frames = torch.arange(33.0)[:, None, None, None].expand(33, C, SIZE, SIZE)
    clip = sampler.arrange(frames, Clip(list(range(33)), {"skip": 1}))
    keyframes, targets = clip["keyframes"][None], clip["targets"][None]
    model, _, _ = build(mode=mode)
    assert torch.equal(model.to_video(keyframes, model.to_sample(keyframes, targets)), frames[None])
    seen = []
    model.unet.conv_in.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    sample = model.to_sample(keyframes, targets) + 100  # the "noisy" frames: k + 100
    with torch.no_grad():
        model(sample, torch.tensor([1]), keyframes, torch.tensor([1]), torch.tensor([0]))
    x = seen[0][:, :, 0, 0]  # (UNet batch, channels): one value per channel
    if mode == "fusionframes":
        assert x.shape == (8, 20)
        for g in range(8):  # [z_t^1, z_t^2, z_t^3, c^1, c^2] of group g
            expected = [4 * g + 101] * 4 + [4 * g + 102] * 4 + [4 * g + 103] * 4 + [4 * g] * 4 + [4 * g + 4] * 4
            assert x[g].tolist() == expected
    elif mode == "mfi_windows":
        assert x.shape == (8 * 5, 9)
        for g, j in itertools.product(range(8), range(5)):  # frame j of window g is frame 4g + j of the clip
            k, key = 4 * g + j, j in (0, 4)
            assert x[5 * g + j].tolist() == [k + 100.0] * 4 + [float(k) if key else 0.0] * 4 + [float(key)]
    else:
        assert x.shape == (33, 9)
        for k in range(33):  # [z_t, keyframe or zeros, mask]
            key = k % 4 == 0
            assert x[k].tolist() == [k + 100.0] * 4 + [float(k) if key else 0.0] * 4 + [float(key)]


def test_save_and_load_without_the_t2i_directory(tmp_path) -> None:
    for backbone in BACKBONES:
        model, _, _ = build(backbone, "fusionframes")
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        loaded = InterpolationUNet.from_pretrained(model.save_pretrained(tmp_path / backbone)).eval()
        x = inputs(model)
        with torch.no_grad():
            assert torch.equal(loaded(**x), model(**x))
        assert loaded.parameter_counts() == model.parameter_counts()


@pytest.fixture(scope="module")
def module() -> InterpolationModule:
    return InterpolationModule(TextToImageModel.from_pretrained(ASSETS / "t2i"), str(ASSETS / "movq"),
                               optimizer=partial(torch.optim.AdamW, lr=1e-4), num_keyframes=9)


def test_perturbation_and_unconditional_masking_follow_their_probabilities(module: InterpolationModule) -> None:
    n = 20000
    keyframes = torch.ones(n, 2, 1, 1, 1)
    condition, tp = module.conditioning(keyframes, torch.Generator().manual_seed(0))
    again, tp_again = module.conditioning(keyframes, torch.Generator().manual_seed(0))
    assert torch.equal(condition, again) and torch.equal(tp, tp_again)  # all draws come from the generator

    counts = torch.bincount(tp, minlength=251)
    assert len(counts) == 251 and counts.min() > 0  # tp in {0..250}, every level drawn
    expected = n / 251
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 350  # 250 degrees of freedom: p < 1e-3 above ~330

    dropped = (condition == 0).flatten(1).all(dim=1)
    assert abs(dropped.float().mean().item() - 0.1) < 0.01  # 4 sigma
    kept = ~dropped
    assert torch.equal(condition[kept & (tp == 0)], keyframes[kept & (tp == 0)])  # tp = 0: exact keyframes
    error = (condition - keyframes).square().flatten(1).mean(dim=1)
    assert (error[kept & (tp > 0)] > 0).all()
    assert error[kept & (tp > 200)].mean() > 10 * error[kept & (tp > 0) & (tp < 50)].mean()


def test_keyframe_count_that_does_not_match_is_a_clear_error(module: InterpolationModule) -> None:
    batch = {"keyframes": torch.zeros(1, 5, 3, 32, 32), "targets": torch.zeros(1, 4, 3, 3, 32, 32),
             "skip": torch.tensor([1])}
    with pytest.raises(ValueError, match="the batch has 5 keyframes but model.num_keyframes=9"):
        module.latents(batch)


@pytest.mark.parametrize("experiment", ["interpolation", "interpolation_mfi", "interpolation_mfi_windows"])
def test_one_training_step_per_experiment_trains_the_whole_model(experiment, tiny_config, tmp_path) -> None:
    metrics = train(tiny_config(experiment, "trainer.max_steps=1", "+callbacks.export.dtype=float32"))
    assert {"train/loss", "val/loss", "val/psnr"} <= set(metrics)
    run = tmp_path / "a"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["state_dict"] and all(k.startswith("model.") for k in ckpt["state_dict"])
    assert set(ckpt["frozen_base"]) == {"codec"}
    assert list((run / "csv" / "media").glob("val_interpolation_*.png"))
    assert list((run / "csv" / "media").glob("val_clip_*.mp4"))
    model = InterpolationUNet.from_pretrained(run / "export" / "interpolation")
    assert model.mode == {"interpolation": "fusionframes", "interpolation_mfi": "mfi",
                          "interpolation_mfi_windows": "mfi_windows"}[experiment]
    trained = ckpt["state_dict"]
    assert all(torch.equal(v, trained[f"model.{k}"]) for k, v in model.state_dict().items())
    assert any(layer.alpha.item() != 0 for layer in model.temporal.values())  # gradients reached alpha


@pytest.mark.parametrize("mode", MODES)
def test_a_bf16_model_takes_float32_inputs_as_under_deepspeed_bf16(mode: str) -> None:
    model, _, _ = build(mode=mode)
    x = inputs(model)
    with torch.no_grad():
        reference = model(**x)
        out = model.to(torch.bfloat16)(**x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference, atol=0.1, rtol=0.1)


def test_the_interpolator_compiles_to_one_graph() -> None:
    """No graph break (the skip range check reads the host only outside torch.compile and CUDA graphs)."""
    model = build()[0]
    with torch.no_grad():
        explained = torch._dynamo.explain(model)(**inputs(model))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
