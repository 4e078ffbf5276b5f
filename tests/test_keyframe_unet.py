"""KeyframeUNet: inflation of tiny UNet2DConditionModel and Kandinsky3UNet backbones, every variant."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel, UNet2DModel
from diffusers.models.unets.unet_kandinsky3 import Kandinsky3UNet
from torch import nn

from fusionframes.models.backward_motion import BackwardKeyframeUNet
from fusionframes.models.keyframe_unet import (
    VARIANTS,
    KeyframeUNet,
    build_temporal,
    parameter_table,
)
from fusionframes.models.temporal import (
    TemporalAttention1dBlock,
    TemporalConv1dBlock,
    TemporalConv3dBlock,
    frame_positions,
)
from fusionframes.utils.random_kandinsky3 import TINY_KANDINSKY3_UNET

ASSETS = Path(__file__).resolve().parent.parent / "fusionframes" / "assets" / "shapes"
B, F, L, TEXT_DIM, SIZE = 2, 3, 5, 16, 6  # 6x6 latents: odd 3x3 maps after one downsampling


def tiny_unet2d() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(32, 32), norm_num_groups=8, cross_attention_dim=TEXT_DIM, layers_per_block=1,
        attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")).eval()


def tiny_kandinsky3() -> Kandinsky3UNet:
    torch.manual_seed(0)
    return Kandinsky3UNet(**TINY_KANDINSKY3_UNET).eval()


BACKBONES: dict[str, Callable[[], nn.Module]] = {"unet2d": tiny_unet2d, "kandinsky3": tiny_kandinsky3}


def batch(frames: int = F) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[1, 3:] = False
    return {"sample": torch.randn(B, frames, 4, SIZE, SIZE), "timestep": torch.tensor([10, 700]),
            "encoder_hidden_states": torch.randn(B, L, TEXT_DIM), "encoder_attention_mask": mask,
            "positions": frame_positions(B, frames)}


def frame_by_frame(unet: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The 2D UNet run on each frame with the same timestep and text -> (B, F, C, H, W)."""
    frames = [unet(inputs["sample"][:, i], inputs["timestep"], encoder_hidden_states=inputs["encoder_hidden_states"],
                   encoder_attention_mask=inputs["encoder_attention_mask"]).sample
              for i in range(inputs["sample"].shape[1])]
    return torch.stack(frames, dim=1)


def perturb(model: KeyframeUNet, scale: float = 0.05) -> KeyframeUNet:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.temporal_parameters():
            p.add_(torch.randn_like(p) * scale)
    return model


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("backbone", BACKBONES)
def test_identity_at_init_then_trains_only_temporal(backbone: str, variant: str) -> None:
    unet = BACKBONES[backbone]()
    model = KeyframeUNet(unet, variant)
    inputs = batch()
    with torch.no_grad():
        reference = frame_by_frame(unet, inputs)
        assert torch.allclose(model(**inputs), reference, atol=1e-5)

    frozen = {k: v.clone() for k, v in unet.state_dict().items()}
    temporal = {k: v.clone() for k, v in model.temporal_state_dict().items()}
    assert all(not p.requires_grad for p in unet.parameters())
    optimizer = torch.optim.AdamW(model.temporal_parameters(), lr=1e-2)
    model(**inputs).square().mean().backward()
    optimizer.step()
    assert all(torch.equal(v, frozen[k]) for k, v in unet.state_dict().items())
    assert any(not torch.equal(v, temporal[k]) for k, v in model.temporal_state_dict().items())
    with torch.no_grad():
        assert not torch.allclose(model(**inputs), reference, atol=1e-4)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_per_frame_timesteps_and_inert_outside_forward(backbone: str) -> None:
    unet = BACKBONES[backbone]()
    model = perturb(KeyframeUNet(unet, "conv1d_attn3d_blocks"))
    inputs = batch()
    per_frame = {**inputs, "timestep": inputs["timestep"][:, None].expand(B, F)}
    with torch.no_grad():
        assert torch.allclose(model(**per_frame), model(**inputs), atol=1e-6)
        # Outside KeyframeUNet.forward the hooks do nothing: the UNet is still the 2D model.
        reference = frame_by_frame(copy.deepcopy(unet), inputs)
        assert torch.allclose(frame_by_frame(unet, inputs), reference, atol=1e-6)


