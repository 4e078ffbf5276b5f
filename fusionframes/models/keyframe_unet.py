"""Keyframe model (paper §4.1): a frozen 2D T2I UNet inflated to video by temporal blocks or layers.

The diffusers UNet is neither copied nor edited: each temporal module is attached to a spatial submodule
by a forward hook that maps that submodule's output through it. The per-call temporal state (frame count
and the time + frame-position embedding) lives in a ``TemporalContext`` that ``KeyframeUNet.forward``
sets and clears; outside that call the hooks are inert, so the same UNet object still works as the 2D
model and the UNet's own state-dict names stay those of diffusers (frozen weights are saved by reference).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.unets.unet_kandinsky3 import Kandinsky3ResNetBlock, Kandinsky3UNet
from einops import rearrange, repeat
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.checkpoint import checkpoint

from fusionframes.models.temporal import (
    FramePositionEmbedding,
    TemporalAttention1dBlock,
    TemporalAttention3dBlock,
    TemporalAttentionLayer,
    TemporalConv1dBlock,
    TemporalConv3dBlock,
    TemporalConvLayer,
    TemporalTextAttention,
    check_compression,
)
from fusionframes.utils.compilation import compile_each
from fusionframes.utils.pretrained import require_dir

#: variant -> (placement, conv module, attention module). "blocks": a temporal block after every spatial
#: resnet block and every self-attention block; "layers" (the mixed baseline): a temporal layer after
#: every conv inside the resnet blocks and after every self-attention layer inside the attention blocks.
VARIANTS: dict[str, tuple[str, type[nn.Module], type[nn.Module]]] = {
    "conv1d_attn1d_blocks": ("blocks", TemporalConv1dBlock, TemporalAttention1dBlock),
    "conv1d_attn3d_blocks": ("blocks", TemporalConv1dBlock, TemporalAttention3dBlock),
    "conv3d_attn1d_blocks": ("blocks", TemporalConv3dBlock, TemporalAttention1dBlock),
    "conv1d_attn1d_layers": ("layers", TemporalConvLayer, TemporalAttentionLayer),
}

#: Options added to ``KeyframeUNet.config`` after models were first exported, with the value those exports used
#: (a saved config.json without the key loads with it).
CONFIG_DEFAULTS: dict[str, object] = {"conv_compression": 2, "text_cross_attention": False,
                                       "text_attention_positions": False}

#: Zero-initialised parts that weights saved without them may lack (the loaded model then computes what the saved
#: one did): the pooled-text projection and the text cross-attention.
OPTIONAL_PARTS = ("text_projection.", "text_attention.")

#: A place for a temporal module: (path in the UNet, spatial module, its output channels, "conv" | "attn").
Site = tuple[str, nn.Module, int, str]


def _unet2d_sites(unet: UNet2DConditionModel, placement: str) -> Iterator[Site]:
    """Resnets (or their conv1/conv2) and Transformer2DModels (or their attn1) of down, mid and up blocks."""
    for name, module in unet.named_modules():
        if isinstance(module, ResnetBlock2D):
            if placement == "blocks":
                yield name, module, module.out_channels, "conv"
            else:
                for conv in ("conv1", "conv2"):
                    layer = getattr(module, conv)
                    yield f"{name}.{conv}", layer, layer.out_channels, "conv"
        elif isinstance(module, Transformer2DModel) and placement == "blocks":
            yield name, module, module.out_channels, "attn"
        elif isinstance(module, BasicTransformerBlock) and placement == "layers":
            yield f"{name}.attn1", module.attn1, module.attn1.out_dim, "attn"


def _kandinsky3_sites(unet: Kandinsky3UNet, placement: str) -> Iterator[Site]:
    """Resnets (or their four convs) and self-attention blocks (``attentions[0]`` of a down/up block built with
    ``self_attention``; ``attentions[1:]`` are cross-attention) or their attention layer."""
    self_attention = {id(block.attentions[0]) for block in [*unet.down_blocks, *unet.up_blocks]
                      if block.self_attention}
    for name, module in unet.named_modules():
        if isinstance(module, Kandinsky3ResNetBlock):
            if placement == "blocks":
                yield name, module, module.resnet_blocks[-1].projection.out_channels, "conv"
            else:
                for i, block in enumerate(module.resnet_blocks):
                    conv = block.projection
                    yield f"{name}.resnet_blocks.{i}.projection", conv, conv.out_channels, "conv"
        elif id(module) in self_attention:
            if placement == "blocks":
                yield name, module, module.in_norm.norm.num_channels, "attn"
            else:
                yield f"{name}.attention", module.attention, module.attention.out_dim, "attn"


#: Supported backbone class -> (temporal sites, config key of its GroupNorm group count).
BACKBONES: dict[type[nn.Module], tuple[Callable[[nn.Module, str], Iterator[Site]], str]] = {
    UNet2DConditionModel: (_unet2d_sites, "norm_num_groups"),
    Kandinsky3UNet: (_kandinsky3_sites, "groups"),
}


def _backbone(unet: nn.Module) -> tuple[Callable[[nn.Module, str], Iterator[Site]], str]:
    for cls, spec in BACKBONES.items():
        if isinstance(unet, cls):
            return spec
    supported = ", ".join(cls.__name__ for cls in BACKBONES)
    raise TypeError(f"KeyframeUNet cannot inflate a {type(unet).__name__}; supported UNets: {supported}.")


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown keyframe variant {variant!r}; allowed: {', '.join(VARIANTS)}.")


def module_key(path: str) -> str:
    """Module-dict key of the temporal module at ``path`` (ModuleDict keys cannot contain dots)."""
    return path.replace(".", "_")


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def text_dim(unet: nn.Module) -> int:
    """Width D of the text states the UNet takes as ``encoder_hidden_states``."""
    return getattr(unet.config, "encoder_hid_dim", None) or unet.config.cross_attention_dim


def build_temporal(unet: nn.Module, variant: str, position_dim: int = 256, max_position: int = 1024,
                   head_dim: int = 64, conv3d_reduction: float | None = None,
                   text_conditioning: bool = False, conv_compression: int = 2,
                   text_cross_attention: bool = False, text_attention_positions: bool = False) -> nn.ModuleDict:
    """The trainable part of a ``variant`` inflation of ``unet``: ``frame_embedding``, ``blocks`` (by site key)
    and, with ``text_conditioning``, ``text_projection`` (pooled text -> time-embedding size, zero-initialised);
    with ``text_cross_attention``, ``text_attention``: a ``TemporalTextAttention`` after each temporal attention
    block (by its site key; "blocks" variants only), whose queries get 2D sin/cos positions with
    ``text_attention_positions``.
    ``conv_compression``: bottleneck C -> C // conv_compression of the Conv1D blocks, whose parameter count the
    Conv3D blocks match when ``conv3d_reduction`` is None (the layers variant has no bottleneck)."""
    sites, groups_key = _backbone(unet)
    _check_variant(variant)
    check_compression(conv_compression)
    placement, conv_cls, attn_cls = VARIANTS[variant]
    if text_cross_attention and placement != "blocks":
        blocks_variants = ", ".join(v for v, spec in VARIANTS.items() if spec[0] == "blocks")
        raise ValueError(f"text_cross_attention needs a blocks variant ({blocks_variants}), not {variant!r}.")
    if text_attention_positions and not text_cross_attention:
        raise ValueError("text_attention_positions=true needs text_cross_attention=true (it adds positions to the "
                         "queries of the text cross-attention).")
    emb_dim = unet.time_embedding.linear_2.out_features
    groups = unet.config[groups_key]
    options = {
        TemporalConv1dBlock: dict(emb_dim=emb_dim, groups=groups, compression=conv_compression),
        TemporalConv3dBlock: dict(emb_dim=emb_dim, groups=groups, reduction=conv3d_reduction,
                                  compression=conv_compression),
        TemporalConvLayer: {},
    }
    attn_options = dict(emb_dim=emb_dim, groups=groups, head_dim=head_dim)
    make = {"conv": partial(conv_cls, **options[conv_cls]), "attn": partial(attn_cls, **attn_options)}
    blocks = nn.ModuleDict({module_key(path): make[kind](channels)
                            for path, _, channels, kind in sites(unet, placement)})
    modules = {"frame_embedding": FramePositionEmbedding(emb_dim, position_dim, max_position), "blocks": blocks}
    if text_conditioning:
        modules["text_projection"] = nn.Linear(text_dim(unet), emb_dim)
        nn.init.zeros_(modules["text_projection"].weight)
        nn.init.zeros_(modules["text_projection"].bias)
    if text_cross_attention:
        modules["text_attention"] = nn.ModuleDict({
            module_key(path): TemporalTextAttention(channels, text_dim(unet), **attn_options,
                                                    positions=text_attention_positions)
            for path, _, channels, kind in sites(unet, placement) if kind == "attn"})
    return nn.ModuleDict(modules)


def parameter_table(unet: nn.Module, variants: tuple[str, ...] = tuple(VARIANTS), **options: object) -> str:
    """Markdown table of the temporal modules and parameters each variant adds to ``unet`` (no hooks attached)."""
    frozen = count_parameters(unet)
    rows = ["| variant | temporal modules | temporal params | % of frozen | vs first row |",
            "|---|---|---|---|---|"]
    first = None
    for variant in variants:
        temporal = build_temporal(unet, variant, **options)
        count = count_parameters(temporal)
        first = first or count
        rows.append(f"| {variant} | {len(temporal['blocks'])} | {count:,} | {100 * count / frozen:.1f}% | "
                    f"{count / first:.3f}x |")
    return "\n".join(rows + [f"\nfrozen {type(unet).__name__}: {frozen:,} parameters"])


@dataclass
class TemporalContext:
    """Per-call state read by the hooks; set by ``KeyframeUNet.forward`` and cleared after it.

    ``frame_emb`` (B·F, D_t): frame-position embedding; ``emb`` (B·F, D_t): time embedding of the frozen
    UNet plus ``frame_emb``, set by the hook on ``unet.time_embedding``; ``text`` (B, L, D) and ``text_mask``
    (B, L): the prompt of each video, for the text cross-attention.
    """

    num_frames: int | None = None
    frame_emb: torch.Tensor | None = None
    emb: torch.Tensor | None = None
    text: torch.Tensor | None = None
    text_mask: torch.Tensor | None = None


class KeyframeUNet(nn.Module):
    """A frozen ``UNet2DConditionModel`` or ``Kandinsky3UNet`` plus trainable temporal modules (``variant``).

    The UNet is frozen here (``requires_grad_(False)``); only ``temporal`` (frame-position embedding and
    temporal modules) trains. The temporal modules are conditioned on the UNet's own time embedding
    (captured from ``unet.time_embedding``) plus the frame-position embedding projected to its size D_t and,
    with ``text_conditioning``, a zero-initialised projection of the mask-averaged text states (the temporal
    modules then see the prompt directly, not only through the frozen spatial features) and, with
    ``text_cross_attention``, a cross-attention to the text tokens after each temporal attention block (not in
    the paper: a spatially varying text path, see ``TemporalTextAttention``), with 2D positions added to its queries
    under ``text_attention_positions``.
    Mixed precision: keep the temporal parameters in fp32 and run under ``torch.autocast`` when the frozen
    UNet is in bf16/fp16. diffusers' gradient checkpointing of the UNet itself is not supported (its
    recomputation runs after ``forward`` has cleared the context); use the options here instead:
    ``gradient_checkpointing`` recomputes each temporal module in the backward pass and
    ``spatial_checkpointing`` each of the UNet's down, mid and up blocks (frozen spatial layers with the
    temporal modules they hold), with the context of the forward pass restored for the recomputation.
    ``conv_compression`` sets the Conv1D blocks' bottleneck width (see ``build_temporal``; KandinskyVideo: 2).
    ``compile`` calls ``compile_temporal()`` (torch.compile of each temporal module; the UNet stays eager).
    """

    def __init__(self, unet: nn.Module, variant: str = "conv1d_attn1d_blocks", num_frames: int | None = None,
                 position_dim: int = 256, max_position: int = 1024, head_dim: int = 64,
                 conv3d_reduction: float | None = None, gradient_checkpointing: bool = False,
                 text_conditioning: bool = False, spatial_checkpointing: bool = False, conv_compression: int = 2,
                 compile: bool = False, text_cross_attention: bool = False,
                 text_attention_positions: bool = False) -> None:
        super().__init__()
        sites, _ = _backbone(unet)
        _check_variant(variant)
        unet.requires_grad_(False)
        self.unet = unet
        self.gradient_checkpointing = gradient_checkpointing
        self.config = dict(variant=variant, num_frames=num_frames, position_dim=position_dim,
                           max_position=max_position, head_dim=head_dim, conv3d_reduction=conv3d_reduction,
                           text_conditioning=text_conditioning, conv_compression=conv_compression,
                           text_cross_attention=text_cross_attention,
                           text_attention_positions=text_attention_positions)
        self.temporal = build_temporal(unet, variant, position_dim, max_position, head_dim, conv3d_reduction,
                                       text_conditioning, conv_compression, text_cross_attention,
                                       text_attention_positions)
        self._context = TemporalContext()
        unet.time_embedding.register_forward_hook(self._capture_time_embedding)
        for path, module, _, _ in sites(unet, VARIANTS[variant][0]):
            module.register_forward_hook(partial(self._apply_temporal, module_key(path)))
        if spatial_checkpointing:  # wrap the instance's forward, as accelerate's hooks do
            for block in (*unet.down_blocks, getattr(unet, "mid_block", None), *unet.up_blocks):
                if block is not None:
                    block.forward = partial(self._checkpointed, block.forward)
        if compile:
            self.compile_temporal()

    @property
    def num_frames(self) -> int | None:
        return self.config["num_frames"]

    def compile_temporal(self, **kwargs: object) -> KeyframeUNet:
        """``torch.compile`` every temporal module in place (``compile_each``: static shapes unless ``dynamic`` is
        passed, one compiled graph per input signature of a module class; the Kandinsky 3 UNet has 11 Conv1D block
        signatures); the frozen UNet stays eager. ``kwargs`` go to ``torch.compile``.

        Inductor fuses each module's chain of conditional group norm, SiLU and reshapes around its convolutions
        and attention, the memory-bound part of a temporal module's forward and backward. Its channels-last layout
        for convolutions is forced (``force_layout_optimization``, for the default inductor backend without a
        ``mode``, which excludes options). Its heuristic skips graphs with few convolutions (it skipped Conv1D blocks
        with two), and cuDNN then converts NCHW <-> NHWC around them. At the high-resolution levels the temporal
        convolutions run as matmuls instead (``frame_conv``).
        """
        modules = list(self.temporal["blocks"].values())
        if "text_attention" in self.temporal:
            modules += list(self.temporal["text_attention"].values())
        if kwargs.get("backend", "inductor") == "inductor" and "mode" not in kwargs:
            kwargs["options"] = {"force_layout_optimization": True, **kwargs.get("options", {})}
        compile_each(modules, **kwargs)
        return self

    def _checkpointed(self, forward: Callable, *args: object, **kwargs: object) -> object:
        """A UNet block's ``forward`` under activation checkpointing, recomputed with this call's context."""
        if not torch.is_grad_enabled() or self._context.num_frames is None:
            return forward(*args, **kwargs)
        context = self._context

        def run(*args: object, **kwargs: object) -> object:
            outer, self._context = self._context, context
            try:
                return forward(*args, **kwargs)
            finally:
                self._context = outer

        return checkpoint(run, *args, use_reentrant=False, **kwargs)

    def _capture_time_embedding(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if self._context.num_frames is not None:
            self._context.emb = output + self._context.frame_emb

    def _apply_temporal(self, key: str, module: nn.Module, args: tuple, output: torch.Tensor | tuple
                        ) -> torch.Tensor | tuple | None:
        """Forward hook: the spatial module's output (tensor, or a tuple whose first item is it) mapped through
        temporal module ``key``; None (output unchanged) outside ``forward``."""
        ctx = self._context
        if ctx.num_frames is None:
            return None
        x = output[0] if isinstance(output, tuple) else output
        x = self._run(self.temporal["blocks"][key], x, ctx.num_frames, ctx.emb)
        if "text_attention" in self.temporal and key in self.temporal["text_attention"]:
            x = self._run(self.temporal["text_attention"][key], x, ctx.num_frames, ctx.emb, ctx.text, ctx.text_mask)
        return (x, *output[1:]) if isinstance(output, tuple) else x

    def _run(self, module: nn.Module, *args: object) -> torch.Tensor:
        """``module(*args)``, recomputed in the backward pass under ``gradient_checkpointing``."""
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(module, *args, use_reentrant=False)
        return module(*args)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                encoder_attention_mask: torch.Tensor | None, positions: torch.Tensor, *,
                any_length: bool = False) -> torch.Tensor:
        """Denoiser output for a video.

        sample (B, F, C, H, W); timestep (B,) or per-frame (B, F) (FVDM: each frame at its own noise level, in
        the frozen UNet's time embedding and in the temporal modules' conditioning); encoder_hidden_states
        (B, L, D); encoder_attention_mask (B, L) bool or None (all tokens); positions (B, F) frame positions on
        the source timeline (long; float positions between them work too) -> (B, F, C_out, H, W). Text, mask
        and (B,) timesteps are repeated per frame. F must equal ``num_frames`` unless ``any_length`` (samplers
        that run the model on other lengths: sampling windows, ZeroSmooth's long branch).
        """
        b, f = sample.shape[:2]
        if positions.shape != (b, f):
            raise ValueError(f"positions has shape {tuple(positions.shape)} but the sample has B={b}, F={f} "
                             f"frames; pass positions of shape ({b}, {f}).")
        if self.num_frames is not None and f != self.num_frames and not any_length:
            raise ValueError(f"the sample has {f} frames but this KeyframeUNet was built for "
                             f"num_frames={self.num_frames}.")
        if timestep.shape not in ((b,), (b, f)):
            raise ValueError(f"timestep has shape {tuple(timestep.shape)}; expected ({b},) or ({b}, {f}).")
        timesteps = repeat(timestep, "b -> (b f)", f=f) if timestep.ndim == 1 else rearrange(timestep, "b f -> (b f)")
        if encoder_attention_mask is None:  # Kandinsky3UNet's attention pooling needs a mask
            encoder_attention_mask = torch.ones(encoder_hidden_states.shape[:2], dtype=torch.bool,
                                                device=encoder_hidden_states.device)
        frame_emb = self.temporal["frame_embedding"](positions)
        if "text_projection" in self.temporal:  # pooled text conditions the temporal modules too
            weights = encoder_attention_mask.to(encoder_hidden_states.dtype)[..., None]
            pooled = (encoder_hidden_states * weights).sum(1) / weights.sum(1).clamp_min(1.0)
            frame_emb = frame_emb + repeat(self.temporal["text_projection"](pooled), "b d -> (b f) d", f=f)
        # In the UNet's dtype: DeepSpeed's bf16 casts the whole module, without autocast.
        dtype = self.unet.dtype
        text = encoder_hidden_states.to(dtype)
        self._context = TemporalContext(num_frames=f, frame_emb=frame_emb, text=text, text_mask=encoder_attention_mask)
        try:
            out = self.unet(rearrange(sample.to(dtype), "b f c h w -> (b f) c h w"), timesteps,
                            encoder_hidden_states=repeat(text, "b l d -> (b f) l d", f=f),
                            encoder_attention_mask=repeat(encoder_attention_mask, "b l -> (b f) l", f=f),
                            return_dict=False)[0]
        finally:
            self._context = TemporalContext()
        return rearrange(out, "(b f) c h w -> b f c h w", b=b)

    def temporal_parameters(self) -> Iterator[nn.Parameter]:
        """The trainable parameters: frame-position embedding and temporal modules."""
        return self.temporal.parameters()

    def temporal_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the temporal weights (what a keyframe checkpoint holds)."""
        return self.temporal.state_dict()

    def load_temporal_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.temporal.load_state_dict(state_dict)

    def parameter_counts(self) -> dict[str, int]:
        return {"frozen": count_parameters(self.unet), "temporal": count_parameters(self.temporal)}

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write ``temporal.safetensors`` (in ``dtype`` if given) and ``config.json`` (variant, frame count,
        embedding sizes, backbone); ``from_pretrained`` loads them back in fp32."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: (v if dtype is None else v.to(dtype)).contiguous() for k, v in self.temporal_state_dict().items()}
        save_file(state, directory / "temporal.safetensors")
        config = {**self.config, "backbone": type(self.unet).__name__,
                  "time_embedding_dim": self.unet.time_embedding.linear_2.out_features}
        (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, unet: nn.Module, gradient_checkpointing: bool = False,
                        config_key: str = "model.keyframe_path") -> KeyframeUNet:
        """Rebuild around the frozen ``unet`` and load the temporal weights saved by ``save_pretrained``."""
        root = require_dir(directory, config_key)
        config = {**CONFIG_DEFAULTS, **json.loads((root / "config.json").read_text())}
        backbone = config.pop("backbone")
        config.pop("time_embedding_dim")
        if type(unet).__name__ != backbone:
            raise TypeError(f"{config_key}={root} holds temporal weights for a {backbone}, "
                            f"not the given {type(unet).__name__}.")
        model = cls(unet, gradient_checkpointing=gradient_checkpointing, **config)
        model.load_temporal_weights(root, config_key)
        return model

    def load_temporal_weights(self, directory: str | Path, config_key: str = "model.init_from") -> None:
        """Load ``temporal.safetensors`` written by ``save_pretrained`` (e.g. to continue training from it).

        Only the zero-initialised ``OPTIONAL_PARTS`` may be absent (weights saved without ``text_conditioning`` or
        ``text_cross_attention``): they keep their initialisation, so the loaded model computes what the saved one
        did.
        """
        weights = require_dir(directory, config_key) / "temporal.safetensors"
        if not weights.is_file():
            raise FileNotFoundError(f"{config_key}={directory} has no temporal.safetensors.")
        state = {k: v.float() for k, v in load_file(weights).items()}
        own = self.temporal.state_dict()
        missing = [k for k in own if k not in state and not k.startswith(OPTIONAL_PARTS)]
        wrong = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
        if missing or wrong:
            raise ValueError(f"{config_key}={directory} does not fit this model (missing {missing[:3]}, unexpected "
                             f"or reshaped {wrong[:3]}); use the model.temporal settings of its config.json.")
        self.temporal.load_state_dict(state, strict=False)
