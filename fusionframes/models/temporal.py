"""Temporal layers and blocks that turn a frozen 2D UNet into a video model (paper §4.1, Figure 3).

Every module here works on spatially folded activations ``x: (B·F, C, H, W)`` (frames folded into the
batch, as the 2D UNet sees them), takes ``num_frames=F`` and a per-frame conditioning embedding
``emb: (B·F, D_emb)`` (time embedding + frame-position embedding), returns ``(B·F, C, H, W)``, and is
exactly the identity at initialisation: the last projection is zero-initialised and the conditional norms
start with zero scale/shift MLPs. Internally they unfold to the video layout ``(B, C, F, H, W)``, so group
norms take their statistics over all frames of a video (as in KandinskyVideo and diffusers' temporal layers).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention as CrossAttention
from diffusers.models.embeddings import TimestepEmbedding, get_1d_sincos_pos_embed_from_grid, get_timestep_embedding
from diffusers.models.unets.unet_kandinsky3 import Kandinsky3ConditionalGroupNorm
from einops import rearrange, repeat
from timm.layers import Attention, Mlp
from torch import nn

from fusionframes.utils.validation import in_traced_graph

#: Frames of the keyframe clips are this many source frames apart (24 fps source, 2 fps keyframes).
KEYFRAME_STRIDE = 12


def frame_positions(batch: int, num_frames: int, stride: int = KEYFRAME_STRIDE,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """Positions ``0, stride, 2·stride, ...`` of ``num_frames`` keyframes on the source timeline -> (B, F) long."""
    return repeat(torch.arange(num_frames, device=device) * stride, "f -> b f", b=batch)


def refine_positions(positions: torch.Tensor, factor: int, trailing: int = 0) -> torch.Tensor:
    """Positions of a video with ``factor - 1`` frames inserted evenly between consecutive frames.

    positions (B, T) on the source timeline -> (B, factor·(T-1) + 1 + trailing); ``trailing`` extra frames
    continue the last spacing. Long when every new position is whole (e.g. 0, 6, 12, ... from 0, 12, ...),
    float otherwise (``FramePositionEmbedding`` takes both).
    """
    p = positions.double()
    step = p[:, 1:] - p[:, :-1]
    frac = torch.arange(factor, dtype=p.dtype, device=p.device) / factor
    inner = rearrange(p[:, :-1, None] + step[..., None] * frac, "b t k -> b (t k)")
    tail = p[:, -1:] + step[:, -1:] * torch.arange(trailing + 1, dtype=p.dtype, device=p.device) / factor
    out = torch.cat([inner, tail], dim=1)
    return out.long() if torch.equal(out, out.round()) else out.float()


def norm_groups(channels: int, groups: int) -> int:
    """Group count for a GroupNorm over ``channels``: ``groups`` where it divides them, else their gcd."""
    return math.gcd(channels, groups)


def fold(video: torch.Tensor) -> torch.Tensor:
    """(B, C, F, H, W) -> (B·F, C, H, W)."""
    return rearrange(video, "b c f h w -> (b f) c h w")


def unfold(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B·F, C, H, W) -> (B, C, F, H, W)."""
    return rearrange(x, "(b f) c h w -> b c f h w", f=num_frames)


def zero_(*modules: nn.Module) -> None:
    """Zero the weights and biases of ``modules`` in place (the identity-at-init output projections)."""
    for module in modules:
        for parameter in module.parameters():
            nn.init.zeros_(parameter)