def conv_block_parameters(unet: nn.Module, variant: str, cls: type[nn.Module]) -> int:
    blocks = build_temporal(unet, variant)["blocks"].values()
    return sum(p.numel() for m in blocks if isinstance(m, cls) for p in m.parameters())


def test_parameter_counts_per_variant() -> None:
    shapes_unet = UNet2DConditionModel.from_config(json.loads((ASSETS / "t2i" / "unet" / "config.json").read_text()))
    for unet in (shapes_unet, tiny_kandinsky3()):
        print(f"\n{parameter_table(unet)}")
        counts = {v: sum(p.numel() for p in build_temporal(unet, v).parameters()) for v in VARIANTS}
        assert counts["conv1d_attn3d_blocks"] == counts["conv1d_attn1d_blocks"]

        ratio = conv_block_parameters(unet, "conv3d_attn1d_blocks", TemporalConv3dBlock) / conv_block_parameters(
            unet, "conv1d_attn1d_blocks", TemporalConv1dBlock)
        assert abs(ratio - 1) < 0.25
    model = KeyframeUNet(tiny_unet2d())
    assert model.parameter_counts() == {"frozen": sum(p.numel() for p in model.unet.parameters()),
                                        "temporal": sum(p.numel() for p in model.temporal_parameters())}


def test_clear_errors() -> None:
    with pytest.raises(TypeError, match="UNet2DModel; supported UNets: UNet2DConditionModel, Kandinsky3UNet"):
        KeyframeUNet(UNet2DModel(block_out_channels=(32, 32), norm_num_groups=8,
                                 down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2))
    with pytest.raises(ValueError, match="unknown keyframe variant 'conv2d'; allowed: conv1d_attn1d_blocks"):
        KeyframeUNet(tiny_unet2d(), "conv2d")
    model = KeyframeUNet(tiny_unet2d(), num_frames=F)
    with pytest.raises(ValueError, match="built for num_frames=3"):
        model(**batch(frames=4))
    with pytest.raises(ValueError, match=r"positions has shape \(2, 4\)"):
        model(**{**batch(), "positions": frame_positions(B, 4)})
    with pytest.raises(ValueError, match=r"timestep has shape \(3,\)"):
        model(**{**batch(), "timestep": torch.tensor([1, 2, 3])})


@pytest.mark.parametrize("backbone", BACKBONES)
def test_save_load_round_trip(backbone: str, tmp_path: Path) -> None:
    unet = BACKBONES[backbone]()
    base = copy.deepcopy(unet)
    model = perturb(KeyframeUNet(unet, "conv3d_attn1d_blocks", num_frames=F))
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["variant"] == "conv3d_attn1d_blocks"
    loaded = KeyframeUNet.from_pretrained(tmp_path, base)
    inputs = batch()
    with torch.no_grad():
        assert torch.equal(loaded(**inputs), model(**inputs))
    other = "kandinsky3" if backbone == "unet2d" else "unet2d"
    with pytest.raises(TypeError, match=f"holds temporal weights for a {type(unet).__name__}"):
        KeyframeUNet.from_pretrained(tmp_path, BACKBONES[other]())


@pytest.mark.parametrize("backbone", BACKBONES)
def test_gradient_checkpointing_same_gradients(backbone: str) -> None:
    model = perturb(KeyframeUNet(BACKBONES[backbone](), "conv1d_attn1d_blocks"))
    grads = []
    for checkpointing in (False, True):
        model.gradient_checkpointing = checkpointing
        model.zero_grad()
        model(**batch()).square().mean().backward()
        grads.append([p.grad.clone() for p in model.temporal_parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads, strict=True))


