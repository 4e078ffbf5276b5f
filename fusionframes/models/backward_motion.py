"""Backward-motion keyframe model of Generative Inbetweening (GI spec §3.1-3.2): temporal attention maps of a
forward image-to-video ``KeyframeUNet`` recorded and replayed time-reversed in a copy that generates the motion
backwards.

The forward model's temporal attention modules are timm ``Attention`` (fused qkv, proj) inside the
``TemporalAttentionLayer`` family; ``record_attention_maps`` stands a recorder in for each of them for a ``with``
block, storing its post-softmax map P (N, heads, L, L) by module key while returning the attention's own output
unchanged. ``BackwardKeyframeUNet`` is a copy of the forward model (sharing its frozen 2D UNet) in which every
temporal attention is a ``ReversedAttention``: trainable value and output projections (copied from the forward
model's v rows of qkv and its proj) applied with the forward map of the same key, frame-reversed; Q and K are not
used. Written here because diffusers' attention processors do not reach the timm attention of the temporal blocks.

Frame reversal of a map: tokens are frame-major, token f·k + p for F frames of k tokens (Attn1D: k = 1; Attn3D,
``conv1d_attn3d_blocks``: the k = 4 positions of a 2x2 window), and reversing time permutes f -> F-1-f with p
kept, so P'[(f, p), (g, q)] = P[(F-1-f, p), (F-1-g, q)]; for k = 1 that is rot180(P) = flip(P, dims=(-2, -1)).
Temporal attention without position terms is equivariant to that permutation, so the map of the reversed video
is the reversed map (tested, for both kinds).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors.torch import load_file, save_file
from timm.layers import Attention
from torch import Tensor, nn

from fusionframes.models.keyframe_unet import CONFIG_DEFAULTS, KeyframeUNet
from fusionframes.models.temporal import TemporalAttention3dBlock, TemporalAttentionLayer
from fusionframes.utils.pretrained import require_dir, weights_digest

#: The trainable tensors of a ``ReversedAttention``: value and output projection weights (no biases, GI [code]).
TRAINABLE = ("value.weight", "proj.weight")
WEIGHTS_NAME = "backward.safetensors"


def rot180(maps: Tensor) -> Tensor:
    """Rotate attention maps (..., F, F) by 180 degrees: both frame axes reversed."""
    return torch.flip(maps, dims=(-2, -1))


def reverse_frames(maps: Tensor, tokens_per_frame: int = 1) -> Tensor:
    """Maps (..., L, L) over L = F·k frame-major tokens -> the maps of the time-reversed sequence (module docstring);
    ``rot180`` for k = 1. An involution that keeps rows stochastic."""
    if tokens_per_frame == 1:
        return rot180(maps)
    grid = rearrange(maps, "... (f p) (g q) -> ... f p g q", p=tokens_per_frame, q=tokens_per_frame)
    return rearrange(grid.flip(-4, -2), "... f p g q -> ... (f p) (g q)")


def tokens_per_frame(block: TemporalAttentionLayer) -> int:
    """Tokens per frame in the attention sequence of a temporal attention module (Attn3D: a 2x2 window)."""
    return block.window**2 if isinstance(block, TemporalAttention3dBlock) else 1


def attention_blocks(model: KeyframeUNet) -> dict[str, TemporalAttentionLayer]:
    """Module key -> temporal attention module of a ``KeyframeUNet`` (the keys match between deep copies)."""
    return {key: block for key, block in model.temporal["blocks"].items() if isinstance(block, TemporalAttentionLayer)}


def attention_probabilities(attention: Attention, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
    """Post-softmax maps (N, heads, L, L) of a timm ``Attention`` on tokens x (N, L, C), with its optional
    ``attn_mask`` (bool: True attends, broadcast to (N, heads, L, L)); computed explicitly, as SDPA returns none."""
    a = attention.attn_dim
    bias = None if attention.qkv.bias is None else attention.qkv.bias[: 2 * a]
    q, k = rearrange(F.linear(x, attention.qkv.weight[: 2 * a], bias), "n l (two h d) -> two n h l d", two=2,
                     h=attention.num_heads)
    logits = (attention.q_norm(q) * attention.scale) @ attention.k_norm(k).transpose(-2, -1)
    if attn_mask is not None:
        logits = logits.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else logits + attn_mask
    return logits.softmax(dim=-1)


class AttentionRecorder(nn.Module):
    """Stands in for a timm ``Attention`` while recording: returns its output unchanged (bit for bit) and stores its
    detached post-softmax map (N, heads, L, L) in ``maps[key]``, overwriting the previous call's."""

    def __init__(self, key: str, attention: Attention, maps: dict[str, Tensor]) -> None:
        super().__init__()
        self.key = key
        self.attention = attention
        self.maps = maps

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        with torch.no_grad():
            self.maps[self.key] = attention_probabilities(self.attention, x, attn_mask)
        return self.attention(x, attn_mask=attn_mask)


