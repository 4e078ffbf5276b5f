"""FVDM: PTSS timesteps, per-frame timesteps through the keyframe model, training option, per-frame sampling."""

from __future__ import annotations

import copy

import pytest
import torch
from hydra.utils import instantiate

from fusionframes.diffusion import NoiseSchedule, sample
from fusionframes.diffusion.per_frame import frame_timesteps, sample_per_frame
from fusionframes.diffusion.timesteps import ptss_timesteps
from fusionframes.models.keyframe_unet import KeyframeUNet
from fusionframes.models.temporal import frame_positions
from fusionframes.sampling.fvdm import FVDMSampler, held_frames
from fusionframes.training import train
from tests.test_keyframe_unet import BACKBONES, SIZE, TEXT_DIM, B, F, L, batch, frame_by_frame, perturb

T = 1000


def constant_rows(t: torch.Tensor) -> torch.Tensor:
    return (t == t[:, :1]).all(1)


def test_ptss_p0_gives_equal_timesteps_p1_independent_ones_and_p_the_mixing_fraction():
    g = torch.Generator().manual_seed(0)
    scalar = torch.randint(0, T, (512,), generator=torch.Generator().manual_seed(0))
    t0 = ptss_timesteps(512, 4, T, 0.0, generator=g)
    assert t0.shape == (512, 4) and t0.dtype == torch.long and constant_rows(t0).all()
    assert torch.equal(t0[:, 0], scalar)  # p = 0: exactly the scalar draw of the same generator state

    t1 = ptss_timesteps(4096, 4, T, 1.0, generator=g)
    assert 0 <= t1.min() and t1.max() <= T - 1
    assert constant_rows(t1).float().mean() < 1e-3  # 1000^-3 expected
    # Independent uniform frames: per-frame means near (T-1)/2 and near-zero correlation between frames.
    x = t1.double()
    assert (x.mean(0) - (T - 1) / 2).abs().max() < 4 * (T / 12**0.5) / 4096**0.5
    correlation = torch.corrcoef(x.T)
    assert (correlation - torch.eye(4, dtype=torch.float64)).abs().max() < 4 / 4096**0.5

    n, p = 4096, 0.2
    mixed = (~constant_rows(ptss_timesteps(n, 4, T, p, generator=g))).float().mean()
    assert abs(mixed - p) < 3 * (p * (1 - p) / n) ** 0.5

    fractions = {float((~constant_rows(ptss_timesteps(64, 4, T, 0.5, "batch", g))).float().mean())
                 for _ in range(20)}
    assert fractions <= {0.0, 1.0} and fractions == {0.0, 1.0}  # one coin per batch: all or none


@pytest.mark.parametrize("backbone", BACKBONES)
def test_vectorised_timesteps_all_equal_reproduce_the_scalar_model_exactly(backbone):
    model = perturb(KeyframeUNet(BACKBONES[backbone](), "conv1d_attn1d_blocks"))
    inputs = batch()
    with torch.no_grad():
        scalar = model(**inputs)
        vector = model(**{**inputs, "timestep": inputs["timestep"][:, None].expand(B, F)})
    assert torch.equal(vector, scalar)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_per_frame_timesteps_reach_every_frame_and_the_temporal_modules(backbone):
    unet = BACKBONES[backbone]()
    inputs = batch()
    tau = torch.tensor([[0, 400, 999], [17, 17, 600]])
    with torch.no_grad():
        # Identity temporal modules: frame i is the 2D UNet on frame i at its own timestep.
        out = KeyframeUNet(copy.deepcopy(unet))(**{**inputs, "timestep": tau})
        for i in range(F):
            single = {**inputs, "sample": inputs["sample"][:, i: i + 1], "timestep": tau[:, i]}
            torch.testing.assert_close(out[:, i], frame_by_frame(unet, single)[:, 0], atol=1e-5, rtol=1e-5)
        # Trained temporal modules couple the frames: changing frame 2's level changes frame 0's output.
        model = perturb(KeyframeUNet(unet))
        a = model(**{**inputs, "timestep": tau})
        b = model(**{**inputs, "timestep": tau.clone().index_fill_(1, torch.tensor([2]), 5)})
    assert not torch.allclose(a[:, 0], b[:, 0])