@pytest.mark.parametrize("variant", ["conv1d_attn1d_blocks", "conv1d_attn1d_layers"])
@pytest.mark.parametrize("backbone", BACKBONES)
def test_spatial_checkpointing_same_outputs_and_gradients(backbone: str, variant: str) -> None:
    """Checkpointing the frozen UNet's blocks (and with them the temporal modules) changes no gradient."""
    results = []
    for spatial, temporal in ((False, False), (True, False), (True, True)):
        model = perturb(KeyframeUNet(BACKBONES[backbone](), variant, gradient_checkpointing=temporal,
                                     spatial_checkpointing=spatial))
        conv = next(m for m in model.unet.up_blocks[-1].modules() if isinstance(m, nn.Conv2d))
        calls = []
        conv.register_forward_hook(lambda *_: calls.append(1))
        out = model(**batch())
        out.square().mean().backward()
        assert len(calls) == (2 if spatial else 1)  # recomputed in the backward pass
        results.append((out.detach(), [p.grad.clone() for p in model.temporal_parameters()]))
    for out, grads in results[1:]:
        assert torch.allclose(out, results[0][0], atol=1e-6)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads, results[0][1], strict=True))
    assert any(g.abs().sum() > 0 for g in results[0][1])


@pytest.mark.parametrize("backbone", BACKBONES)
def test_text_conditioning_starts_as_identity_and_makes_temporal_modules_see_the_prompt(backbone: str) -> None:
    unet = BACKBONES[backbone]()
    model = KeyframeUNet(unet, "conv1d_attn1d_blocks", text_conditioning=True)
    inputs = batch()
    with torch.no_grad():
        assert torch.allclose(model(**inputs), frame_by_frame(unet, inputs), atol=1e-5)
    model(**inputs).square().mean().backward()
    # Zero-initialised norm MLPs pass no gradient to the projection until they have moved.
    assert model.temporal["text_projection"].weight.grad.abs().sum() == 0
    perturb(model)
    other = {**inputs, "encoder_hidden_states": inputs["encoder_hidden_states"] + 1.0}
    with torch.no_grad():
        # Same text through the frozen spatial layers: only the temporal modules' conditioning differs.
        plain = KeyframeUNet(BACKBONES[backbone](), "conv1d_attn1d_blocks")
        plain.load_temporal_state_dict({k: v for k, v in model.temporal_state_dict().items()
                                        if not k.startswith("text_projection")})
        assert not torch.allclose(model(**inputs), plain(**inputs), atol=1e-5)
        assert not torch.allclose(model(**inputs), model(**other), atol=1e-5)


def test_init_from_weights_without_text_projection(tmp_path: Path) -> None:
    """Continuing with ``text_conditioning`` from weights trained without it computes the same at first."""
    model = perturb(KeyframeUNet(tiny_unet2d(), "conv1d_attn1d_blocks"))
    model.save_pretrained(tmp_path)
    conditioned = KeyframeUNet(tiny_unet2d(), "conv1d_attn1d_blocks", text_conditioning=True)
    conditioned.load_temporal_weights(tmp_path)
    inputs = batch()
    with torch.no_grad():
        assert torch.allclose(conditioned(**inputs), model(**inputs), atol=1e-6)
    with pytest.raises(ValueError, match="does not fit this model"):
        KeyframeUNet(tiny_unet2d(), "conv3d_attn1d_blocks").load_temporal_weights(tmp_path)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_a_bf16_model_takes_float32_inputs_as_under_deepspeed_bf16(backbone):
    """DeepSpeed's bf16 casts the whole module to bf16 and runs it without autocast; noisy latents and text
    states made in float32 inside the training step must still reach the UNet in its dtype."""
    model = perturb(KeyframeUNet(BACKBONES[backbone]()))
    inputs = batch()
    with torch.no_grad():
        reference = model(**inputs)
        out = model.to(torch.bfloat16)(**inputs)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference, atol=0.1, rtol=0.1)


