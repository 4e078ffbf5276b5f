"""Interpolation model (paper §4.2, appendices 9 and 10): a T2I UNet turned into a latent frame interpolator.

Three modes share one class, one conditioning scheme and one sampling loop:

- ``"fusionframes"`` (the paper's model): each pair of consecutive keyframes is one *group*; the UNet sees
  the group as 20 channels ``[z_t^1, z_t^2, z_t^3, c^1, c^2]`` (three noisy in-between latents, then the left
  and right keyframe latents) and predicts the three in-betweens as 12 channels. The T - 1 groups of a
  video are folded into the batch and 3x1x1 temporal convs run over the sequence of groups, so T keyframes
  become 4T - 3 frames for any T >= 2.
- ``"mfi"`` (Masked Frame Interpolation, Video LDM; the paper's baseline): the UNet sees every one of the
  4T - 3 frames of the clip as 9 channels ``[z_t, upsampled keyframes (zeros between them), mask]`` and
  predicts every frame; the temporal convs run over all frames of the clip.
- ``"mfi_windows"`` (MFI exactly as the paper's appendix 10 trains it): the same 9-channel frames, but in
  T - 1 windows of 5 frames (a keyframe, its 3 in-betweens, the next keyframe) folded into the batch; the
  temporal convs run over the 5 frames of a window, so windows are independent and every inner keyframe is
  denoised twice (5(T - 1) UNet images per video against 4T - 3 for ``"mfi"`` and T - 1 for FusionFrames).

Inflation of the pretrained UNet (taken over and edited in place; the whole model trains):
``conv_in`` gains input channels whose weights are zero (the pretrained kernel reads ``z_t`` / ``z_t^1``);
in fusionframes mode ``conv_out`` is replicated three times (weights and bias), so the untrained model
predicts three identical frames, each equal to the 2D UNet's prediction for ``z_t^1``. Temporal convs are
attached by forward hooks (as in ``keyframe_unet``), so the UNet keeps its diffusers structure and names.
Text conditioning is replaced by a fixed null context (the backbone text encoder's empty prompt); the
skip-frame ``s`` and perturbation level ``tp`` are embedded and added to the UNet's time embedding.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.unets.unet_kandinsky3 import Kandinsky3UNet
from einops import rearrange, repeat
from safetensors.torch import load_file, save_file
from torch import nn

from fusionframes.diffusion import NoiseSchedule, classifier_free_guidance
from fusionframes.diffusion import sample as sampling_loop
from fusionframes.models.keyframe_unet import BACKBONES, count_parameters, module_key
from fusionframes.models.temporal import fold, unfold, zero_
from fusionframes.utils.pretrained import require_dir
from fusionframes.utils.validation import in_traced_graph

MODES = ("fusionframes", "mfi", "mfi_windows")
#: In-between frames per pair of keyframes (T keyframes -> 4T - 3 frames).
BETWEEN = 3
#: Frames of an ``mfi_windows`` window: a keyframe, its in-betweens and the next keyframe.
WINDOW = BETWEEN + 2
#: Parts of the UNet whose 3x3 convs get a temporal conv (not conv_in / conv_out).
TEMPORAL_SCOPES = ("down_blocks.", "mid_block.", "up_blocks.")

#: The denoiser signature shared by ``InterpolationUNet.forward`` and test stubs.
Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def interleave(keyframes: torch.Tensor, between: torch.Tensor) -> torch.Tensor:
    """keyframes (B, T, C, h, w) and in-betweens (B, T-1, N, C, h, w) -> video (B, (T-1)(N+1)+1, C, h, w).

    The layout of ``InterpolationSampler``: keyframe g is frame g·(N+1), its in-betweens the N frames after it.
    """
    groups = torch.cat([keyframes[:, :-1, None], between], dim=2)
    return torch.cat([rearrange(groups, "b g n c h w -> b (g n) c h w"), keyframes[:, -1:]], dim=1)


def deinterleave(video: torch.Tensor, between: int = BETWEEN) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of ``interleave``: video (B, F, C, h, w) -> keyframes (B, T, ...), in-betweens (B, T-1, N, ...)."""
    groups = rearrange(video[:, :-1], "b (g n) c h w -> b g n c h w", n=between + 1)
    return video[:, :: between + 1], groups[:, :, 1:]