class FrameConditionalGroupNorm(Kandinsky3ConditionalGroupNorm):
    """GroupNorm over a whole video with a per-frame scale and shift predicted from ``emb``.

    Reuses diffusers' Kandinsky-3 conditional norm (affine-free GroupNorm + zero-initialised SiLU→Linear
    MLP, so scale 1 and shift 0 at init) for its parameters and ``num_groups``/``eps``; only ``forward`` is
    written here, because the diffusers one conditions per batch item and we condition per frame. The output is in
    the dtype of ``video`` even under autocast, which would run the norm in float32: with bf16 activations that
    halves the memory traffic of this memory-bound op.

    Eagerly it runs PyTorch's fused GroupNorm kernel and one multiply-add, the fewest kernel launches (eager
    sampling at 512x512 is bound by launches, not by the GPU). Traced by ``torch.compile`` it runs
    ``VideoGroupNorm`` instead, whose statistics Inductor schedules over many more thread blocks and whose backward
    takes two passes over the video. (CUDA-graph captures of eager modules keep the GroupNorm kernel, so that their
    replays compute what the eager calls do.)
    """

    def forward(self, video: torch.Tensor, emb: torch.Tensor, silu: bool = False) -> torch.Tensor:
        """video (B, C, F, H, W), emb (B·F, D_emb) -> (B, C, F, H, W) in video's dtype; ``silu``: then SiLU."""
        context, frames = self.context_mlp(emb), video.shape[2]
        with torch.autocast(video.device.type, enabled=False):
            if torch.compiler.is_compiling():
                statistics = torch.promote_types(video.dtype, torch.float32)
                scale, shift = rearrange(context.to(statistics), "(b f) c -> b f c 1 1", f=frames).chunk(2, dim=2)
                out = VideoGroupNorm.apply(video.transpose(1, 2), scale, shift, self.norm.num_groups, self.norm.eps,
                                           silu)
                return out.transpose(1, 2)
            scale, shift = rearrange(context.to(video.dtype), "(b f) c -> b c f 1 1", f=frames).chunk(2, dim=1)
            out = torch.addcmul(shift, self.norm(video), scale + 1.0)
            return F.silu(out) if silu else out


def video_norm_statistics(video: torch.Tensor, groups: int, eps: float,
                          dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and 1/std of each channel group of each video, as sums in ``dtype`` (float32 for bf16 video).

    Written by hand for compiled graphs: ``nn.GroupNorm`` over a video reduces one row per group (32 per video),
    which PyTorch's kernel and Inductor's decomposition alike spread over too few thread blocks. Here the sums run
    over each frame's group, B·F·G rows, and are combined over the frames.
    video (B, F, C, H, W) -> mean, rstd (B, 1, C, 1, 1), repeated over the channels of a group.
    """
    c = video.shape[2]
    grouped = video.unflatten(2, (groups, c // groups))  # (B, F, G, C/G, H, W), a view
    count = grouped[0, :, 0].numel()
    mean = grouped.sum(dim=(3, 4, 5), dtype=dtype).sum(1) / count  # (B, G)
    square = grouped.to(dtype).square().sum(dim=(3, 4, 5)).sum(1) / count
    rstd = torch.rsqrt((square - mean.square()).clamp_min(0) + eps)
    return per_channel(mean, c), per_channel(rstd, c)


def per_channel(group_values: torch.Tensor, channels: int) -> torch.Tensor:
    """Values of channel groups (B, G) -> (B, 1, C, 1, 1), each repeated over the channels of its group."""
    return repeat(group_values, "b g -> b 1 (g c) 1 1", c=channels // group_values.shape[1])


class VideoGroupNorm(torch.autograd.Function):
    """``group_norm(video) * (scale + 1) + shift`` over whole videos, optionally followed by SiLU, for compiled graphs.

    The backward is written out (no library has it for per-frame scales) so that Inductor makes two passes over
    the video: one reduction of (grad, video) to per-frame, per-channel sums, from which the scale, shift and group
    terms follow, and one pointwise pass for the input gradient, recomputing the normalised value and SiLU's
    derivative. Autograd of the forward's sums instead stored a float32 recomputation of the video and took
    about five full-size passes (a profile of a compiled Conv1D block on an H100). Frames come before channels, the
    memory order of the 2D UNet's (B·F, C, H, W) activations: Inductor lays out its buffers in the order of their
    dimensions, and in the video's (B, C, F, H, W) order it wrote the input of a following ``frame_matmul`` twice.
    video (B, F, C, H, W); scale, shift (B, F, C, 1, 1), float32 or float64 -> (B, F, C, H, W) in video's dtype.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, video: torch.Tensor, scale: torch.Tensor,
                shift: torch.Tensor, groups: int, eps: float, silu: bool) -> torch.Tensor:
        mean, rstd = video_norm_statistics(video, groups, eps, scale.dtype)
        gain = rstd * (scale + 1.0)
        bias = shift - mean * gain
        ctx.save_for_backward(video, scale, mean, rstd, gain, bias)
        ctx.groups, ctx.silu = groups, silu
        out = torch.addcmul(bias.to(video.dtype), video, gain.to(video.dtype))
        return F.silu(out) if silu else out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        video, scale, mean, rstd, gain, bias = ctx.saved_tensors
        x, grad_out = video.to(gain.dtype), grad.to(gain.dtype)
        if ctx.silu:
            z = x * gain + bias
            sigmoid = torch.sigmoid(z)
            grad_out = grad_out * sigmoid * (1 + z * (1 - sigmoid))
        grad_shift = grad_out.sum(dim=(3, 4), keepdim=True)  # (B, F, C, 1, 1)
        grad_scale = rstd * ((grad_out * x).sum(dim=(3, 4), keepdim=True) - mean * grad_shift)  # sum of grad·x̂
        c = video.shape[2]
        count = video[0].numel() // ctx.groups  # elements of a group: F frames x C/G channels x H x W

        def group_mean(t: torch.Tensor) -> torch.Tensor:
            """(B, F, C, 1, 1) -> the mean over each group's frames and channels, (B, 1, C, 1, 1)."""
            return per_channel(t.unflatten(2, (ctx.groups, -1)).sum(dim=(1, 3)).flatten(1) / count, c)

        # x̂ = (x - mean)·rstd; grad_x = rstd·(grad_x̂ - mean(grad_x̂) - x̂·mean(grad_x̂·x̂)), grad_x̂ = grad·(scale + 1)
        factor = scale + 1.0
        mean_grad = group_mean(factor * grad_shift)
        coefficient = rstd * rstd * group_mean(factor * grad_scale)
        grad_video = grad_out * gain - x * coefficient + (mean * coefficient - rstd * mean_grad)
        return grad_video.to(video.dtype), grad_scale, grad_shift, None, None, None