@contextmanager
def record_attention_maps(model: KeyframeUNet, maps: dict[str, Tensor]) -> Iterator[dict[str, Tensor]]:
    """For the ``with`` block, every temporal attention of ``model`` records its map into ``maps`` by module key
    (``model`` computes exactly what it did before); the model is restored afterwards."""
    blocks = attention_blocks(model)
    try:
        for key, block in blocks.items():
            block.attention = AttentionRecorder(key, block.attention, maps)
        yield maps
    finally:
        for block in blocks.values():
            if isinstance(block.attention, AttentionRecorder):
                block.attention = block.attention.attention


class ReversedAttention(nn.Module):
    """Backward temporal attention (GI §3.2): out = proj(reverse_frames(P_fwd) · value(x)) per head.

    ``value`` (C -> heads·head_dim) and ``proj`` are copies of the v rows of ``attention.qkv`` and of
    ``attention.proj``; P_fwd is ``maps[key]``, recorded from the forward model on the same batch (CFG branches
    included) and frame count. x (N, L, C) -> (N, L, C). An attention mask is accepted and not needed: the masked
    (padding) keys have zero weight in the recorded map and keep their place under frame reversal.
    """

    def __init__(self, key: str, attention: Attention, maps: dict[str, Tensor], tokens_per_frame: int = 1) -> None:
        super().__init__()
        if attention.gate is not None or not isinstance(attention.norm, nn.Identity):
            raise ValueError(f"temporal attention {key} is gated or normalised before its output projection; "
                             "ReversedAttention supports the plain timm Attention of fusionframes.models.temporal.")
        a = attention.attn_dim
        qkv = attention.qkv
        self.value = nn.Linear(qkv.in_features, a, bias=qkv.bias is not None, device=qkv.weight.device,
                               dtype=qkv.weight.dtype)
        with torch.no_grad():
            self.value.weight.copy_(qkv.weight[2 * a:])
            if qkv.bias is not None:
                self.value.bias.copy_(qkv.bias[2 * a:])
        self.proj = nn.Linear(a, attention.proj.out_features, bias=attention.proj.bias is not None,
                              device=qkv.weight.device, dtype=qkv.weight.dtype)
        self.proj.load_state_dict(attention.proj.state_dict())
        self.key = key
        self.num_heads = attention.num_heads
        self.tokens_per_frame = tokens_per_frame
        self.maps = maps

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        maps = self.maps.get(self.key)
        if maps is None:
            raise RuntimeError(f"no forward attention map was recorded for temporal module {self.key}; run the "
                               "forward model under record_attention_maps(forward, backward.maps) first.")
        n, length, _ = x.shape
        if maps.shape != (n, self.num_heads, length, length):
            raise ValueError(f"the forward attention map of {self.key} has shape {tuple(maps.shape)} but the backward "
                             f"pass needs ({n}, {self.num_heads}, {length}, {length}); run both models on the same "
                             "batch (with the same CFG branches) and frame count.")
        v = rearrange(self.value(x), "n l (h d) -> n h l d", h=self.num_heads)
        out = reverse_frames(maps, self.tokens_per_frame).to(v.dtype) @ v
        return self.proj(rearrange(out, "n h l d -> n l (h d)"))


