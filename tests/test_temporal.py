"""Temporal modules: identity at init, frame mixing, Attn3D windows and padding, parameter counts."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from einops import rearrange
from torch import nn

from fusionframes.models.temporal import (
    FrameConditionalGroupNorm,
    FramePositionEmbedding,
    FrameWindowMatmul,
    TemporalAttention1dBlock,
    TemporalAttention3dBlock,
    TemporalAttentionLayer,
    TemporalConv1dBlock,
    TemporalConv3dBlock,
    TemporalConvLayer,
    TemporalTextAttention,
    VideoGroupNorm,
    conv1d_block_parameters,
    conv3d_block_parameters,
    frame_conv,
    frame_matmul_pays,
    frame_positions,
    matched_hidden_channels,
    spatial_positions,
    unfold,
)

B, F, C, D, GROUPS, HEAD_DIM = 2, 4, 16, 12, 4, 8

MODULES: dict[str, Callable[[], nn.Module]] = {
    "conv1d_block": lambda: TemporalConv1dBlock(C, D, GROUPS),
    "conv1d_block_compression4": lambda: TemporalConv1dBlock(C, D, GROUPS, compression=4),
    "conv3d_block": lambda: TemporalConv3dBlock(C, D, GROUPS),
    "attn1d_block": lambda: TemporalAttention1dBlock(C, D, GROUPS, HEAD_DIM),
    "attn3d_block": lambda: TemporalAttention3dBlock(C, D, GROUPS, HEAD_DIM),
    "conv_layer": lambda: TemporalConvLayer(C),
    "attn_layer": lambda: TemporalAttentionLayer(C, D, GROUPS, HEAD_DIM),
}


def perturb(module: nn.Module, scale: float = 0.2) -> nn.Module:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * scale)
    return module


def inputs(h: int = 4, w: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(B * F, C, h, w), torch.randn(B * F, D)


@pytest.mark.parametrize("name", MODULES)
@pytest.mark.parametrize("size", [(4, 4), (5, 3)])
def test_identity_at_init_then_not(name: str, size: tuple[int, int]) -> None:
    module = MODULES[name]()
    x, emb = inputs(*size)
    assert torch.equal(module(x, F, emb), x)
    assert not torch.allclose(perturb(module)(x, F, emb), x, atol=1e-3)


@pytest.mark.parametrize("name", MODULES)
def test_mixes_frames(name: str) -> None:
    """After a weight perturbation, changing frame j of the input changes output frame i != j."""
    module = perturb(MODULES[name]())
    x, emb = inputs()
    y = rearrange(module(x, F, emb), "(b f) c h w -> b f c h w", f=F)
    x2 = rearrange(x.clone(), "(b f) c h w -> b f c h w", f=F)
    x2[:, 1] += 1.0
    y2 = rearrange(module(rearrange(x2, "b f c h w -> (b f) c h w"), F, emb), "(b f) c h w -> b f c h w", f=F)
    assert not torch.allclose(y[:, 0], y2[:, 0], atol=1e-5)
    assert not torch.allclose(y[:, 2], y2[:, 2], atol=1e-5)


def test_attention_layer_on_tokens() -> None:
    """The mixed-baseline attention layer also takes the (B·F, L, C) tokens of a spatial attention layer."""
    layer = TemporalAttentionLayer(C, D, GROUPS, HEAD_DIM)
    x, emb = inputs()
    tokens = rearrange(x, "n c h w -> n (h w) c")
    assert torch.equal(layer(tokens, F, emb), tokens)
    perturb(layer)
    assert torch.allclose(layer(tokens, F, emb), rearrange(layer(x, F, emb), "n c h w -> n (h w) c"), atol=1e-5)


def spatial_influence(attend: Callable[[torch.Tensor], torch.Tensor], h: int, w: int,
                      source: tuple[int, int]) -> torch.Tensor:
    """(H, W) bool: which output positions change when input position ``source`` changes (in frame 1)."""
    torch.manual_seed(0)
    video = torch.randn(B, C, F, h, w)
    changed = video.clone()
    changed[:, :, 1, source[0], source[1]] += 1.0
    with torch.no_grad():
        diff = (attend(changed) - attend(video)).abs().amax(dim=(0, 1, 2))
    return diff > 1e-6


def test_attn3d_mixes_within_2x2_windows_only() -> None:
    block = perturb(TemporalAttention3dBlock(C, D, GROUPS, HEAD_DIM))
    influence = spatial_influence(block.attend, 4, 4, (1, 1))
    window = torch.zeros(4, 4, dtype=torch.bool)
    window[:2, :2] = True
    assert torch.equal(influence, window)
    # Attn1D: each position attends only to itself across frames.
    block1d = perturb(TemporalAttention1dBlock(C, D, GROUPS, HEAD_DIM))
    only_itself = torch.zeros(4, 4, dtype=torch.bool)
    only_itself[1, 1] = True
    assert torch.equal(spatial_influence(block1d.attend, 4, 4, (1, 1)), only_itself)


def test_attn3d_odd_size_masks_padding() -> None:
    """Odd H, W: windows are clipped to real positions; a 1x1 window at the corner equals Attn1D there."""
    block3d = perturb(TemporalAttention3dBlock(C, D, GROUPS, HEAD_DIM))
    block1d = TemporalAttention1dBlock(C, D, GROUPS, HEAD_DIM)
    block1d.load_state_dict(block3d.state_dict())
    torch.manual_seed(0)
    video = torch.randn(B, C, F, 5, 3)
    with torch.no_grad():
        out3d, out1d = block3d.attend(video), block1d.attend(video)
    assert out3d.shape == video.shape
    assert torch.allclose(out3d[..., 4, 2], out1d[..., 4, 2], atol=1e-5)  # window of one real position
    assert not torch.allclose(out3d[..., 0, 0], out1d[..., 0, 0], atol=1e-5)  # full 2x2 window
    influence = spatial_influence(block3d.attend, 5, 3, (4, 0))
    expected = torch.zeros(5, 3, dtype=torch.bool)
    expected[4, :2] = True
    assert torch.equal(influence, expected)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_attn3d_has_attn1d_parameters() -> None:
    block1d, block3d = TemporalAttention1dBlock(64, 32), TemporalAttention3dBlock(64, 32)
    assert count(block1d) == count(block3d)
    assert block1d.state_dict().keys() == block3d.state_dict().keys()


@pytest.mark.parametrize("compression", [2, 4])
@pytest.mark.parametrize(("channels", "emb_dim", "groups"),
                         [(8, 32, 4), (32, 128, 8), (64, 256, 32), (128, 256, 32), (320, 1280, 32)])
def test_conv3d_parameters_match_conv1d(channels: int, emb_dim: int, groups: int, compression: int) -> None:
    conv1d = TemporalConv1dBlock(channels, emb_dim, groups, compression=compression)
    conv3d = TemporalConv3dBlock(channels, emb_dim, groups, compression=compression)
    hidden = matched_hidden_channels(channels, emb_dim, compression)
    assert conv1d.stages[0].conv.out_channels == channels // compression
    assert count(conv1d) == conv1d_block_parameters(channels, emb_dim, compression)
    assert conv3d.down.out_channels == hidden
    assert count(conv3d) == conv3d_block_parameters(channels, emb_dim, hidden)
    assert abs(count(conv3d) / count(conv1d) - 1) < 0.25
    # Kandinsky-3 sizes, by formula only (too big to build in a test).
    for c in (384, 768, 1536, 3072):
        ratio = conv3d_block_parameters(c, 1536, matched_hidden_channels(c, 1536, compression)) / (
            conv1d_block_parameters(c, 1536, compression))
        assert abs(ratio - 1) < 0.25


def test_compression_formula_and_the_conv3d_width_follows_it() -> None:
    """The docstring's closed form, and a smaller Conv1D bottleneck makes the matched Conv3D block narrower."""
    for c, d, r in ((384, 1536, 2), (384, 1536, 4), (3072, 1536, 4), (96, 256, 3)):
        h = c // r
        assert conv1d_block_parameters(c, d, r) == 2 * c * h + 6 * h * h + 3 * h + c + 2 * (c + 3 * h) * (d + 1)
        assert matched_hidden_channels(c, d, 4) < matched_hidden_channels(c, d, 2)
    assert conv1d_block_parameters(384, 1536, 4) < conv1d_block_parameters(384, 1536)


