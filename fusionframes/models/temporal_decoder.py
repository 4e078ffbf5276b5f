"""Temporal MoVQ decoder (paper §4.3, Table 3): the image MoVQ decoder with temporal layers wrapped in place.

The diffusers ``VQModel(norm_type="spatial")`` decoder runs on frames folded into the batch,
``(B·F, C, H, W)``. Temporal layers are inserted by replacing decoder sub-modules with wrappers that call the
original module and then a temporal module on ``(B, C, F, H, W)``; the frame count reaches the wrappers through
a shared :class:`FrameCount` that :meth:`TemporalMoVQDecoder.decode` sets. Every new layer starts as the
identity, so at init the video decoder reproduces the image decoder frame by frame.

Temporal convolutions are residual, ``h + conv3d(h)`` with the Conv3d zero-initialised. This is the same
function class as KandinskyVideo's ``(1 - a)·h + a·conv3d(h)`` with ``a`` starting at 0 (substitute
``conv' = a·(conv - identity)``), with one parameter set fewer and a gradient on the conv from the first step.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import VQModel
from einops import rearrange
from safetensors.torch import load_file, save_file
from torch import nn

from fusionframes.utils.memory_format import channels_last
from fusionframes.utils.pretrained import require_dir, weights_digest

VARIANTS = ("conv3x1x1", "conv3x3x3", "conv3x1x1_attn", "conv3x3x3_attn", "resblock_attn", "conv2d_to_3d")
FINETUNE = ("temporal", "decoder")
WEIGHTS_NAME = "temporal_decoder.safetensors"
CONFIG_NAME = "config.json"


class FrameCount:
    """Frames per clip of the batch being decoded; one instance is shared by all wrappers of a decoder."""

    def __init__(self) -> None:
        self.value: int | None = None


class OnFrames(nn.Module):
    """Runs a video module ``(B, C, F, H, W) -> (B, C', F, H', W')`` on frame-folded ``(B·F, C, H, W)`` input."""

    def __init__(self, module: nn.Module, frames: FrameCount) -> None:
        super().__init__()
        self.module = module
        self.frames = frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frames.value is None:
            raise RuntimeError("Temporal layers need the frame count: decode through TemporalMoVQDecoder.decode.")
        video = rearrange(x, "(b f) c h w -> b c f h w", f=self.frames.value)
        return rearrange(self.module(video), "b c f h w -> (b f) c h w")


class SpatialThenTemporal(nn.Module):
    """``temporal(spatial(x, *args, **kwargs))``: a decoder sub-module followed by a temporal layer, same call."""

    def __init__(self, spatial: nn.Module, temporal: OnFrames) -> None:
        super().__init__()
        self.spatial = spatial
        self.temporal = temporal

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.temporal(self.spatial(x, *args, **kwargs))


class TemporalConv(nn.Module):
    """Residual zero-initialised Conv3d over (frames, height, width): ``x + conv(x)`` on (B, C, F, H, W)."""

    def __init__(self, channels: int, kernel: tuple[int, int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, kernel, padding=tuple(k // 2 for k in kernel))
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


def frame_positions(num_frames: int, channels: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Sinusoidal embedding of frame indices 0..F-1 -> (F, channels)."""
    half = channels // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=device, dtype=torch.float32) / max(half, 1))
    angles = torch.arange(num_frames, device=device, dtype=torch.float32)[:, None] * freqs[None]
    emb = torch.cat([angles.sin(), angles.cos(), angles.new_zeros(num_frames, channels - 2 * half)], dim=1)
    return emb.to(dtype)


class TemporalAttention(nn.Module):
    """Self-attention over frames at every pixel, residual, zero-initialised output: (B, C, F, H, W).

    Tokens are LayerNorm-ed channels plus a sinusoidal frame-position embedding (no learned length limit).
    """

    def __init__(self, channels: int, head_dim: int = 64) -> None:
        super().__init__()
        self.heads = channels // head_dim if channels % head_dim == 0 else 1
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, f, h, w = x.shape
        tokens = self.norm(rearrange(x, "b c f h w -> (b h w) f c")) + frame_positions(f, c, x.device, x.dtype)
        q, k, v = rearrange(self.qkv(tokens), "n f (three heads d) -> three n heads f d", three=3, heads=self.heads)
        attended = rearrange(F.scaled_dot_product_attention(q, k, v), "n heads f d -> n f (heads d)")
        return x + rearrange(self.out(attended), "(b h w) f c -> b c f h w", b=b, h=h, w=w)


class TemporalResBlock(nn.Module):
    """Temporal ResNet block, ``x + conv2(act(norm(conv1(act(norm(x))))))`` with (3,1,1) Conv3d: (B, C, F, H, W).

    GroupNorm normalises each frame on its own, so a frame's statistics do not depend on the clip or chunk it
    is decoded in. The second conv is zero-initialised.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        groups = math.gcd(32, channels)
        self.norm1 = nn.GroupNorm(groups, channels, eps=1e-6)
        self.conv1 = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))
        self.norm2 = nn.GroupNorm(groups, channels, eps=1e-6)
        self.conv2 = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    @staticmethod
    def _per_frame(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
        f = x.shape[2]
        return rearrange(norm(rearrange(x, "b c f h w -> (b f) c h w")), "(b f) c h w -> b c f h w", f=f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self._per_frame(self.norm1, x)))
        return x + self.conv2(F.silu(self._per_frame(self.norm2, h)))


def inflate_conv(conv: nn.Conv2d) -> nn.Conv3d:
    """Conv2d (k, k) -> Conv3d (3, k, k) whose centre temporal slice is the 2D kernel, the others zero."""
    w = conv.weight.detach()
    conv3d = nn.Conv3d(conv.in_channels, conv.out_channels, (3, *conv.kernel_size), stride=(1, *conv.stride),
                       padding=(1, *conv.padding), bias=conv.bias is not None, device=w.device, dtype=w.dtype)
    conv3d.weight = nn.Parameter(torch.stack([torch.zeros_like(w), w, torch.zeros_like(w)], dim=2))
    if conv.bias is not None:
        conv3d.bias = nn.Parameter(conv.bias.detach().clone())
    return conv3d


def _resnet_lists(decoder: nn.Module) -> list[nn.ModuleList]:
    return [decoder.mid_block.resnets, *(block.resnets for block in decoder.up_blocks)]


def _add_temporal_convs(decoder: nn.Module, frames: FrameCount, kernel: tuple[int, int, int]) -> None:
    """A temporal conv after conv1 and after conv2 of every decoder resnet."""
    for resnet in (r for layers in _resnet_lists(decoder) for r in layers):
        for name in ("conv1", "conv2"):
            conv = getattr(resnet, name)
            setattr(resnet, name, SpatialThenTemporal(conv, OnFrames(TemporalConv(conv.out_channels, kernel), frames)))


def _add_temporal_resblocks(decoder: nn.Module, frames: FrameCount) -> None:
    """A temporal ResNet block after every decoder resnet (mid and up blocks)."""
    for layers in _resnet_lists(decoder):
        for i, resnet in enumerate(layers):
            layers[i] = SpatialThenTemporal(resnet, OnFrames(TemporalResBlock(resnet.out_channels), frames))


def _add_temporal_attention(decoder: nn.Module, frames: FrameCount, channels: int, head_dim: int) -> None:
    """Temporal attention at the lowest resolution (``channels`` wide), where the MoVQ has spatial attention.

    After the mid block's spatial attention, and after every layer of the lowest-resolution up block: its
    spatial attentions if it has them (Kandinsky 3's MoVQ), else its resnets.
    """
    mid, low = decoder.mid_block, decoder.up_blocks[0]
    slots = [(mid.attentions, 0) if mid.attentions[0] is not None else (mid.resnets, 0)]
    low_layers = low.attentions if getattr(low, "attentions", None) else low.resnets
    slots += [(low_layers, i) for i in range(len(low_layers))]
    for layers, i in slots:
        layers[i] = SpatialThenTemporal(layers[i], OnFrames(TemporalAttention(channels, head_dim), frames))


def _inflate_convs(decoder: nn.Module, frames: FrameCount) -> None:
    """Replace every 3x3 Conv2d of the decoder but the upsamplers' with its (3, 3, 3) inflation.

    Leaving the upsampler convs 2D reproduces the paper's parameter count (419M from a 161M decoder).
    """
    targets = [name for name, m in decoder.named_modules()
               if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and ".upsamplers." not in name]
    for name in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = decoder.get_submodule(parent_name) if parent_name else decoder
        setattr(parent, attr, OnFrames(inflate_conv(getattr(parent, attr)), frames))


def _build(variant: str, decoder: nn.Module, frames: FrameCount, channels: int, head_dim: int) -> None:
    """Wrap ``decoder`` in place with the temporal layers of ``variant``; ``channels``: its lowest-resolution width."""
    kernel = {"conv3x1x1": (3, 1, 1), "conv3x3x3": (3, 3, 3)}.get(variant.removesuffix("_attn"))
    if kernel is not None:
        _add_temporal_convs(decoder, frames, kernel)
    if variant == "resblock_attn":
        _add_temporal_resblocks(decoder, frames)
    if variant.endswith("_attn"):  # after the resblocks: a resnet is then followed by its resblock, then attention
        _add_temporal_attention(decoder, frames, channels, head_dim)
    if variant == "conv2d_to_3d":
        _inflate_convs(decoder, frames)


class TemporalMoVQDecoder(nn.Module):
    """Video decoder built from a pretrained MoVQ: ``post_quant_conv`` + decoder (copies) with temporal layers.

    Latents are the MoVQ's unquantised encoder output (what ``VQModel.decode(h, force_not_quantize=True)``
    takes; diffusion latents divided by ``scaling_factor``). The encoder is not part of this module.

    Args:
        movq: a diffusers ``VQModel`` with ``norm_type="spatial"``; it is copied, never modified.
        variant: one of :data:`VARIANTS` (Table 3 rows).
        finetune: ``"temporal"`` trains only the new layers, ``"decoder"`` the whole decoder and
            ``post_quant_conv``. ``conv2d_to_3d`` replaces the spatial convs, so it needs ``"decoder"``.
        attention_head_dim: channels per head of the temporal attention (``*_attn`` variants).
        base_path: where ``movq`` was loaded from, recorded by :meth:`save_pretrained`.
    """

    def __init__(self, movq: VQModel, variant: str = "conv3x3x3_attn", finetune: str = "decoder",
                 attention_head_dim: int = 64, base_path: str | Path | None = None) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"Temporal decoder variant {variant!r} is unknown; choose one of {list(VARIANTS)}.")
        if finetune not in FINETUNE:
            raise ValueError(f"finetune={finetune!r} is not allowed; choose one of {list(FINETUNE)}.")
        if variant == "conv2d_to_3d" and finetune == "temporal":
            raise ValueError("finetune='temporal' is not allowed with variant 'conv2d_to_3d' (its new weights "
                             "replace the spatial convs); use finetune='decoder'.")
        if movq.config.norm_type != "spatial":
            raise ValueError(f"The base MoVQ must have norm_type='spatial', got {movq.config.norm_type!r}.")
        self.variant = variant
        self.finetune = finetune
        self.attention_head_dim = attention_head_dim
        self.base_path = None if base_path is None else str(base_path)
        self.movq_config = {k: v for k, v in movq.config.items() if not k.startswith("_")}
        self.post_quant_conv = copy.deepcopy(movq.post_quant_conv)
        self.decoder = copy.deepcopy(movq.decoder)
        base = {id(p) for p in self.parameters()}
        self.image_decoder_parameters = sum(p.numel() for p in self.parameters())
        self.frames = FrameCount()
        reference = next(self.decoder.parameters())
        _build(variant, self.decoder, self.frames, movq.config.block_out_channels[-1], attention_head_dim)
        self.to(reference.device, reference.dtype)
        self.new_parameter_names = [n for n, p in self.named_parameters() if id(p) not in base]
        self.requires_grad_(finetune == "decoder")
        for name in self.new_parameter_names:
            self.get_parameter(name).requires_grad_(True)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """Unquantised MoVQ latents (B, F, C, h, w) -> frames (B, F, 3, H, W) in about [-1, 1]."""
        b, f = latents.shape[:2]
        z = rearrange(latents, "b f c h w -> (b f) c h w")
        self.frames.value = f  # kept after the call so gradient-checkpoint recomputation sees it too
        frames = self.decoder(self.post_quant_conv(z), z)
        return rearrange(frames, "(b f) c h w -> b f c h w", b=b)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, F, C, h, w) -> (B, F, 3, H, W): :meth:`forward` via ``__call__``, so ``nn.Module.compile`` applies."""
        return self(latents)

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """``nn.Module.compile``, on CUDA after converting the convolutions to channels-last: compiled, that decodes
        512x512 frames about 1.3x faster than contiguous weights (eager, it is slower; docs/benchmarks.md)."""
        if next(self.parameters()).is_cuda:
            channels_last(self)
        super().compile(*args, **kwargs)

    def decode_chunked(self, latents: torch.Tensor, chunk: int = 8, overlap: int = 2) -> torch.Tensor:
        """:meth:`decode` of long clips in windows of ``chunk`` frames overlapping by at least ``overlap``.

        Window outputs are blended with weights that ramp linearly across each overlap and are normalised to
        sum to 1 at every frame; frames covered by one window keep that window's output exactly. With
        ``chunk >= F`` this is :meth:`decode`. Latents (B, F, C, h, w) -> frames (B, F, 3, H, W).
        """
        if chunk < 1:
            raise ValueError(f"chunk must be a positive number of frames, got {chunk}.")
        if not 0 <= overlap < chunk:
            raise ValueError(f"overlap must be in [0, chunk={chunk}), got {overlap}.")
        f = latents.shape[1]
        if chunk >= f:
            return self.decode(latents)
        count = math.ceil((f - overlap) / (chunk - overlap))
        starts = [round(i * (f - chunk) / (count - 1)) for i in range(count)]
        out: torch.Tensor | None = None
        total = latents.new_zeros(f, dtype=torch.float32)
        for i, start in enumerate(starts):
            left = starts[i - 1] + chunk - start if i > 0 else 0
            right = start + chunk - starts[i + 1] if i + 1 < count else 0
            weight = torch.ones(chunk, device=latents.device)
            if left:
                weight[:left] = torch.arange(1, left + 1, device=latents.device) / (left + 1)
            if right:
                weight[-right:] = torch.minimum(weight[-right:],
                                                torch.arange(right, 0, -1, device=latents.device) / (right + 1))
            frames = self.decode(latents[:, start:start + chunk]).float()
            if out is None:
                out = frames.new_zeros(frames.shape[0], f, *frames.shape[2:])
            out[:, start:start + chunk] += weight[None, :, None, None, None] * frames
            total[start:start + chunk] += weight
        return (out / total[None, :, None, None, None]).to(latents.dtype)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def parameter_counts(self) -> dict[str, int]:
        """Parameters of the image decoder it started from, added by the variant, trainable, and in total."""
        total = sum(p.numel() for p in self.parameters())
        return {"image_decoder": self.image_decoder_parameters, "new": total - self.image_decoder_parameters,
                "trainable": sum(p.numel() for p in self.trainable_parameters()), "total": total}

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write ``temporal_decoder.safetensors`` (all decoder-side weights) and ``config.json``.

        The config holds the variant, finetune mode, MoVQ architecture, base MoVQ path and its sha256, and the
        parameter counts, so :meth:`from_pretrained` needs no other file.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: (v if dtype is None else v.to(dtype)).contiguous() for k, v in self.state_dict().items()}
        save_file(state, directory / WEIGHTS_NAME)
        config = {"variant": self.variant, "finetune": self.finetune, "attention_head_dim": self.attention_head_dim,
                  "base_movq_path": self.base_path,
                  "base_movq_sha256": weights_digest(self.base_path) if self.base_path else None,
                  "movq_config": self.movq_config, "parameter_counts": self.parameter_counts()}
        (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2))
        return directory

    @classmethod
    def from_pretrained(cls, path: str | Path, config_key: str = "model.video_decoder_path") -> TemporalMoVQDecoder:
        """Load a directory written by :meth:`save_pretrained` (fp32)."""
        root = require_dir(path, config_key)
        config = json.loads((root / CONFIG_NAME).read_text())
        model = cls(VQModel.from_config(config["movq_config"]), config["variant"], config["finetune"],
                    config["attention_head_dim"], config["base_movq_path"])
        model.load_state_dict({k: v.float() for k, v in load_file(root / WEIGHTS_NAME).items()})
        return model