def frame_conv(video: torch.Tensor, conv: nn.Conv3d) -> torch.Tensor:
    """``conv(video)`` for a Conv3d with a (k, 1, 1) kernel, run as a Conv2d over (F, H·W) with the same weights.

    The same result; Inductor's layout optimisation gives 2D convolutions channels-last inputs, so cuDNN skips the
    NCDHW <-> NDHWC conversions it runs around each 3D one (on an H100, 40% of a compiled Conv1D block's time at
    3072 channels and 8x8 latents). Traced by ``torch.compile``, where ``frame_matmul_pays`` (the high-resolution
    levels), it runs as ``frame_matmul`` instead, in the 2D UNet's (B·F, C, H, W) layout, the one its output
    gradient comes back in; elsewhere a 1-frame kernel runs as a 1x1 Conv2d over the frames in the batch. (A
    channels-last convolution in that layout makes cuDNN's backward copy its NCHW output gradient element by
    element, about 4 ms of a paper-size keyframe step on an H100, and Inductor transpose the block's input.)
    Eagerly the video layout stays, where it saves the copies that the folded view would cost.
    video (B, C_in, F, H, W) -> (B, C_out, F, H, W).
    """
    b, c, f, h, w = video.shape
    weight = conv.weight.squeeze(-1)  # (C_out, C_in, k, 1)
    kernel = conv.kernel_size[0]
    if torch.compiler.is_compiling():
        if frame_matmul_pays(kernel * c, conv.out_channels, h * w):
            return unfold(frame_matmul(fold(video), weight.squeeze(-1), conv.bias, f), f)
        if kernel == 1:
            return unfold(F.conv2d(fold(video), weight, conv.bias), f)
    out = F.conv2d(video.reshape(b, c, f, h * w), weight, conv.bias, padding=(conv.padding[0], 0))
    return out.unflatten(-1, (h, w))


def frame_matmul_pays(window_channels: int, out_channels: int, positions: int) -> bool:
    """Whether a (k, 1, 1) convolution over ``positions`` = H·W pixels per frame runs as ``frame_matmul``.

    ``window_channels`` = k·C_in. Its weight gradient is then one (C_out, k·C_in) product per frame, summed: worth
    it while those products are at most half the size of the activations they come from, i.e. at the
    high-resolution levels of a UNet.
    """
    return window_channels * out_channels <= positions * (window_channels + out_channels) // 2


def frame_matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, frames: int) -> torch.Tensor:
    """(k, 1, 1) convolution over the frames of NCHW feature maps as one batched matmul, with no transposes.

    x (B·F, C_in, H, W), weight (C_out, C_in, k) with k odd, bias (C_out,) or None -> (B·F, C_out, H, W), frames
    zero-padded at each video's ends. Under autocast both operands are cast first, in autocast's dtype, so the
    weight that every frame shares is not cast frame by frame.
    """
    dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
    out = FrameWindowMatmul.apply(x.to(dtype).flatten(2), weight.to(dtype), frames)
    if bias is not None:
        out = out + bias.to(dtype)[:, None]
    return out.unflatten(-1, x.shape[-2:])