@pytest.mark.parametrize("compression", [0, -2, 17, 2.0, True, "4"])
def test_bad_compression_is_a_clear_error(compression: object) -> None:
    with pytest.raises(ValueError, match=rf"conv_compression={compression!r} is not allowed; use an integer from 1 "
                                         rf"to 16 \(it divides the 16 channels of a block\)\."):
        TemporalConv1dBlock(C, D, GROUPS, compression=compression)
    with pytest.raises(ValueError, match="conv_compression"):
        TemporalConv3dBlock(C, D, GROUPS, compression=compression)


def test_conv3d_reduction_option() -> None:
    assert TemporalConv3dBlock(64, 32, 8, reduction=4).down.out_channels == 16
    with pytest.raises(ValueError, match="reduction=128"):
        TemporalConv3dBlock(64, 32, 8, reduction=128)


def test_conditional_norm_runs_in_the_activation_dtype_under_autocast() -> None:
    """Autocast would run GroupNorm and the scale/shift in float32; the temporal norm keeps bf16 activations bf16
    and matches the float32 norm to bf16 rounding."""
    torch.manual_seed(0)
    norm = FrameConditionalGroupNorm(GROUPS, C, D)
    nn.init.normal_(norm.context_mlp[-1].weight)  # a non-trivial per-frame scale and shift
    video, emb = (3 * torch.randn(B, C, F, 5, 5) + 1).bfloat16(), torch.randn(B * F, D)
    reference = norm(video.float(), emb)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = norm(video, emb)
    assert out.dtype == torch.bfloat16
    # bf16 keeps 8 significant bits: errors of a few 2^-8 of the largest output are rounding, not a wrong norm.
    assert (out.float() - reference).abs().max() < 0.02 * reference.abs().max()