def test_conv_compression_starts_as_identity_and_round_trips_and_older_configs_load_with_2(tmp_path: Path) -> None:
    unet = tiny_unet2d()
    model = KeyframeUNet(unet, "conv1d_attn1d_blocks", num_frames=F, conv_compression=4)
    widths = {b.stages[0].conv.out_channels for b in model.temporal["blocks"].values()
              if isinstance(b, TemporalConv1dBlock)}
    assert widths == {32 // 4}
    inputs = batch()
    with torch.no_grad():
        assert torch.allclose(model(**inputs), frame_by_frame(unet, inputs), atol=1e-5)
    perturb(model).save_pretrained(tmp_path / "c4")
    assert json.loads((tmp_path / "c4" / "config.json").read_text())["conv_compression"] == 4
    loaded = KeyframeUNet.from_pretrained(tmp_path / "c4", tiny_unet2d())
    assert loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(loaded(**inputs), model(**inputs))

    # Exports written before the option existed have no conv_compression: they were made with 2.
    old = perturb(KeyframeUNet(tiny_unet2d(), "conv1d_attn1d_blocks", num_frames=F))
    old.save_pretrained(tmp_path / "old")
    backward_dir = BackwardKeyframeUNet(old).save_pretrained(tmp_path / "old_backward")
    for path in (tmp_path / "old" / "config.json", backward_dir / "config.json"):
        config = json.loads(path.read_text())
        del config["conv_compression"]
        path.write_text(json.dumps(config))
    forward = KeyframeUNet.from_pretrained(tmp_path / "old", tiny_unet2d())
    assert forward.config["conv_compression"] == 2
    BackwardKeyframeUNet.from_pretrained(backward_dir, forward)
    with pytest.raises(ValueError, match="was trained on a forward model with config"):
        BackwardKeyframeUNet.from_pretrained(backward_dir, loaded)
    with pytest.raises(ValueError, match=r"conv_compression=0 is not allowed; use an integer >= 1\."):
        KeyframeUNet(tiny_unet2d(), "conv1d_attn1d_layers", conv_compression=0)


def test_compiled_temporal_modules_match_eager_and_train() -> None:
    """compile_temporal (dynamo + AOTAutograd; aot_eager keeps the test fast, inductor's kernels are checked in
    test_temporal.py) keeps the hooks, gradient checkpointing, state-dict names, outputs and gradients."""
    eager = perturb(KeyframeUNet(tiny_unet2d(), "conv1d_attn1d_blocks", conv_compression=4))
    compiled = KeyframeUNet(tiny_unet2d(), "conv1d_attn1d_blocks", conv_compression=4, gradient_checkpointing=True)
    compiled.load_temporal_state_dict(eager.temporal_state_dict())
    blocks = compiled.temporal["blocks"]
    with torch._dynamo.config.patch(cache_size_limit=8):  # compile_temporal raises it; restored after the test
        try:
            compiled.compile_temporal(backend="aot_eager")
            assert all(block._compiled_call_impl is not None for block in blocks.values())
            assert torch._dynamo.config.cache_size_limit == 2 * len(blocks)
            assert compiled.temporal_state_dict().keys() == eager.temporal_state_dict().keys()
            outputs = [model(**batch()) for model in (eager, compiled)]
            torch.testing.assert_close(outputs[1], outputs[0])
            for out in outputs:
                out.square().mean().backward()
            for a, b in zip(eager.temporal_parameters(), compiled.temporal_parameters(), strict=True):
                torch.testing.assert_close(b.grad, a.grad)
            before = {k: v.clone() for k, v in compiled.temporal_state_dict().items()}
            torch.optim.AdamW(compiled.temporal_parameters(), lr=1e-2).step()
            assert any(not torch.equal(v, before[k]) for k, v in compiled.temporal_state_dict().items())
            assert not torch.allclose(compiled(**batch()).detach(), outputs[0], atol=1e-4)  # same graphs: grad mode
            lazily = KeyframeUNet(tiny_unet2d(), compile=True)  # the model.temporal.compile option
            assert all(block._compiled_call_impl is not None for block in lazily.temporal["blocks"].values())
        finally:
            torch._dynamo.reset()


def test_the_whole_keyframe_model_compiles_to_one_graph() -> None:
    """No graph break (the frame-position range check reads the host only outside torch.compile)."""
    model = KeyframeUNet(tiny_unet2d(), "conv1d_attn1d_blocks")
    with torch.no_grad():
        explained = torch._dynamo.explain(model)(**batch())
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


@pytest.mark.parametrize("backbone", BACKBONES)
def test_text_cross_attention_starts_as_identity_trains_and_reads_the_prompt_per_position(backbone: str,
                                                                                          tmp_path: Path) -> None:
    unet = BACKBONES[backbone]()
    model = KeyframeUNet(unet, "conv1d_attn1d_blocks", text_cross_attention=True, gradient_checkpointing=True)
    attention_blocks = sum(isinstance(b, TemporalAttention1dBlock) for b in model.temporal["blocks"].values())
    assert len(model.temporal["text_attention"]) == attention_blocks > 0
    inputs = batch()
    with torch.no_grad():
        assert torch.allclose(model(**inputs), frame_by_frame(unet, inputs), atol=1e-5)
    model(**inputs).square().mean().backward()
    # The zero-initialised output projection gets a gradient at once (its input, the attention, is not zero).
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.temporal["text_attention"].parameters())
    perturb(model)
    plain = KeyframeUNet(BACKBONES[backbone](), "conv1d_attn1d_blocks")
    plain.load_temporal_state_dict({k: v for k, v in model.temporal_state_dict().items()
                                    if not k.startswith("text_attention")})
    masked = {**inputs, "encoder_hidden_states": inputs["encoder_hidden_states"].clone()}
    masked["encoder_hidden_states"][1, 3:] += 5.0  # padding tokens of the second prompt: masked out everywhere
    with torch.no_grad():
        out = model(**inputs)
        assert not torch.allclose(out, plain(**inputs), atol=1e-5)
        torch.testing.assert_close(model(**masked)[1], out[1])
        other = {**inputs, "encoder_hidden_states": inputs["encoder_hidden_states"].clone()}
        other["encoder_hidden_states"][0] += 1.0  # another prompt for the first video only
        changed = model(**other)
        assert not torch.allclose(changed[0], out[0], atol=1e-5)
        torch.testing.assert_close(changed[1], out[1])
    model.save_pretrained(tmp_path)
    loaded = KeyframeUNet.from_pretrained(tmp_path, BACKBONES[backbone]())
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs), out)
    # Weights saved without the option load into a model with it and compute the same.
    plain.save_pretrained(tmp_path / "plain")
    widened = KeyframeUNet(BACKBONES[backbone](), "conv1d_attn1d_blocks", text_cross_attention=True)
    widened.load_temporal_weights(tmp_path / "plain")
    with torch.no_grad():
        torch.testing.assert_close(widened(**inputs), plain(**inputs), rtol=1e-5, atol=1e-5)


