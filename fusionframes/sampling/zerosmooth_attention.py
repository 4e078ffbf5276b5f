"""ZeroSmooth's hidden-state correction inside the attention modules of a ``KeyframeUNet`` (spec §2.4-2.6).

``correction_hooks(model, state)`` installs, for the duration of a ``with`` block, a diffusers attention
processor on every spatial ``Attention`` of the frozen UNet and a wrapper around the frame attention of every
temporal attention module; both read the shared ``CorrectionState`` that the sampler sets before each model
call. Modes: ``None`` (plain: temporal attention over sliding windows when the video is longer than the
window), ``"record"`` (the short branch: store each module's attention input) and ``"correct"`` (a long
branch: back-project its attention inputs onto the previous branch's at the keyframes and blend the corrected
and plain attention outputs by the weight lambda). The hooked modules see the post-norm hidden state that
goes into the projections; the residual stream is left uncorrected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.models.attention_processor import Attention
from einops import rearrange
from torch import Tensor, nn

from fusionframes.models.keyframe_unet import KeyframeUNet
from fusionframes.models.temporal import TemporalAttention3dBlock, TemporalAttentionLayer
from fusionframes.sampling.frame_operators import FrameOperator, windowed

#: Attention kinds that can be corrected (spec App. A.2); the keyframe model has no temporal cross-attention.
MODULE_KINDS = ("spatial_self", "spatial_cross", "temporal_self", "temporal_cross")
KV_CHOICES = ("bernoulli", "gaussian_threshold")


@dataclass
class CorrectionState:
    """What the hooks see during one model call.

    ``num_frames``: F' of the video in the call (the UNet batch is (B·F')); ``window``/``overlap``/``fusion``:
    temporal attention windows; ``lam``: blend weight of the corrected attention; ``operators``: for
    ``"correct"``, the FrameOperators named ``q`` (spatial query), ``kv1``/``kv2`` (spatial key/value, A_1 and
    A_2) and ``temporal``; ``bank_in``: the previous branch's states by module, (B, F, ...); ``bank_out``:
    this call's states for the next branch (the query-corrected ones when ``pass_corrected_states``).
    The K/V operator is drawn per video and attention call: A_1 with probability ``p_a1`` ("bernoulli") or
    when a standard normal draw exceeds ``threshold`` ("gaussian_threshold"), from ``generator``.
    """

    num_frames: int = 0
    window: int = 16
    overlap: int = 8
    fusion: str = "pyramid"
    mode: str | None = None
    lam: float = 0.0
    modules: tuple[str, ...] = MODULE_KINDS
    operators: dict[str, FrameOperator] = field(default_factory=dict)
    bank_in: dict[str, Tensor] = field(default_factory=dict)
    bank_out: dict[str, Tensor] = field(default_factory=dict)
    pass_corrected_states: bool = True
    kv_choice: str = "bernoulli"
    p_a1: float = 0.5
    threshold: float = 0.5
    generator: torch.Generator | None = None

    def corrects(self, kind: str) -> bool:
        return self.mode == "correct" and kind in self.modules

    def choose_a1(self, batch: int, device: torch.device) -> Tensor:
        """(batch,) bool: which videos use A_1 (else A_2) for this call's keys and values."""
        source = None if self.generator is None else self.generator.device
        if self.kv_choice == "bernoulli":
            return (torch.rand(batch, generator=self.generator, device=source) < self.p_a1).to(device)
        return (torch.randn(batch, generator=self.generator, device=source) > self.threshold).to(device)

    def keep(self, key: str, plain: Tensor, corrected: Tensor | None = None) -> None:
        """Store a module's state for the next branch."""
        if self.mode is not None:
            self.bank_out[key] = corrected if corrected is not None and self.pass_corrected_states else plain


def blend(lam: float, corrected: Callable[[], Tensor], plain: Callable[[], Tensor]) -> Tensor:
    """lam · corrected() + (1 - lam) · plain(), computing only one branch when lam is 0 or 1 (spec Eq. 15)."""
    if lam >= 1.0:
        return corrected()
    if lam <= 0.0:
        return plain()
    return lam * corrected() + (1.0 - lam) * plain()