def windows(keyframes: torch.Tensor, between: torch.Tensor) -> torch.Tensor:
    """keyframes (B, T, C, h, w) and in-betweens (B, T-1, N, C, h, w) -> windows (B, T-1, N+2, C, h, w).

    Window g is keyframe g, its N in-betweens and keyframe g + 1 (the layout of ``"mfi_windows"``)."""
    return torch.cat([keyframes[:, :-1, None], between, keyframes[:, 1:, None]], dim=2)


def num_frames(num_keyframes: int) -> int:
    """Frames after one interpolation pass: 4T - 3."""
    return (num_keyframes - 1) * (BETWEEN + 1) + 1


def context_guidance(denoiser: Denoiser, sample: torch.Tensor, timestep: torch.Tensor, keyframes: torch.Tensor,
                     skip: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Context guidance (paper eq. 5): ``(1 + w)·f([z_t, c], tp=0, s) − w·f([z_t, 0], tp=0, s)``.

    Both branches go through ONE ``denoiser`` call on the doubled batch (conditional first, then the
    branch with zeroed keyframes). sample: the model's sample layout (B, ...); timestep, skip: long (B,);
    keyframes (B, T, C, h, w) -> guided prediction of ``sample``'s shape.
    """
    b = sample.shape[0]
    pred = denoiser(torch.cat([sample, sample]), torch.cat([timestep, timestep]),
                    torch.cat([keyframes, torch.zeros_like(keyframes)]), torch.cat([skip, skip]),
                    torch.zeros(2 * b, dtype=torch.long, device=sample.device))
    cond, uncond = pred.chunk(2)
    return classifier_free_guidance(cond, uncond, 1.0 + guidance_scale)


class TemporalMergeConv(nn.Module):
    """``out = x + alpha · Conv3d(3,1,1)(x)`` over the frame (or group) axis, after a spatial conv (paper eq. 3).

    ``alpha`` is a trainable scalar initialised to 0, so the layer starts as the identity; the conv keeps
    PyTorch's default (non-zero) init. Zeroing both would deadlock: d out/d alpha = conv(x) = 0 and
    d out/d conv = alpha · ... = 0, so neither would ever receive a gradient. With a non-zero conv, alpha
    gets the gradient ``<dL/d out, conv(x)>`` from the first step and the conv follows once alpha moves.

    x (B·F, C, H, W), num_frames F -> (B·F, C, H, W).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        return x + self.alpha * fold(self.conv(unfold(x, num_frames)))


def inflate_conv(conv: nn.Conv2d, in_factor: int = 1, extra_in: int = 0, out_factor: int = 1) -> nn.Conv2d:
    """A copy of ``conv`` with ``in_factor·C_in + extra_in`` inputs (pretrained kernel on the first C_in, the
    rest zero) and ``out_factor·C_out`` outputs (output r·C_out + o repeats pretrained output o, bias too)."""
    c_out, c_in = conv.out_channels, conv.in_channels
    new = nn.Conv2d(in_factor * c_in + extra_in, out_factor * c_out, conv.kernel_size, conv.stride, conv.padding,
                    bias=conv.bias is not None).to(conv.weight)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :c_in] = repeat(conv.weight, "o i kh kw -> (r o) i kh kw", r=out_factor)
        if conv.bias is not None:
            new.bias.copy_(repeat(conv.bias, "o -> (r o)", r=out_factor))
    return new


@dataclass
class _CallContext:
    """Per-call state read by the hooks: frames (or groups) per video, and the (B·F, D_t) embedding of (s, tp)."""

    num_frames: int | None = None
    emb: torch.Tensor | None = None