class BackwardKeyframeUNet(KeyframeUNet):
    """The backward-motion copy of a forward ``KeyframeUNet`` (GI §3.2): same frozen 2D UNet (shared: each
    model's hooks act only inside its own ``forward``) and temporal weights, with every temporal attention a
    ``ReversedAttention`` reading ``maps``. Only the value and output projection weights of those train.

    Use: ``with record_attention_maps(forward, backward.maps): forward(z, ...)`` then ``backward(flip(z), ...)``.
    """

    def __init__(self, forward: KeyframeUNet) -> None:
        super().__init__(forward.unet, gradient_checkpointing=forward.gradient_checkpointing, **forward.config)
        reference = next(forward.temporal.parameters())
        self.temporal.to(device=reference.device, dtype=reference.dtype)
        self.load_temporal_state_dict(forward.temporal_state_dict())
        self.maps: dict[str, Tensor] = {}
        for key, block in attention_blocks(self).items():
            block.attention = ReversedAttention(key, block.attention, self.maps, tokens_per_frame(block))
        self.temporal.requires_grad_(False)
        for block in attention_blocks(self).values():
            for name in TRAINABLE:
                block.attention.get_parameter(name).requires_grad_(True)

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """The value and output projection weights of every temporal attention, by temporal state-dict key."""
        return {f"blocks.{key}.attention.{name}": block.attention.get_parameter(name)
                for key, block in attention_blocks(self).items() for name in TRAINABLE}

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None,
                        forward_dir: str | Path | None = None) -> Path:
        """Write ``backward.safetensors`` (the trainable weights, in ``dtype`` if given) and ``config.json`` (the
        forward model's config; with ``forward_dir``, its path and the sha256 of its temporal weights, which
        ``from_pretrained`` checks). Everything else is rebuilt from the forward model."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: (v.detach() if dtype is None else v.detach().to(dtype)).contiguous()
                 for k, v in self.trainable_state_dict().items()}
        save_file(state, directory / WEIGHTS_NAME)
        config = {**self.config, "backbone": type(self.unet).__name__}
        if forward_dir is not None:
            forward_dir = Path(forward_dir).resolve()
            config["forward_dir"] = str(forward_dir)
            config["forward_sha256"] = weights_digest(forward_dir / "temporal.safetensors")
        (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        return directory

    @staticmethod
    def read_config(directory: str | Path, config_key: str = "backward_dir") -> dict:
        """The ``config.json`` of a saved backward model (``forward_dir``: the forward model it was trained on)."""
        path = require_dir(directory, config_key) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"{config_key}={directory} has no config.json; it is not a saved backward model "
                                    "(an export of experiment=gi_backward).")
        return json.loads(path.read_text())

    @classmethod
    def from_pretrained(cls, directory: str | Path, forward: KeyframeUNet, forward_dir: str | Path | None = None,
                        config_key: str = "backward_dir") -> BackwardKeyframeUNet:
        """The backward model saved in ``directory``, built on ``forward`` (loaded from ``forward_dir``, if given,
        whose weights must be those it was trained against). Weights load in fp32."""
        root = require_dir(directory, config_key)
        config = {**CONFIG_DEFAULTS, **cls.read_config(root, config_key)}
        if "forward_sha256" in config and forward_dir is not None:
            digest = weights_digest(Path(forward_dir) / "temporal.safetensors")
            if digest != config["forward_sha256"]:
                raise ValueError(f"{config_key}={root} was trained on the forward keyframe model at "
                                 f"{config['forward_dir']}, whose weights differ from those at {forward_dir}; use that "
                                 "forward model.")
        own = {**forward.config, "backbone": type(forward.unet).__name__}
        if any(config.get(k) != v for k, v in own.items()):
            raise ValueError(f"{config_key}={root} was trained on a forward model with config "
                             f"{ {k: config.get(k) for k in own} }, not {own}.")
        weights = root / WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(f"{config_key}={root} has no {WEIGHTS_NAME}; it is not a saved backward model.")
        model = cls(forward)
        state = load_file(weights)
        expected = model.trainable_state_dict()
        if set(state) != set(expected) or any(state[k].shape != v.shape for k, v in expected.items()):
            raise ValueError(f"{config_key}={root} holds weights that do not fit this forward model.")
        with torch.no_grad():
            for key, parameter in expected.items():
                parameter.copy_(state[key])
        return model