@pytest.mark.parametrize("silu", [False, True], ids=["norm", "norm_silu"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_conditional_norm_is_a_video_group_norm_with_per_frame_scale_and_shift(compiled: bool, silu: bool) -> None:
    """Both paths (eager: PyTorch's GroupNorm; compiled: ``VideoGroupNorm``, sum-based statistics and a written-out
    backward) equal ``F.group_norm`` over the whole video (then SiLU with ``silu``), in value and in the gradients
    of the input, the scale/shift MLP and its embedding input, also for the frames-in-batch view a temporal block
    normalises first."""
    torch.manual_seed(0)
    norm = FrameConditionalGroupNorm(GROUPS, C, D).double()
    nn.init.normal_(norm.context_mlp[-1].weight)
    call = torch.compile(norm, backend="aot_eager", fullgraph=True) if compiled else norm
    folded = (3 * torch.randn(B * F, C, 5, 6, dtype=torch.float64) + 1).requires_grad_(True)
    emb = torch.randn(B * F, D, dtype=torch.float64, requires_grad=True)
    video = unfold(folded, F)  # (B, C, F, H, W) view of frames in the batch
    scale, shift = rearrange(norm.context_mlp(emb), "(b f) c -> b c f 1 1", f=F).chunk(2, dim=1)
    reference = nn.functional.group_norm(video, GROUPS, eps=norm.norm.eps) * (scale + 1) + shift
    reference = nn.functional.silu(reference) if silu else reference
    out = call(video, emb, silu=silu)
    torch.testing.assert_close(out, reference)
    gradient = torch.randn_like(out)
    inputs = [folded, emb, norm.context_mlp[-1].weight, norm.context_mlp[-1].bias]
    ours = torch.autograd.grad(out, inputs, gradient)
    expected = torch.autograd.grad(reference, inputs, gradient)
    for a, b in zip(ours, expected, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("silu", [False, True], ids=["norm", "norm_silu"])
def test_video_group_norm_backward_is_the_derivative(silu: bool) -> None:
    """``VideoGroupNorm``'s written-out backward passes ``gradcheck`` (float64) for the video, scale and shift."""
    torch.manual_seed(0)
    video = (3 * torch.randn(B, F, C, 3, 2, dtype=torch.float64) + 1).requires_grad_(True)
    scale, shift = (torch.randn(B, F, C, 1, 1, dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(lambda *a: VideoGroupNorm.apply(*a, GROUPS, 1e-5, silu), (video, scale, shift))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("kernel", [1, 3])
@pytest.mark.parametrize("size", [(6, 8), (2, 2)], ids=["6x8", "2x2"])
@pytest.mark.parametrize("videos", [1, B])
def test_frame_conv_is_the_conv3d(kernel: int, compiled: bool, size: tuple[int, int], videos: int) -> None:
    """Every path (a Conv2d over (F, H·W); compiled: ``frame_matmul`` at 6x8, where ``frame_matmul_pays``, else a
    1x1 Conv2d over the frames in the batch or the Conv2d) equals the Conv3d, in value and gradient, for one video
    and for several (whose frame windows straddle videos)."""
    torch.manual_seed(0)
    assert frame_matmul_pays(kernel * C, 2 * C, size[0] * size[1]) == (size == (6, 8))
    conv = nn.Conv3d(C, 2 * C, (kernel, 1, 1), padding=(kernel // 2, 0, 0)).double()
    folded = torch.randn(videos * F, C, *size, dtype=torch.float64, requires_grad=True)
    call = torch.compile(frame_conv, backend="aot_eager", fullgraph=True) if compiled else frame_conv
    out, expected = call(unfold(folded, F), conv), conv(unfold(folded, F))
    torch.testing.assert_close(out, expected)
    gradient = torch.randn_like(out)
    inputs = [folded, conv.weight, conv.bias]
    for a, b in zip(torch.autograd.grad(out, inputs, gradient), torch.autograd.grad(expected, inputs, gradient),
                    strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_frame_window_matmul_backward_is_the_derivative(kernel: int) -> None:
    """``FrameWindowMatmul``'s written-out backward passes ``gradcheck`` (float64), two videos of F frames."""
    torch.manual_seed(0)
    x = torch.randn(B * F, 3, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 3, kernel, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: FrameWindowMatmul.apply(*a, F), (x, weight))


def test_frame_position_embedding() -> None:
    positions = frame_positions(B, F)
    assert positions.tolist() == [[0, 12, 24, 36]] * B
    embedding = FramePositionEmbedding(D, dim=16, max_position=64)
    out = embedding(positions)
    assert out.shape == (B * F, D)
    assert not torch.allclose(out[0], out[1])
    assert torch.equal(out[:F], out[F:])
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        embedding(frame_positions(1, 8))



def test_spatial_positions_name_the_same_place_at_every_resolution() -> None:
    fine, coarse = spatial_positions(16, 16, 16), spatial_positions(16, 8, 8)
    assert fine.shape == (16, 16, 16) and coarse.shape == (16, 8, 8)
    torch.testing.assert_close(coarse, fine[:, ::2, ::2])
    assert len({tuple(v.round(decimals=4).tolist()) for v in rearrange(fine, "c h w -> (h w) c")}) == 256
    assert torch.equal(spatial_positions(8, 3, 5)[:4, :, 0], spatial_positions(8, 3, 5)[:4, :, 4])  # rows: 1st half
    with pytest.raises(ValueError, match="divisible by 4, got 6"):
        spatial_positions(6, 4, 4)


@pytest.mark.parametrize("positions", [False, True])
def test_text_attention_positions_let_the_text_act_by_place(positions: bool) -> None:
    """On a spatially constant input, the text attention's output varies over the frame only with positions."""
    text, mask = torch.randn(B, 5, 12), torch.ones(B, 5, dtype=torch.bool)
    module = TemporalTextAttention(C, 12, D, GROUPS, HEAD_DIM, positions=positions)
    x = torch.randn(B * F, C, 1, 1).expand(-1, -1, 4, 4).contiguous()
    emb = torch.randn(B * F, D)
    assert torch.equal(module(x, F, emb, text, mask), x)  # the identity at init, with or without positions
    out = perturb(module)(x, F, emb, text, mask)
    assert not torch.allclose(out, x, atol=1e-3)
    assert torch.allclose(out, out[..., :1, :1].expand_as(out), atol=1e-5) != positions


def test_inductor_compiled_conv1d_block_matches_eager() -> None:
    """KeyframeUNet.compile_temporal's fused kernels (inductor, here its CPU backend, with its forced channels-last
    convolutions) compute the same block."""
    block = perturb(TemporalConv1dBlock(C, D, GROUPS, compression=4))
    x, emb = inputs()
    x.requires_grad_(True)
    expected = block(x, F, emb)
    (grad_x,) = torch.autograd.grad(expected.square().sum(), x)
    block.compile(dynamic=False, options={"force_layout_optimization": True})
    try:
        out = block(x, F, emb)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(torch.autograd.grad(out.square().sum(), x)[0], grad_x, atol=1e-5, rtol=1e-5)
    finally:
        torch._dynamo.reset()