def frame_windows(x: torch.Tensor, frames: int, kernel: int) -> torch.Tensor:
    """The k consecutive frames around every frame, stacked along channels, as a view of a zero-padded copy.

    x (B·F, C, L) -> (B·(F + k - 1) - (k - 1), k·C, L): window j holds frames j .. j + k - 1 of the videos laid end
    to end, each with k // 2 zero frames before and after, i.e. the NCHW layout read with overlapping strides (an
    im2col with no copy). Windows that straddle two videos (B > 1) are computed and dropped (``window_rows``).
    For k = 1, x itself.
    """
    pad = kernel // 2
    if pad == 0:
        return x
    padded = pad_frames(x, frames, pad, pad)
    n, c, length = padded.shape
    return padded.as_strided((n - 2 * pad, kernel * c, length), (c * length, length, 1))


def window_rows(windows: torch.Tensor, frames: int, kernel: int) -> torch.Tensor:
    """The rows of ``frame_windows`` order that belong to frames: (B·(F + k - 1) - (k - 1), C, L) -> (B·F, C, L)."""
    pad = kernel // 2
    if pad == 0:
        return windows
    _, c, length = windows.shape
    videos = (windows.shape[0] + 2 * pad) // (frames + 2 * pad)
    step = (frames + 2 * pad) * c * length
    return windows.as_strided((videos, frames, c, length), (step, c * length, length, 1)).flatten(0, 1)


def frame_rows(x: torch.Tensor, frames: int, kernel: int) -> torch.Tensor:
    """``window_rows``' inverse, zeros for the windows that straddle videos: (B·F, C, L) -> (B·(F+k-1)-(k-1), C, L)."""
    pad = kernel // 2
    if pad == 0 or x.shape[0] == frames:
        return x
    return pad_frames(x, frames, 0, 2 * pad)[:-2 * pad]


def pad_frames(x: torch.Tensor, frames: int, before: int, after: int) -> torch.Tensor:
    """Zero frames ``before`` and ``after`` each video: (B·F, C, L) -> (B·(F + before + after), C, L)."""
    return F.pad(x.unflatten(0, (-1, frames)), (0, 0, 0, 0, before, after)).flatten(0, 1)