class SpatialCorrectionProcessor:
    """diffusers attention processor around a module's own processor (``original``).

    hidden_states (B·F', N, D). Self-attention (no encoder states, or Kandinsky 3's self-attention, which
    passes its input again): query from back-projection with ``q`` (A_s), keys and values with A_1 or A_2.
    Cross-attention: query corrected with A_s; text keys/values unchanged.
    """

    def __init__(self, key: str, original: Any, state: CorrectionState) -> None:
        self.key = key
        self.original = original
        self.state = state

    def __call__(self, attn: Attention, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, temb: Tensor | None = None, **kwargs: Any) -> Tensor:
        state = self.state
        self_attention = encoder_hidden_states is None or encoder_hidden_states is hidden_states
        kind = "spatial_self" if self_attention else "spatial_cross"

        def attend(query_states: Tensor, kv_states: Tensor | None) -> Tensor:
            return self.original(attn, query_states, kv_states, attention_mask=attention_mask, temb=temb, **kwargs)

        def plain() -> Tensor:
            return attend(hidden_states, encoder_hidden_states)

        if state.mode is None:
            return plain()
        h = rearrange(hidden_states, "(b f) n d -> b f n d", f=state.num_frames)
        if not state.corrects(kind):
            state.keep(self.key, h)
            return plain()
        h_k = state.bank_in[self.key]
        h_q = state.operators["q"].backproject(h, h_k)
        state.keep(self.key, h, h_q)
        fold = "b f n d -> (b f) n d"
        if self_attention:
            use_a1 = state.choose_a1(h.shape[0], h.device)[:, None, None, None]
            h_kv = torch.where(use_a1, state.operators["kv1"].backproject(h, h_k),
                               state.operators["kv2"].backproject(h, h_k))
            return blend(state.lam, lambda: attend(rearrange(h_q, fold), rearrange(h_kv, fold)), plain)
        return blend(state.lam, lambda: attend(rearrange(h_q, fold), encoder_hidden_states), plain)


class TemporalCorrectionAttention(nn.Module):
    """Stands in for the frame self-attention of a temporal attention module while the hooks are installed.

    x (B·H·W, F', C) -> same: ``attention`` over sliding windows of ``state.window`` frames fused by
    ``state.fusion`` (one window when F' fits); when correcting, Q, K and V come from x back-projected with
    the ``temporal`` operator (A_s) onto the previous branch's states.
    """

    def __init__(self, key: str, attention: nn.Module, state: CorrectionState) -> None:
        super().__init__()
        self.key = key
        self.attention = attention
        self.state = state

    def attend(self, x: Tensor) -> Tensor:
        return windowed(self.attention, x, self.state.window, self.state.overlap, self.state.fusion)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        if attn_mask is not None:
            raise ValueError("ZeroSmooth's temporal attention takes no attention mask (attn1d variants only).")
        state = self.state
        if not state.corrects("temporal_self"):
            state.keep(self.key, x)
            return self.attend(x)
        h_q = state.operators["temporal"].backproject(x, state.bank_in[self.key])
        state.keep(self.key, x, h_q)
        return blend(state.lam, lambda: self.attend(h_q), lambda: self.attend(x))


@contextmanager
def correction_hooks(model: KeyframeUNet, state: CorrectionState) -> Iterator[CorrectionState]:
    """Install the ZeroSmooth hooks on ``model`` for the ``with`` block; the model is restored afterwards.

    Temporal attention must attend over frames only (``*_attn1d_*`` variants): Attn3D's 2x2-position windows
    mix frames and positions in one sequence.
    """
    blocks = model.temporal["blocks"]
    if any(isinstance(block, TemporalAttention3dBlock) for block in blocks.values()):
        raise ValueError(f"ZeroSmooth needs temporal attention over frames; variant {model.config['variant']!r} "
                         "attends within 2x2-position windows; use an attn1d variant.")
    spatial = {name: module for name, module in model.unet.named_modules() if isinstance(module, Attention)}
    originals = {name: module.processor for name, module in spatial.items()}
    temporal = {key: block for key, block in blocks.items() if isinstance(block, TemporalAttentionLayer)}
    try:
        for name, module in spatial.items():
            module.set_processor(SpatialCorrectionProcessor(name, originals[name], state))
        for key, block in temporal.items():
            block.attention = TemporalCorrectionAttention(key, block.attention, state)
        yield state
    finally:
        for name, module in spatial.items():
            module.set_processor(originals[name])
        for block in temporal.values():
            if isinstance(block.attention, TemporalCorrectionAttention):
                block.attention = block.attention.attention