class InterpolationUNet(nn.Module):
    """FusionFrames latent interpolator or the MFI baseline around a pretrained ``UNet2DConditionModel`` or
    ``Kandinsky3UNet`` (``unet`` is inflated in place; pass a copy to keep the original).

    null_context (L, D): the backbone text encoder's embedding of the empty prompt (kept as a buffer and
    fed to every cross-attention); null_mask (L,) bool, default all True. ``max_skip``: largest skip-frame
    value s the embedding table holds. Diffusers' own gradient checkpointing is not supported (its
    recomputation runs after ``forward`` has cleared the hooks' context).
    """

    def __init__(self, unet: UNet2DConditionModel | Kandinsky3UNet, null_context: torch.Tensor,
                 null_mask: torch.Tensor | None = None, mode: str = "fusionframes", max_skip: int = 12) -> None:
        super().__init__()
        if not isinstance(unet, tuple(BACKBONES)):
            raise TypeError(f"InterpolationUNet cannot inflate a {type(unet).__name__}; supported UNets: "
                            f"{', '.join(cls.__name__ for cls in BACKBONES)}.")
        if mode not in MODES:
            raise ValueError(f"unknown interpolation mode {mode!r}; allowed: {', '.join(MODES)}.")
        if max_skip < 1:
            raise ValueError(f"max_skip={max_skip} must be at least 1.")
        self.mode = mode
        self.max_skip = max_skip
        self.latent_channels = unet.conv_in.in_channels
        self.base_config = {"class": type(unet).__name__, **{k: v for k, v in unet.config.items()
                                                             if not k.startswith("_")}}
        emb_dim = unet.time_embedding.linear_2.out_features
        # Perturbation level tp: the backbone's own sinusoid -> MLP (copied), last layer zeroed.
        self.perturbation_proj = copy.deepcopy(unet.time_proj)
        self.perturbation_embedding = copy.deepcopy(unet.time_embedding)
        zero_(self.perturbation_embedding.linear_2)
        self.skip_embedding = nn.Embedding(max_skip + 1, emb_dim)
        zero_(self.skip_embedding)
        if null_mask is None:
            null_mask = torch.ones(null_context.shape[0], dtype=torch.bool, device=null_context.device)
        self.register_buffer("null_context", null_context.detach().clone())
        self.register_buffer("null_mask", null_mask.detach().clone().bool())

        if mode == "fusionframes":
            unet.conv_in = inflate_conv(unet.conv_in, in_factor=BETWEEN + 2)
            unet.conv_out = inflate_conv(unet.conv_out, out_factor=BETWEEN)
        else:
            unet.conv_in = inflate_conv(unet.conv_in, in_factor=2, extra_in=1)
        self.unet = unet
        sites = [(name, module) for name, module in unet.named_modules()
                 if name.startswith(TEMPORAL_SCOPES) and isinstance(module, nn.Conv2d)
                 and module.kernel_size == (3, 3)]
        self.temporal = nn.ModuleDict({module_key(name): TemporalMergeConv(module.out_channels)
                                       for name, module in sites})
        self._context = _CallContext()
        unet.time_embedding.register_forward_hook(self._add_condition)
        for name, module in sites:
            module.register_forward_hook(partial(self._apply_temporal, module_key(name)))

    def _add_condition(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        return None if self._context.emb is None else output + self._context.emb

    def _apply_temporal(self, key: str, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        ctx = self._context
        return None if ctx.num_frames is None else self.temporal[key](output, ctx.num_frames)

    def condition_embedding(self, skip: torch.Tensor, perturbation: torch.Tensor) -> torch.Tensor:
        """skip s, perturbation tp: long (B,) -> (B, D_t), added to the UNet's time embedding.

        The range check reads the values on the host, so it is left out in a compiled or CUDA graph
        (``interpolate`` checks them before its loop)."""
        if not in_traced_graph(skip) and (skip.min() < 0 or skip.max() > self.max_skip):
            raise ValueError(f"skip values {skip.tolist()} are out of range; this model takes 0..{self.max_skip}.")
        tp = self.perturbation_proj(perturbation).to(self.skip_embedding.weight.dtype)
        return self.skip_embedding(skip) + self.perturbation_embedding(tp)

    def sample_shape(self, keyframes: torch.Tensor) -> tuple[int, ...]:
        """Shape of what the model denoises: (B, T-1, 3, C, h, w) (fusionframes), (B, 4T-3, C, h, w) (mfi) or
        (B, T-1, 5, C, h, w) (mfi_windows)."""
        b, t, c, h, w = keyframes.shape
        if self.mode == "mfi":
            return (b, num_frames(t), c, h, w)
        return (b, t - 1, BETWEEN if self.mode == "fusionframes" else WINDOW, c, h, w)

    def to_sample(self, keyframes: torch.Tensor, between: torch.Tensor) -> torch.Tensor:
        """The clean training target x0 in the sample layout from keyframes (B, T, ...) and in-betweens
        (B, T-1, 3, ...): the in-betweens (fusionframes), the whole interleaved video (mfi) or its windows
        (mfi_windows)."""
        return between if self.mode == "fusionframes" else self._arrange(keyframes, between)

    def to_video(self, keyframes: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """Keyframes (B, T, C, h, w) and a denoised sample -> video (B, 4T-3, C, h, w) with the keyframes copied
        exactly to their positions (MFI modes: the model's own predictions there are discarded)."""
        if self.mode == "mfi":
            sample = deinterleave(sample)[1]
        elif self.mode == "mfi_windows":
            sample = sample[:, :, 1:-1]
        return interleave(keyframes, sample)

    @property
    def _arrange(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """How the MFI modes lay out keyframes and in-betweens: ``interleave`` (mfi) or ``windows``."""
        return windows if self.mode == "mfi_windows" else interleave

    def _unet_input(self, sample: torch.Tensor, keyframes: torch.Tensor) -> torch.Tensor:
        """(B·G, 20, h, w) groups ``[z_t^1, z_t^2, z_t^3, c^1, c^2]`` (c^1, c^2 = keyframes g, g+1), or
        frames ``[z_t, keyframe or zeros, mask]``: (B·F, 9, h, w) (mfi), (B·G·5, 9, h, w) (mfi_windows)."""
        if self.mode == "fusionframes":
            x = torch.cat([rearrange(sample, "b g n c h w -> b g (n c) h w"), keyframes[:, :-1], keyframes[:, 1:]],
                          dim=2)
        else:
            b, t, _, h, w = keyframes.shape
            upsampled = self._arrange(keyframes, keyframes.new_zeros(b, t - 1, BETWEEN, *keyframes.shape[2:]))
            mask = self._arrange(keyframes.new_ones(b, t, 1, h, w), keyframes.new_zeros(b, t - 1, BETWEEN, 1, h, w))
            x = torch.cat([sample, upsampled, mask], dim=-3)
        return x.flatten(0, -4)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, keyframes: torch.Tensor, skip: torch.Tensor,
                perturbation: torch.Tensor) -> torch.Tensor:
        """Prediction (v or eps, per the schedule it is trained with) for ``sample``.

        sample: noisy in-betweens (B, T-1, 3, C, h, w) (fusionframes), noisy video (B, 4T-3, C, h, w) (mfi) or
        its windows (B, T-1, 5, C, h, w) (mfi_windows); timestep, skip s, perturbation tp: long (B,); keyframes:
        conditioning latents (B, T, C, h, w), T >= 2 (zeros for the unconditional branch) -> prediction of
        ``sample``'s shape.
        """
        if keyframes.ndim != 5 or keyframes.shape[1] < 2 or keyframes.shape[2] != self.latent_channels:
            raise ValueError(f"keyframes have shape {tuple(keyframes.shape)}; expected (B, T >= 2, "
                             f"{self.latent_channels}, h, w).")
        expected = self.sample_shape(keyframes)
        if tuple(sample.shape) != expected:
            raise ValueError(f"sample has shape {tuple(sample.shape)} but {keyframes.shape[1]} keyframes in "
                             f"{self.mode} mode need {expected}.")
        b = sample.shape[0]
        for name, value in (("timestep", timestep), ("skip", skip), ("perturbation", perturbation)):
            if value.shape != (b,):
                raise ValueError(f"{name} has shape {tuple(value.shape)}; expected ({b},).")
        # UNet images per sample (groups, frames or window frames) and the axis the temporal convs run over.
        if self.mode == "mfi_windows":
            images, temporal = sample.shape[1] * WINDOW, WINDOW
        else:
            images = temporal = sample.shape[1]
        emb = self.condition_embedding(skip, perturbation)
        self._context = _CallContext(num_frames=temporal, emb=repeat(emb, "b d -> (b k) d", k=images))
        try:
            dtype = self.unet.dtype  # DeepSpeed's bf16 casts the whole module, without autocast
            out = self.unet(self._unet_input(sample, keyframes).to(dtype), repeat(timestep, "b -> (b k)", k=images),
                            encoder_hidden_states=repeat(self.null_context, "l d -> n l d", n=b * images).to(dtype),
                            encoder_attention_mask=repeat(self.null_mask, "l -> n l", n=b * images),
                            return_dict=False)[0]
        finally:
            self._context = _CallContext()
        # (B·images, C_out, h, w) is the sample's layout with its leading axes folded (fusionframes: the 3
        # in-betweens of a group are its 12 output channels in order).
        return out.reshape(sample.shape)

    @torch.no_grad()
    def interpolate(self, keyframes: torch.Tensor, skip: int | torch.Tensor, schedule: NoiseSchedule,
                    num_inference_steps: int, guidance_scale: float = 0.25, generator: torch.Generator | None = None,
                    progress: bool = False, cuda_graph: bool = False) -> torch.Tensor:
        """One interpolation pass: keyframe latents (B, T, C, h, w), T >= 2 -> (B, 4T-3, C, h, w).

        DDIM over ``schedule`` (its prediction type and timestep spacing) with context guidance
        (``context_guidance``: one UNet call per step for all groups and both branches), tp = 0; the
        keyframes are copied exactly into the output. ``skip``: s for every sample or long (B,).
        ``cuda_graph``: on CUDA, replay the fixed-shape UNet call as a CUDA graph after the first step.
        """
        skip = torch.as_tensor(skip, dtype=torch.long, device=keyframes.device).expand(keyframes.shape[0])
        self.condition_embedding(skip, torch.zeros_like(skip))  # range check outside any CUDA-graph capture

        def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return context_guidance(self, x, t, keyframes, skip, guidance_scale)

        x0 = sampling_loop(denoise, self.sample_shape(keyframes), schedule, num_inference_steps, generator=generator,
                    progress=progress, desc=f"interpolation ({self.mode}, s={skip[0].item()})",
                    device=keyframes.device, dtype=keyframes.dtype, cuda_graph=cuda_graph)
        return self.to_video(keyframes, x0)

    def parameter_counts(self) -> dict[str, int]:
        """Parameters of the inflated UNet, the temporal convs, the (s, tp) conditioning, and their total."""
        counts = {"unet": count_parameters(self.unet), "temporal": count_parameters(self.temporal),
                  "conditioning": count_parameters(self.skip_embedding) + count_parameters(self.perturbation_embedding)}
        return {**counts, "total": count_parameters(self)}

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype = torch.float32) -> Path:
        """Write ``model.safetensors`` (every weight, in ``dtype``) and ``config.json`` (mode, max_skip, null
        context shape and the base UNet's class and config), enough to rebuild without the T2I directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in self.state_dict().items()}
        save_file(state, directory / "model.safetensors")
        config = {"mode": self.mode, "max_skip": self.max_skip, "null_context_shape": list(self.null_context.shape),
                  "base_unet": self.base_config}
        (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, config_key: str = "model.interpolation_path") -> InterpolationUNet:
        """Rebuild a model written by ``save_pretrained`` (fp32, on CPU)."""
        root = require_dir(directory, config_key)
        config = json.loads((root / "config.json").read_text())
        base = dict(config["base_unet"])
        classes = {c.__name__: c for c in BACKBONES}
        unet = classes[base.pop("class")].from_config(base)
        model = cls(unet, torch.zeros(config["null_context_shape"]), mode=config["mode"], max_skip=config["max_skip"])
        model.load_state_dict(load_file(root / "model.safetensors"))
        return model