def test_text_cross_attention_needs_a_blocks_variant() -> None:
    with pytest.raises(ValueError, match="text_cross_attention needs a blocks variant"):
        KeyframeUNet(tiny_unet2d(), "conv1d_attn1d_layers", text_cross_attention=True)
    with pytest.raises(ValueError, match="text_attention_positions=true needs text_cross_attention=true"):
        KeyframeUNet(tiny_unet2d(), "conv1d_attn1d_blocks", text_attention_positions=True)


def test_text_attention_positions_round_trip(tmp_path: Path) -> None:
    """The option is saved in config.json and reloads to the same model; positions change what it computes."""
    model = perturb(KeyframeUNet(tiny_unet2d(), "conv1d_attn1d_blocks", text_cross_attention=True,
                                 text_attention_positions=True))
    inputs = batch()
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["text_attention_positions"] is True
    loaded = KeyframeUNet.from_pretrained(tmp_path, tiny_unet2d())
    without = KeyframeUNet(tiny_unet2d(), "conv1d_attn1d_blocks", text_cross_attention=True)
    without.load_temporal_state_dict(model.temporal_state_dict())
    with torch.no_grad():
        out = model(**inputs)
        torch.testing.assert_close(loaded(**inputs), out)
        assert not torch.allclose(without(**inputs), out, atol=1e-5)