def test_vectorised_training_with_p0_gives_the_scalar_loss_and_gradients(tiny_config):
    cfg_scalar = tiny_config("keyframes_blocks")
    cfg_fvdm = tiny_config("keyframes_fvdm", "model.ptss_p=0", run="b")
    assert cfg_fvdm.model.timesteps == "vectorized"
    batch_ = next(iter(instantiate(cfg_scalar.data.datamodule, _convert_="all").train_dataloader()))
    results = []
    for cfg in (cfg_scalar, cfg_fvdm):
        torch.manual_seed(0)  # the same initial temporal weights
        module = instantiate(cfg.model, _convert_="all")
        keep_captions = torch.zeros(len(batch_["caption"]), dtype=torch.bool)
        loss = module._loss(batch_, keep_captions, torch.Generator().manual_seed(3))
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in module.model.temporal_parameters()]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert torch.equal(loss_a, loss_b)
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b, strict=True))
    module.ptss_p = 1.0  # every frame its own level
    t = module.training_timesteps(64, torch.Generator().manual_seed(0))
    assert t.shape == (64, 4) and not constant_rows(t).any()


def test_keyframes_fvdm_experiment_trains_and_logs_the_ptss_fraction(tiny_config, tmp_path):
    train(tiny_config("keyframes_fvdm", "trainer.max_steps=1", "model.ptss_p=1"))
    metrics = (tmp_path / "a" / "csv" / "metrics.csv").read_text()
    assert "train/ptss_independent" in metrics
    with pytest.raises(Exception, match=r"model.timesteps='per_frame' is not a timestep mode"):
        instantiate(tiny_config("keyframes_fvdm", "model.timesteps=per_frame", run="b").model)


def tiny_denoiser(model: KeyframeUNet, text: torch.Tensor, positions: torch.Tensor):
    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model(x, t, text, None, positions, any_length=True)
    return denoise


@pytest.mark.parametrize("prediction_type, eta", [("epsilon", 0.0), ("v_prediction", 1.0)])
def test_per_frame_sampler_with_nothing_held_is_the_scalar_ddim_sampler_bit_for_bit(prediction_type, eta):
    model = perturb(KeyframeUNet(BACKBONES["unet2d"]()))
    schedule = NoiseSchedule(prediction_type=prediction_type)
    text = torch.randn(B, L, TEXT_DIM, generator=torch.Generator().manual_seed(0))
    denoise = tiny_denoiser(model, text, frame_positions(B, F))
    shape = (B, F, 4, SIZE, SIZE)
    scalar = sample(denoise, shape, schedule, 4, eta=eta, generator=torch.Generator().manual_seed(1), progress=False)
    vector = sample_per_frame(denoise, shape, schedule, 4, eta=eta, generator=torch.Generator().manual_seed(1),
                              progress=False)
    assert torch.equal(vector, scalar)


