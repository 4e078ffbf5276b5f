"""Generative Inbetweening: attention-map reversal, the backward-motion model and its fine-tuning stage,
dual-directional sampling and sample.py inbetweening (GI spec §6.7).

Exact checks run in float64 on a tiny KeyframeUNet behind the FVDM image-to-video denoiser; the stage and sample.py
run on the shipped shapes-world models at test size.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from safetensors.torch import save_file

from fusionframes.data.shapes import ShapesWorld
from fusionframes.diffusion import NoiseSchedule
from fusionframes.models.backward_motion import (
    BackwardKeyframeUNet,
    attention_blocks,
    record_attention_maps,
    reverse_frames,
    rot180,
    tokens_per_frame,
)
from fusionframes.models.keyframe_unet import KeyframeUNet
from fusionframes.models.t2i import TextToImageModel
from fusionframes.models.temporal import frame_positions
from fusionframes.sampling.time_reversal.base import build_sampler
from fusionframes.sampling.time_reversal.denoiser import I2VDenoiser
from fusionframes.sampling.time_reversal.gi import GISampler
from fusionframes.sampling.time_reversal.inbetween import method_config
from fusionframes.sampling_cli import run
from fusionframes.training import train
from fusionframes.utils.validation import check_checkpoint
from fusionframes.utils.video_io import decode_video
from tests.conftest import ASSETS, compose_sample
from tests.test_keyframe_unet import TEXT_DIM, L, tiny_unet2d

B, F, C, SIZE = 2, 5, 4, 6
SCHEDULE = NoiseSchedule().double()
PROMPT = "a red triangle moving right quickly on a black background"


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def perturb_(parameters, seed: int, scale: float = 0.3) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in parameters:
            p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))


def tiny_pair(variant: str = "conv1d_attn1d_blocks") -> tuple[KeyframeUNet, BackwardKeyframeUNet]:
    """A tiny forward model whose temporal attention and frame embedding are trained (random), its conv blocks the
    identity (so the model commutes with reversing frames, positions and timesteps together), and its backward copy."""
    forward = KeyframeUNet(tiny_unet2d(), variant).double().eval()
    perturb_([p for block in attention_blocks(forward).values() for p in block.parameters()], seed=1)
    perturb_(forward.temporal["frame_embedding"].parameters(), seed=2)
    return forward, BackwardKeyframeUNet(forward).eval()


def model_inputs(frames: int = F) -> dict[str, torch.Tensor]:
    return {"sample": randn(B, frames, C, SIZE, SIZE, seed=3), "timestep": torch.tensor([[0, 200, 300, 999, 40],
                                                                                        [0, 5, 600, 7, 7]]),
            "encoder_hidden_states": randn(B, L, TEXT_DIM, seed=4), "encoder_attention_mask": None,
            "positions": frame_positions(B, frames)}


def reversed_inputs(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {**inputs, **{k: inputs[k].flip(1) for k in ("sample", "timestep", "positions")}}


def test_rotating_twice_is_the_identity_and_commutes_with_softmax():
    logits = randn(3, 2, 8, 8)
    maps = logits.softmax(-1)
    assert torch.equal(rot180(rot180(maps)), maps)
    assert torch.equal(rot180(maps)[..., 0, 0], maps[..., -1, -1])
    torch.testing.assert_close(rot180(maps).sum(-1), torch.ones(3, 2, 8, dtype=torch.float64))
    torch.testing.assert_close(rot180(logits).softmax(-1), rot180(maps), rtol=0, atol=1e-15)
    # Attn3D: 2 frames of 4 window tokens each; reversal swaps whole frames and keeps the window positions.
    assert torch.equal(reverse_frames(reverse_frames(maps, 4), 4), maps)
    assert torch.equal(reverse_frames(maps, 4)[..., 1, 6], maps[..., 5, 2])
    assert torch.equal(reverse_frames(maps, 1), rot180(maps))


@pytest.mark.parametrize("variant", ["conv1d_attn1d_blocks", "conv1d_attn3d_blocks", "conv1d_attn1d_layers"])
def test_maps_of_the_reversed_video_are_the_reversed_maps_and_injection_reverses_the_model(variant):
    forward, backward = tiny_pair(variant)
    inputs = model_inputs()
    with torch.no_grad():
        plain = forward(**inputs)
        maps, maps_of_reversed = {}, {}
        with record_attention_maps(forward, maps):
            recorded = forward(**inputs)
        with record_attention_maps(forward, maps_of_reversed):
            forward(**reversed_inputs(inputs))
        assert torch.equal(recorded, plain)  # recording changes nothing
        assert type(attention_blocks(forward)[next(iter(maps))].attention).__name__ == "Attention"  # restored
        blocks = attention_blocks(forward)
        assert set(maps) == set(blocks) and len(maps) == 4
        for key, block in blocks.items():
            k = tokens_per_frame(block)
            assert maps[key].shape[-1] == F * k and maps[key].shape[1] == block.attention.num_heads
            torch.testing.assert_close(maps_of_reversed[key], reverse_frames(maps[key], k), rtol=0, atol=1e-12)
        # The backward copy (same weights) replaying the reversed maps computes the forward model on reversed time.
        backward.maps.update(maps)
        torch.testing.assert_close(backward(**reversed_inputs(inputs)), plain.flip(1), rtol=0, atol=1e-12)
        backward.maps.update({key: m[:1] for key, m in maps.items()})
        with pytest.raises(ValueError, match="run both models on the same batch"):
            backward(**reversed_inputs(inputs))
        backward.maps.clear()
        with pytest.raises(RuntimeError, match="no forward attention map was recorded"):
            backward(**inputs)


def i2v(model: KeyframeUNet, frames: int = F) -> I2VDenoiser:
    return I2VDenoiser(model, SCHEDULE, randn(2 * B, L, TEXT_DIM, seed=5), None, frame_positions(B, frames))


def keyframes() -> tuple[torch.Tensor, torch.Tensor]:
    return randn(B, C, SIZE, SIZE, seed=6), randn(B, C, SIZE, SIZE, seed=7)


@pytest.mark.parametrize("recurrence", [0, 2])
def test_backward_weight_zero_is_forward_sampling_bit_for_bit(recurrence):
    forward, backward = tiny_pair()
    perturb_(backward.trainable_state_dict().values(), seed=8)
    start, end = keyframes()
    sampler = GISampler(i2v(forward), SCHEDULE, i2v(backward), num_steps=4, guidance_scale=2.0, backward_weight=0.0,
                        recurrence=recurrence)
    video = sampler.sample(start, end, F, generator=torch.Generator().manual_seed(9))

    # Forward-only EDM Euler sampling with the keyframes held, written out.
    denoiser, generator = i2v(forward), torch.Generator().manual_seed(9)
    sigmas = sampler.sigmas
    x = torch.randn(B, F, C, SIZE, SIZE, generator=generator, dtype=torch.float64) * (sigmas[0] ** 2 + 1) ** 0.5
    for i, t in enumerate(sampler.timesteps):
        for repeat in range(1 + (recurrence if i < 2 else 0)):
            if repeat:
                noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
                x = x + (sigmas[i] ** 2 - sigmas[i + 1] ** 2) ** 0.5 * noise
            uncond, cond = denoiser.pair(x, t, start)
            x0 = uncond + 2.0 * (cond - uncond)
            x0[:, -1] = end
            x = x0 + (sigmas[i + 1] / sigmas[i]) * (x - x0)
    assert torch.equal(video, x)
    assert torch.equal(video[:, 0], start) and torch.equal(video[:, -1], end)
    assert not backward.maps  # freed after sampling

    fused = GISampler(i2v(forward), SCHEDULE, i2v(backward), num_steps=4, guidance_scale=2.0,
                      recurrence=recurrence).sample(start, end, F, generator=torch.Generator().manual_seed(9))
    assert not torch.allclose(fused[:, 1:-1], video[:, 1:-1])  # the backward path takes part at w = 0.5


def test_recurrence_repeats_the_first_steps_and_every_pass_runs_both_paths(monkeypatch):
    forward, backward = tiny_pair()
    calls = []
    original = I2VDenoiser.pair

    def pair(self, x, t, first):
        calls.append((t, self.model is backward))
        return original(self, x, t, first)

    monkeypatch.setattr(I2VDenoiser, "pair", pair)
    sampler = GISampler(i2v(forward), SCHEDULE, i2v(backward), num_steps=5, recurrence=3, recurrence_ratio=0.5)
    sampler.sample(*keyframes(), F, generator=torch.Generator().manual_seed(0))
    passes = [1 + 3 * (i < 2) for i in range(5)]  # int(5 * 0.5) = 2 repeated steps
    assert calls == [(t, path) for t, n in zip(sampler.timesteps, passes) for _ in range(n) for path in (False, True)]


class StaticWorld(I2VDenoiser):
    """Runs its model (so maps are recorded and replayed as in real sampling) but returns the exact x0 of a static
    scene: every frame is the given one plus independent N(0, tau^2) jitter."""

    tau = 0.05

    def pair(self, x, t, first):
        super().pair(x, t, first)
        abar = SCHEDULE.alphas_cumprod[t]
        shrink = self.tau**2 / (self.tau**2 + (1 - abar) / abar)
        x0 = first[:, None] + shrink * (x - first[:, None])
        x0[:, 0] = first
        return x0, x0.clone()


def test_identical_keyframes_of_a_static_scene_keep_the_in_between_frames_close_to_them():
    forward, backward = tiny_pair()
    keyframe = randn(B, C, SIZE, SIZE, seed=10)
    world = [StaticWorld(model, SCHEDULE, randn(2 * B, L, TEXT_DIM, seed=5), None, frame_positions(B, F))
             for model in (forward, backward)]
    sampler = GISampler(world[0], SCHEDULE, world[1], num_steps=10, recurrence=2)
    video = sampler.sample(keyframe, keyframe, F, generator=torch.Generator().manual_seed(11))
    assert torch.equal(video[:, 0], keyframe) and torch.equal(video[:, -1], keyframe)
    rms = (video[:, 1:-1] - keyframe[:, None]).pow(2).mean(dim=(2, 3, 4)).sqrt()
    assert (rms < 2 * StaticWorld.tau).all(), rms  # from noise of sigma ~ 160 down to the world's jitter


def test_gi_config_builds_the_sampler_and_bad_settings_are_clear_errors():
    forward, backward = tiny_pair()
    sampler = build_sampler(method_config("gi"), denoiser=i2v(forward), schedule=SCHEDULE, backward=i2v(backward))
    assert isinstance(sampler, GISampler) and sampler.num_steps == 25 and sampler.backward_weight == 0.5
    assert (sampler.recurrence, sampler.repeated_steps, sampler.guidance_scale) == (5, 12, 5.0)
    linear = build_sampler(method_config("gi", {"backward_weight": "linear"}), denoiser=i2v(forward), schedule=SCHEDULE,
                           backward=i2v(backward))
    assert linear.weights(torch.zeros(1, 5)).flatten().tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(ValueError, match=r"inbetween.method='gie' is not allowed; choose one of \[.*'gi'"):
        method_config("gie")
    with pytest.raises(ValueError, match=r"inbetween.settings.base.recurrence is not a setting of mpd_trf; its "
                                         r"settings are \['base', 'gamma'"):
        method_config("mpd_trf", {"base": {"recurrence": 1}})
    with pytest.raises(TypeError, match="must wrap a BackwardKeyframeUNet"):
        GISampler(i2v(forward), SCHEDULE, i2v(forward))
    with pytest.raises(ValueError, match="backward_weight must be a number in"):
        GISampler(i2v(forward), SCHEDULE, i2v(backward), backward_weight=1.5)


# --- the backward-motion fine-tuning stage (experiment=gi_backward) on the shipped shapes-world models -------------

TINY_GI = ["data.sampler.num_frames=4", "data.datamodule.batch_size=1", "data.datamodule.val_batch_size=1",
           f"model.init_from={ASSETS / 'keyframes'}", "model.sampling.num_steps=2", "model.sampling.recurrence=1",
           "model.num_val_videos=1"]


def test_fine_tuning_changes_only_the_temporal_value_and_output_projection_weights(tiny_config):
    module = instantiate(tiny_config("gi_backward", *TINY_GI, "model.optimizer.lr=1e-2").model, _convert_="all")
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert len(trainable) == 2 * len(attention_blocks(module.model)) == 14
    assert all(n.startswith("model.temporal.blocks.") and n.endswith((".attention.value.weight",
                                                                      ".attention.proj.weight")) for n in trainable)
    before = {n: p.detach().clone() for n, p in module.named_parameters(remove_duplicate=False)}
    buffers = {n: b.clone() for n, b in module.named_buffers()}
    optimizer = module.configure_optimizers()
    batch = next(iter(instantiate(tiny_config("gi_backward", *TINY_GI, run="b").data.datamodule,
                                  _convert_="all").train_dataloader()))
    module.train()
    for step in range(2):
        optimizer.zero_grad()
        loss = module.training_step(batch, step)
        loss.backward()
        grads = [p.grad for n, p in module.named_parameters() if n in trainable]
        assert all(g is not None and g.abs().sum() > 0 for g in grads)
        optimizer.step()
    after = dict(module.named_parameters(remove_duplicate=False))
    assert all(torch.equal(after[n], v) for n, v in before.items() if n not in trainable)
    assert all(not torch.equal(after[n], before[n]) for n in trainable)
    assert all(torch.equal(b, buffers[n]) for n, b in module.named_buffers())


def test_training_step_builds_the_reversed_clip_with_the_same_noise_conditioned_on_the_last_frame(tiny_config):
    module = instantiate(tiny_config("gi_backward", *TINY_GI).model, _convert_="all")
    batch = next(iter(instantiate(tiny_config("gi_backward", *TINY_GI, run="b").data.datamodule,
                                  _convert_="all").train_dataloader()))
    seen = {}
    for name in ("forward_model", "model"):
        module.get_submodule(name).register_forward_pre_hook(lambda m, args, name=name: seen.setdefault(name, args))
    module.model.register_forward_hook(lambda m, args, out: seen.setdefault("output", out))
    loss = module._loss(batch, torch.Generator().manual_seed(0), t=torch.tensor([500]))
    z0 = module.latents(batch)
    (fwd, tau, *_), (bwd, tau_bwd, *_) = seen["forward_model"], seen["model"]
    assert tau.tolist() == tau_bwd.tolist() == [[0, 500, 500, 500]]
    assert torch.equal(fwd[:, 0], z0[:, 0]) and torch.equal(bwd[:, 0], z0[:, -1])  # each path's given frame
    assert torch.equal(bwd[:, 1:-1], fwd.flip(1)[:, 1:-1])  # the same noisy frames, time-reversed
    # The noise of every frame, read off the inputs (frame 0's from the backward input), is the eps target reversed.
    abar = module.schedule.alphas_cumprod[500]
    noisy = torch.cat([bwd[:, -1:], fwd[:, 1:]], dim=1)
    noise = (noisy - abar.sqrt() * z0) / (1 - abar).sqrt()
    assert module.schedule.prediction_type == "epsilon"
    torch.testing.assert_close(loss, (seen["output"][:, 1:] - noise.flip(1)[:, 1:]).pow(2).mean(), rtol=1e-4,
                               atol=0)


def test_gi_backward_experiment_trains_saves_only_its_weights_and_exports_a_loadable_model(tiny_config, tmp_path):
    metrics = train(tiny_config("gi_backward", *TINY_GI, "trainer.max_steps=1"))
    assert math.isfinite(metrics["train/loss"]) and "val/inbetween_psnr" in metrics
    checkpoint_path = tmp_path / "a" / "checkpoints" / "last.ckpt"
    check_checkpoint("ckpt", checkpoint_path)
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    assert len(checkpoint["state_dict"]) == 14 and set(checkpoint["frozen_base"]) == {"backbone", "forward_model",
                                                                                      "codec"}
    assert all(k.endswith(("value.weight", "proj.weight")) for k in checkpoint["state_dict"])

    export = tmp_path / "a" / "export" / "gi_backward"
    assert sorted(p.name for p in export.iterdir()) == ["backward.safetensors", "config.json"]
    forward = KeyframeUNet.from_pretrained(ASSETS / "keyframes", TextToImageModel.from_pretrained(ASSETS / "t2i").unet)
    loaded = BackwardKeyframeUNet.from_pretrained(export, forward, ASSETS / "keyframes")
    trained = {k.removeprefix("model.temporal."): v for k, v in checkpoint["state_dict"].items()}
    for key, value in loaded.trainable_state_dict().items():
        assert torch.equal(value, trained[key].half().float())  # exported in fp16
    assert BackwardKeyframeUNet.read_config(export)["forward_dir"] == str(ASSETS / "keyframes")
    other = tmp_path / "other_forward"
    copy_forward = copy.deepcopy(forward)
    perturb_(copy_forward.temporal.parameters(), seed=0, scale=1e-3)
    copy_forward.save_pretrained(other)
    with pytest.raises(ValueError, match="whose weights differ from those at"):
        BackwardKeyframeUNet.from_pretrained(export, forward, other)


# --- sample.py inbetweening --------------------------------------------------------------------------------------

def test_sample_py_inbetweening_writes_its_video_and_bad_inputs_are_clear_errors(tmp_path):
    world = ShapesWorld(resolution=64, num_frames=400)
    frames = world.render(world.scene(3), [0, 36])  # the prompt's red triangle moving right quickly
    Image.fromarray(frames[0]).save(tmp_path / "start.png")
    Image.fromarray(frames[1]).save(tmp_path / "end.png")
    Image.fromarray(frames[1][:32, :32]).save(tmp_path / "small.png")
    save_file({"latent": torch.zeros(4, 16, 16)}, tmp_path / "end.safetensors")
    unet = TextToImageModel.from_pretrained(ASSETS / "t2i").unet
    BackwardKeyframeUNet(KeyframeUNet.from_pretrained(ASSETS / "keyframes", unet)).save_pretrained(
        tmp_path / "backward", forward_dir=ASSETS / "keyframes")

    def config(*overrides: str, settings: str = "{num_steps: 1, recurrence: 1}"):
        return compose_sample(
            f"prompt={PROMPT}", f"output_dir={tmp_path / 'out'}", "progress=false", "device=cpu", "fps=keyframes",
            "inbetween.method=gi", f"inbetween.start={tmp_path / 'start.png'}",
            f"inbetween.end={tmp_path / 'end.safetensors'}", f"inbetween.backward_dir={tmp_path / 'backward'}",
            "inbetween.num_frames=4", f"inbetween.settings={settings}", *overrides)

    paths = run(config())
    assert sorted(p.suffix for p in paths) == [".gif", ".mp4", ".png"] and all(p.exists() for p in paths)
    assert paths[0].name.startswith("gi_a_red_triangle")
    mp4 = next(p for p in paths if p.suffix == ".mp4")
    assert decode_video(mp4.read_bytes()).shape == (4, 64, 64, 3)
    trf = run(config("inbetween.method=trf", "inbetween.backward_dir=null", "fps=medium", settings="{num_steps: 1}"))
    assert decode_video(next(p for p in trf if p.suffix == ".mp4").read_bytes()).shape == (13, 64, 64, 3)
    low = run(config("overwrite=true", "precision=bf16-true"))  # networks in bf16, no autocast
    assert decode_video(next(p for p in low if p.suffix == ".mp4").read_bytes()).shape == (4, 64, 64, 3)

    for overrides, error, message in [
        (["inbetween.method=gie"], ValueError, r"inbetween.method='gie' is not allowed; choose one of \[.*'gi'"),
        (["inbetween.method=null"], ValueError, "inbetween.start/end are set but inbetween.method is not"),
        (["inbetween.backward_dir=null"], ValueError, "inbetween.method=gi needs inbetween.backward_dir"),
        ([f"inbetween.backward_dir={tmp_path / 'nope'}"], FileNotFoundError, "inbetween.backward_dir=.*does not exist"),
        ([f"inbetween.start={tmp_path / 'small.png'}"], ValueError,
         "inbetween.start=.* is 32x32 pixels; this pipeline's frames are 64x64"),
        ([f"inbetween.end={tmp_path / 'end.png'}", "inbetween.num_frames=2"], ValueError,
         "inbetween.num_frames must be an integer >= 3"),
        (["inbetween.settings.recurrence=-1"], ValueError, "recurrence must be an integer >= 0, got -1"),
    ]:
        with pytest.raises(error, match=message):
            run(config("overwrite=true", *overrides))