class FrameWindowMatmul(torch.autograd.Function):
    """A (k, 1, 1) convolution over frames as ``bmm(weight, frame_windows(x))``, with a written-out backward.

    Written by hand: cuDNN runs these convolutions in a channels-last layout that costs transposes around them, and
    its weight gradient of the (3, 1) kernel at the 64x64 level ran at a third of its forward's FLOP rate (an H100
    profile); autograd of the overlapping windows would scatter element by element. The backward is the same
    product twice: the input gradient is the convolution of the output gradient with the transposed, frame-flipped
    weight, and the weight gradient sums one (C_out, k·C_in) product per window.
    x (B·F, C_in, L), weight (C_out, C_in, k), one dtype -> (B·F, C_out, L).
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, weight: torch.Tensor,
                frames: int) -> torch.Tensor:
        kernel = weight.shape[-1]
        windows = frame_windows(x, frames, kernel)
        ctx.save_for_backward(windows, weight)
        ctx.frames = frames
        return window_rows(window_product(weight, windows), frames, kernel)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        windows, weight = ctx.saved_tensors
        _, in_channels, kernel = weight.shape
        flipped = weight.flip(-1).transpose(0, 1)  # (C_in, C_out, k)
        grad_x = window_rows(window_product(flipped, frame_windows(grad, ctx.frames, kernel)), ctx.frames, kernel)
        grad_weight = torch.bmm(frame_rows(grad, ctx.frames, kernel), windows.transpose(1, 2)).sum(0)
        return grad_x, grad_weight.unflatten(1, (kernel, in_channels)).transpose(1, 2), None


def window_product(weight: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
    """weight (C_out, C_in, k) applied to every window (N, k·C_in, L) -> (N, C_out, L); the weight is one expanded
    view, not a copy per window."""
    matrix = weight.transpose(1, 2).flatten(1)  # (C_out, k·C_in), frame-major like the windows
    return torch.bmm(matrix.expand(windows.shape[0], -1, -1), windows)


class NormActConv3d(nn.Module):
    """FrameConditionalGroupNorm(emb) → SiLU → Conv3d with a ``kernel`` (padded to keep the shape)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int], emb_dim: int,
                 groups: int) -> None:
        super().__init__()
        self.norm = FrameConditionalGroupNorm(norm_groups(in_channels, groups), in_channels, emb_dim)
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, padding=tuple(k // 2 for k in kernel))

    def forward(self, video: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """video (B, C_in, F, H, W), emb (B·F, D_emb) -> (B, C_out, F, H, W)."""
        hidden = self.norm(video, emb, silu=True)
        return frame_conv(hidden, self.conv) if self.conv.kernel_size[1:] == (1, 1) else self.conv(hidden)


def check_compression(compression: object, channels: int | None = None) -> None:
    """Raise unless ``compression`` is an integer >= 1 (and, given ``channels``, at most ``channels``)."""
    ok = isinstance(compression, int) and not isinstance(compression, bool) and compression >= 1
    if not ok or (channels is not None and compression > channels):
        limit = f"from 1 to {channels} (it divides the {channels} channels of a block)" if channels else ">= 1"
        raise ValueError(f"conv_compression={compression!r} is not allowed; use an integer {limit}.")


def conv1d_widths(channels: int, compression: int = 2) -> list[int]:
    """Channel widths C → h → h → h → C of the four stages of a TemporalConv1dBlock, h = C // compression."""
    check_compression(compression, channels)
    hidden = channels // compression
    return [channels, hidden, hidden, hidden, channels]


class TemporalConv1dBlock(nn.Module):
    """Temporal Conv1D block (KandinskyVideo ``TemporalResNetBlock``): x + stages(x), identity at init.

    Four stages [FrameConditionalGroupNorm(emb) → SiLU → Conv3d(k,1,1)] with kernels [1, 3, 3, 1] and
    channels C → h → h → h → C, h = C // ``compression`` (KandinskyVideo: 2); the last conv is
    zero-initialised. Parameters: 2·C·h + 6·h² + 3·h + C (convs) + 2·(C + 3·h)·(D_emb + 1) (norm MLPs),
    i.e. 2.5·C² + 2.5·C + 5·C·(D_emb + 1) at compression 2.

    x (B·F, C, H, W), emb (B·F, D_emb) -> (B·F, C, H, W).
    """

    def __init__(self, channels: int, emb_dim: int, groups: int = 32, compression: int = 2) -> None:
        super().__init__()
        widths = conv1d_widths(channels, compression)
        self.stages = nn.ModuleList(
            NormActConv3d(c_in, c_out, (k, 1, 1), emb_dim, groups)
            for c_in, c_out, k in zip(widths[:-1], widths[1:], (1, 3, 3, 1), strict=True)
        )
        zero_(self.stages[-1].conv)

    def forward(self, x: torch.Tensor, num_frames: int, emb: torch.Tensor) -> torch.Tensor:
        out = unfold(x, num_frames)
        for stage in self.stages:
            out = stage(out, emb)
        return x + fold(out)


class TemporalConv3dBlock(nn.Module):
    """Temporal Conv3D block: x + up(stages(down(x))), identity at init.

    ``down``: Linear C → c (as a 1x1x1 Conv3d, the same weights without a channels-last permute); two
    stages [FrameConditionalGroupNorm(emb) → SiLU → Conv3d(3,3,3)] at width c; ``up``: Linear c → C,
    zero-initialised. Parameters: 2·C·c + C + c (projections) + 2·(27·c² + c) (convs) + 4·c·(D_emb + 1)
    (norm MLPs). ``reduction`` r sets c = C / r; the default (None) picks the c (a multiple of 8 for
    C >= 64) whose count is closest to that of a TemporalConv1dBlock with the same C, D_emb and
    ``compression`` (the paper's "comparable number of parameters"; no fixed r can do it, as the norm MLPs
    scale with D_emb/C), e.g. at compression 2: C=128, D_emb=256: c=48, 186,320 vs 205,760 (Conv1D);
    C=384, D_emb=1536: c=192, 3.32M vs 3.32M; C=3072, D_emb=1536: c=832, 47.6M vs 47.2M.

    x (B·F, C, H, W), emb (B·F, D_emb) -> (B·F, C, H, W).
    """

    num_stages = 2

    def __init__(self, channels: int, emb_dim: int, groups: int = 32, reduction: float | None = None,
                 compression: int = 2) -> None:
        super().__init__()
        hidden = matched_hidden_channels(channels, emb_dim, compression) if reduction is None else round(
            channels / reduction)
        if hidden < 1:
            raise ValueError(f"reduction={reduction} leaves no channels of {channels}; use a reduction <= {channels}.")
        self.down = nn.Conv3d(channels, hidden, 1)
        self.stages = nn.ModuleList(
            NormActConv3d(hidden, hidden, (3, 3, 3), emb_dim, groups) for _ in range(self.num_stages))
        self.up = nn.Conv3d(hidden, channels, 1)
        zero_(self.up)

    def forward(self, x: torch.Tensor, num_frames: int, emb: torch.Tensor) -> torch.Tensor:
        video = unfold(x, num_frames)
        out = frame_conv(video, self.down)
        for stage in self.stages:
            out = stage(out, emb)
        return x + fold(frame_conv(out, self.up))


def conv1d_block_parameters(channels: int, emb_dim: int, compression: int = 2) -> int:
    """Parameter count of ``TemporalConv1dBlock(channels, emb_dim, compression=compression)``."""
    widths = conv1d_widths(channels, compression)
    convs = sum(c_in * c_out * k + c_out for c_in, c_out, k in zip(widths[:-1], widths[1:], (1, 3, 3, 1), strict=True))
    return convs + sum(2 * c_in * (emb_dim + 1) for c_in in widths[:-1])


def conv3d_block_parameters(channels: int, emb_dim: int, hidden: int) -> int:
    """Parameter count of ``TemporalConv3dBlock`` with width ``hidden``."""
    stages = TemporalConv3dBlock.num_stages * (27 * hidden * hidden + hidden + 2 * hidden * (emb_dim + 1))
    return 2 * channels * hidden + channels + hidden + stages


def matched_hidden_channels(channels: int, emb_dim: int, compression: int = 2) -> int:
    """Width c (a multiple of 8 where C >= 64) whose TemporalConv3dBlock count is closest to that of
    ``TemporalConv1dBlock(channels, emb_dim, compression=compression)``."""
    target = conv1d_block_parameters(channels, emb_dim, compression)
    step = 8 if channels >= 64 else 1
    return min(range(step, channels + 1, step),
               key=lambda c: abs(conv3d_block_parameters(channels, emb_dim, c) - target))


class TemporalConvLayer(nn.Module):
    """Mixed-baseline temporal conv layer (inside spatial blocks): x + Conv3d(3,1,1)(x), zero-initialised.

    x (B·F, C, H, W) -> (B·F, C, H, W). ``emb`` is ignored; it is accepted so every temporal module has
    the call signature ``(x, num_frames, emb)``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))
        zero_(self.conv)

    def forward(self, x: torch.Tensor, num_frames: int, emb: torch.Tensor | None = None) -> torch.Tensor:
        return x + fold(frame_conv(unfold(x, num_frames), self.conv))


def frame_attention(channels: int, head_dim: int) -> Attention:
    """timm multi-head self-attention (SDPA) with max(1, C // head_dim) heads and a zero-initialised output."""
    attention = Attention(channels, num_heads=max(1, channels // head_dim), attn_head_dim=head_dim)
    zero_(attention.proj)
    return attention


class TemporalAttentionLayer(nn.Module):
    """FrameConditionalGroupNorm(emb) → self-attention over the F frames at each position → residual.

    The mixed baseline's temporal attention layer, and the first half of the Attn1D/Attn3D blocks.
    Identity at init (zero-initialised output projection). Accepts feature maps x (B·F, C, H, W) or
    tokens x (B·F, L, C) (the output of a spatial attention layer); emb (B·F, D_emb); returns x's shape.
    """

    def __init__(self, channels: int, emb_dim: int, groups: int = 32, head_dim: int = 64) -> None:
        super().__init__()
        self.attn_norm = FrameConditionalGroupNorm(norm_groups(channels, groups), channels, emb_dim)
        self.attention = frame_attention(channels, head_dim)

    def attend(self, video: torch.Tensor) -> torch.Tensor:
        """Self-attention over frames at each spatial position: (B, C, F, H, W) -> (B, C, F, H, W)."""
        b, _, _, h, _ = video.shape
        out = self.attention(rearrange(video, "b c f h w -> (b h w) f c"))
        return rearrange(out, "(b h w) f c -> b c f h w", b=b, h=h)

    def attention_residual(self, x: torch.Tensor, num_frames: int, emb: torch.Tensor) -> torch.Tensor:
        """x + attend(norm(x, emb)) on feature maps x (B·F, C, H, W) -> (B·F, C, H, W).

        The residual is added in x's frames-in-batch layout, so the output is a new tensor laid out like x (not a
        view of a video-layout one), which the following 2D layers and the gradient coming back from them share.
        """
        return x + fold(self.attend(self.attn_norm(unfold(x, num_frames), emb)))

    def forward(self, x: torch.Tensor, num_frames: int, emb: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            video = rearrange(x, "(b f) l c -> b c f l 1", f=num_frames)
            return x + rearrange(self.attend(self.attn_norm(video, emb)), "b c f l 1 -> (b f) l c")
        return self.attention_residual(x, num_frames, emb)


class TemporalAttention1dBlock(TemporalAttentionLayer):
    """Temporal Attn1D block: TemporalAttentionLayer, then FrameConditionalGroupNorm(emb) → FFN (×4) → residual.

    The FFN is timm's ``Mlp`` (per-position Linear → SiLU → Linear, i.e. a 1x1 conv) with a zero-initialised
    last layer, so the whole block is exactly the identity at init (KandinskyVideo zero-inits only the
    attention output). Parameters: 4·C·A (qkv, output; A = heads·head_dim) + C + 8·C² + 5·C
    (FFN) + 4·C·(D_emb + 1) (norm MLPs).

    x (B·F, C, H, W), emb (B·F, D_emb) -> (B·F, C, H, W).
    """

    def __init__(self, channels: int, emb_dim: int, groups: int = 32, head_dim: int = 64,
                 expansion: int = 4) -> None:
        super().__init__(channels, emb_dim, groups, head_dim)
        self.ffn_norm = FrameConditionalGroupNorm(norm_groups(channels, groups), channels, emb_dim)
        self.ffn = Mlp(channels, expansion * channels, act_layer=nn.SiLU)
        zero_(self.ffn.fc2)

    def forward(self, x: torch.Tensor, num_frames: int, emb: torch.Tensor) -> torch.Tensor:
        x = self.attention_residual(x, num_frames, emb)
        hidden = rearrange(self.ffn_norm(unfold(x, num_frames), emb), "b c f h w -> b f h w c")
        return x + rearrange(self.ffn(hidden), "b f h w c -> (b f) c h w")


class TemporalAttention3dBlock(TemporalAttention1dBlock):
    """Temporal Attn3D block: the Attn1D block (same parameters) attending within 2x2 positions × all F frames.

    MaxViT block partition ``(b f) c (h p1) (w p2) -> (b h w) (f p1 p2) c`` with p1 = p2 = 2. An odd H or
    W is zero-padded to even, the padded positions are masked out of the attention keys, and the output
    is cropped back. x (B·F, C, H, W), emb (B·F, D_emb) -> (B·F, C, H, W).
    """

    window = 2

    def attend(self, video: torch.Tensor) -> torch.Tensor:
        """Self-attention within each window of 2x2 positions × F frames: (B, C, F, H, W) -> same."""
        b, _, f, h, w = video.shape
        p = self.window
        pad_h, pad_w = -h % p, -w % p
        mask = None
        if pad_h or pad_w:
            video = F.pad(video, (0, pad_w, 0, pad_h))
            valid = torch.zeros(h + pad_h, w + pad_w, dtype=torch.bool, device=video.device)
            valid[:h, :w] = True
            # (windows, 1, 1, keys): broadcast over heads and queries by SDPA.
            mask = repeat(valid, "(h p1) (w p2) -> (b h w) 1 1 (f p1 p2)", p1=p, p2=p, b=b, f=f)
        seq = rearrange(video, "b c f (h p1) (w p2) -> (b h w) (f p1 p2) c", p1=p, p2=p)
        out = rearrange(self.attention(seq, attn_mask=mask), "(b h w) (f p1 p2) c -> b c f (h p1) (w p2)",
                        b=b, h=(h + pad_h) // p, f=f, p1=p, p2=p)
        return out[..., :h, :w]


def spatial_positions(channels: int, height: int, width: int, device: torch.device | str | None = None,
                      base_size: int = 16) -> torch.Tensor:
    """2D sinusoidal embedding of the positions of an H x W grid -> (C, H, W), C divisible by 4.

    Half the channels encode the row, half the column, with diffusers' 1D sin/cos features. Coordinates are
    scaled to a ``base_size`` grid (as PixArt's ``base_size``), so a position means the same place of the frame
    at every resolution level of the UNet.
    """
    if channels % 4:
        raise ValueError(f"spatial positions need channels divisible by 4, got {channels}.")
    rows = get_1d_sincos_pos_embed_from_grid(channels // 2, torch.arange(height, device=device) * base_size / height)
    cols = get_1d_sincos_pos_embed_from_grid(channels // 2, torch.arange(width, device=device) * base_size / width)
    return torch.cat([repeat(rows, "h c -> c h w", w=width), repeat(cols, "w c -> c h w", h=height)])


class TemporalTextAttention(nn.Module):
    """FrameConditionalGroupNorm(emb) → cross-attention of every position of every frame to the text tokens → residual.

    Not in the paper, whose temporal modules see the prompt only through the time embedding (a per-channel,
    spatially uniform scale and shift): this path lets the caption act differently at different positions of a
    frame (e.g. at the leading and trailing edge of a moving shape), which a motion word that no single frame shows
    needs (docs/shapes_pipeline.md, "Where the motion word is lost"). diffusers' ``Attention`` with a
    zero-initialised output, so the module is the identity at init. The frames of a video share its prompt, so
    they form one query sequence and the text keys and values are projected once per video. With
    ``positions``, a fixed 2D sin/cos embedding of each position (``spatial_positions``) is added to the normalised
    queries, as DiT adds it to its tokens, so the text can also say where in the frame content goes (the frozen
    UNet's features carry absolute position only through its convolutions' zero padding).

    x (B·F, C, H, W), emb (B·F, D_emb), text (B, L, D_text), mask (B, L) bool -> (B·F, C, H, W).
    """

    def __init__(self, channels: int, text_dim: int, emb_dim: int, groups: int = 32, head_dim: int = 64,
                 positions: bool = False) -> None:
        super().__init__()
        if positions and channels % 4:
            raise ValueError(f"text attention positions need channels divisible by 4, got {channels}.")
        self.positions = positions
        self.norm = FrameConditionalGroupNorm(norm_groups(channels, groups), channels, emb_dim)
        self.attention = CrossAttention(channels, cross_attention_dim=text_dim, heads=max(1, channels // head_dim),
                                        dim_head=head_dim)
        zero_(self.attention.to_out[0])

    def forward(self, x: torch.Tensor, num_frames: int, emb: torch.Tensor, text: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        c, h, w = x.shape[-3:]
        video = self.norm(unfold(x, num_frames), emb)
        if self.positions:
            video = video + spatial_positions(c, h, w, x.device)[:, None].to(video.dtype)
        tokens = rearrange(video, "b c f h w -> b (f h w) c")
        bias = (~mask).to(tokens.dtype) * -10000.0  # diffusers' UNet2DConditionModel encoder-mask convention
        out = self.attention(tokens, encoder_hidden_states=text.to(tokens.dtype), attention_mask=bias[:, None])
        return x + rearrange(out, "b (f h w) c -> (b f) c h w", f=num_frames, h=h, w=w)


class FramePositionEmbedding(nn.Module):
    """Embedding of integer frame positions on the source timeline (0, 12, 24, ... for 2 fps keyframes).

    Sinusoidal features (diffusers ``get_timestep_embedding``) → Linear → SiLU → Linear (diffusers
    ``TimestepEmbedding``). positions (B, F) long in [0, max_position) -> (B·F, emb_dim).
    """

    def __init__(self, emb_dim: int, dim: int = 256, max_position: int = 1024) -> None:
        super().__init__()
        self.dim = dim
        self.max_position = max_position
        self.mlp = TimestepEmbedding(dim, emb_dim)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        if not in_traced_graph(positions) and (positions.min() < 0 or positions.max() >= self.max_position):
            raise ValueError(f"frame positions must lie in [0, {self.max_position}), got "
                             f"[{int(positions.min())}, {int(positions.max())}]; raise max_position.")
        features = get_timestep_embedding(rearrange(positions, "b f -> (b f)"), self.dim, flip_sin_to_cos=True,
                                          downscale_freq_shift=0)
        return self.mlp(features.to(self.mlp.linear_1.weight.dtype))