def test_schedules_and_held_frames_returned_unchanged():
    held = {task: held_frames(task, 1, 5, overlap=2) for task in ("t2v", "i2v", "interpolation", "extension")}
    assert {task: frame_timesteps(7, h)[0].tolist() for task, h in held.items()} == {
        "t2v": [7, 7, 7, 7, 7], "i2v": [0, 7, 7, 7, 7], "interpolation": [0, 7, 7, 7, 0],
        "extension": [0, 0, 7, 7, 7]}
    assert frame_timesteps(-3, held["i2v"]).tolist() == [[-1] * 5]

    model = perturb(KeyframeUNet(BACKBONES["kandinsky3"]()))
    text = torch.randn(B, L, TEXT_DIM, generator=torch.Generator().manual_seed(0))
    calls = []

    def denoise(x, t):
        calls.append(t.clone())
        return tiny_denoiser(model, text, frame_positions(B, F))(x, t)

    schedule = NoiseSchedule()
    given = torch.randn(B, F, 4, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    mask = held_frames("interpolation", B, F)
    out = sample_per_frame(denoise, given.shape, schedule, 3, mask, given, generator=torch.Generator().manual_seed(0),
                           progress=False)
    assert torch.equal(out[:, [0, -1]], given[:, [0, -1]])
    scheduler = schedule.scheduler("ddim")
    scheduler.set_timesteps(3)
    assert [t[:, 1:-1].unique().tolist() for t in calls] == [[int(t)] for t in scheduler.timesteps]
    assert all(torch.equal(t[:, [0, -1]], torch.zeros(B, 2, dtype=torch.long)) for t in calls)
    free = sample_per_frame(denoise, given.shape, schedule, 3, mask, given, "free",
                            generator=torch.Generator().manual_seed(0), progress=False)
    drift = (free[:, [0, -1]] - given[:, [0, -1]]).abs().max()
    assert 0 < drift < 0.1  # free mode (official code): held frames drift slightly, updated at timestep 0
    with pytest.raises(ValueError, match="cond_frame_mode='hold'"):
        sample_per_frame(denoise, given.shape, schedule, 3, mask, given, "hold", progress=False)


def fvdm_sampler(frames: int) -> tuple[FVDMSampler, torch.Tensor, torch.Tensor]:
    model = perturb(KeyframeUNet(BACKBONES["unet2d"](), num_frames=frames))
    text = torch.randn(2, L, TEXT_DIM, generator=torch.Generator().manual_seed(0))  # 1 prompt + 1 empty
    return FVDMSampler(model, NoiseSchedule(), num_inference_steps=2, guidance_scale=3.0), text, None


def test_long_video_extension_stitches_clips_through_their_overlap():
    sampler, text, mask = fvdm_sampler(frames=4)
    first = sampler.task("t2v", text, mask, frame_positions(2, 4), (1, 4, 4, SIZE, SIZE),
                         generator=torch.Generator().manual_seed(0))
    video = sampler.extend(first, text, mask, num_clips=3, overlap=2, generator=torch.Generator().manual_seed(1))
    assert video.shape == (1, 4 + 3 * (4 - 2), 4, SIZE, SIZE)
    assert torch.equal(video[:, :4], first)

    # Each new clip starts from the last M frames so far, held exactly: rerunning clip 2 alone reproduces it.
    clips = []
    g = torch.Generator().manual_seed(1)
    tail = first
    for _ in range(3):
        given = torch.zeros(1, 4, 4, SIZE, SIZE)
        given[:, :2] = tail[:, -2:]
        clip = sampler.task("extension", text, mask, frame_positions(2, 4), tuple(given.shape), given, 2, g)
        assert torch.equal(clip[:, :2], tail[:, -2:])
        clips.append(clip)
        tail = clip
    assert torch.equal(torch.cat([first] + [c[:, 2:] for c in clips], dim=1), video)


def test_infill_keeps_the_keyframes_and_fills_between_them():
    sampler, text, mask = fvdm_sampler(frames=16)
    keyframes = torch.randn(1, 6, 4, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    # Windows of 3, 3 and 2 keyframes (the last one the plain interpolation schedule [0, t, t, t, 0]).
    video = sampler.infill(keyframes, frame_positions(1, 6), text, mask, between=3, keyframes_per_window=3,
                           generator=torch.Generator().manual_seed(0))
    assert video.shape == (1, 21, 4, SIZE, SIZE)
    assert torch.equal(video[:, ::4], keyframes)
    assert torch.isfinite(video).all() and not torch.equal(video[:, 1], torch.zeros_like(video[:, 1]))
