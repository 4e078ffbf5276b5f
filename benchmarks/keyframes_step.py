"""Keyframe-stage training step: ms/step and peak memory per KeyframeUNet variant vs the frozen 2D UNet.

A variant's step is forward + backward of the inflated model with respect to its temporal parameters and
an AdamW step. The references are the 2D UNet's own forward + backward on the same frames folded into the
batch, measured in the same run: frozen (gradients to its input only, the work the frozen spatial layers do
inside a keyframe step) and with weight gradients (a full fine-tuning step's compute, without optimiser).
Random weights throughout.

Sizes: ``shapes`` (unet2d: the shipped shapes-world UNet config; kandinsky3: a Kandinsky3UNet of similar
width), 16 frames of 16x16 latents, 32 text tokens x 128; ``paper`` (kandinsky3: Kandinsky3UNet at its
real size, i.e. the diffusers defaults, ~3B parameters; unet2d: SD-1.5 size), 16 frames of 64x64 latents,
128 text tokens x 4096 (77 x 768 for unet2d). With ``--dtype bf16`` the frozen UNet is stored in bf16, the
temporal parameters (and AdamW state) stay fp32, and every step runs under ``torch.autocast(bf16)``.
Each model is built fresh, so no hooks of another variant are attached. On CUDA: warm-up steps,
``torch.cuda.synchronize`` around the timed steps, ``torch.cuda.max_memory_allocated`` per model
(weights + optimiser state + activations); attention is diffusers' and timm's SDPA. Prints a markdown table: ms per
step, its ratio to both references, the model's FLOPs per step (matmuls, convolutions, attention; counted on the meta
device), clips/s, TFLOP/s, model FLOP utilisation (on CUDA, against Lightning's ``get_available_flops``) and peak
memory.
``--conv-compression N`` builds every variant with Conv1D bottlenecks C -> C/N (KandinskyVideo: 2; the Conv3D
blocks match that count); ``--compile-temporal`` runs ``KeyframeUNet.compile_temporal()`` on each variant
(torch.compile of the temporal modules only) and, with ``--peer``, compiles the peer's motion modules the same
way, so both sides have their trainable modules compiled and their frozen UNet eager; the warm-up steps absorb
the compilation. ``--cuda-graphs`` captures every measured model's forward and backward as CUDA graphs
(``GraphedTrainingCall``, what ``model.cuda_graphs=true`` does in training; the optimiser step stays eager) at the
first warm-up step and replays them; the table then also has the frozen UNet's eager forward + backward.
All three options are named in the table's first line. Autocast runs without
its weight-cast cache, as Lightning's does. ``--kernel-breakdown`` (CUDA) profiles each model's timed steps once
more with ``torch.profiler`` and adds a table of GPU kernel ms per step by kind (GEMMs, Inductor's kernels, AdamW,
copies, ...; graphed steps included), which shows where a step's time goes without launch gaps.

    uv run python benchmarks/keyframes_step.py --device cpu --dtype fp32 --steps 3
    uv run python benchmarks/keyframes_step.py --backbone kandinsky3 --size paper --device cuda --out k3.md
    uv run python benchmarks/keyframes_step.py --size paper --device cuda --peer   # vs AnimateDiff on SD-1.5 size
    uv run python benchmarks/keyframes_step.py --backbone kandinsky3 --size paper --device cuda --fused-adam \
        --variants conv1d_attn1d_blocks --conv-compression 4 --compile-temporal
    uv run python benchmarks/keyframes_step.py --backbone kandinsky3 --size paper --device cuda --fused-adam \
        --variants conv1d_attn1d_blocks --compile-temporal --cuda-graphs   # the fastest keyframe step
    uv run python benchmarks/keyframes_step.py --backbone kandinsky3 --size paper --device cuda --fused-adam \
        --variants conv1d_attn1d_blocks --compile-temporal --cuda-graphs --kernel-breakdown   # and by kernel kind
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from unittest import mock

import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel
from diffusers.models.unets.unet_kandinsky3 import Kandinsky3UNet
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
from diffusers.utils import logging as diffusers_logging
from einops import rearrange, repeat
from lightning.fabric.utilities.throughput import get_available_flops, measure_flops
from torch import nn
from torch.profiler import ProfilerActivity, profile

from fusionframes.diffusion.cuda_graph import GraphedTrainingCall
from fusionframes.models.keyframe_unet import VARIANTS, KeyframeUNet
from fusionframes.models.temporal import frame_positions
from fusionframes.utils.compilation import compile_each

ASSETS = Path(__file__).resolve().parent.parent / "fusionframes" / "assets" / "shapes"


@dataclass(frozen=True)
class Size:
    make_unet: Callable[[], nn.Module]
    latent: int
    tokens: int
    text_dim: int


SIZES: dict[tuple[str, str], Size] = {
    ("unet2d", "shapes"): Size(lambda: UNet2DConditionModel.from_config(
        json.loads((ASSETS / "t2i" / "unet" / "config.json").read_text())), 16, 32, 128),
    ("kandinsky3", "shapes"): Size(lambda: Kandinsky3UNet(
        time_embedding_dim=256, block_out_channels=(64, 128, 128, 256), layers_per_block=2,
        cross_attention_dim=128, encoder_hid_dim=128), 16, 32, 128),
    ("unet2d", "paper"): Size(lambda: UNet2DConditionModel(cross_attention_dim=768), 64, 77, 768),
    ("kandinsky3", "paper"): Size(Kandinsky3UNet, 64, 128, 4096),
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step: Callable[[], None], device: torch.device, steps: int, warmup: int) -> tuple[float, float | None]:
    """(ms per step, peak GiB allocated or None off CUDA) of ``step`` after ``warmup`` untimed calls;
    (nan, nan) if CUDA runs out of memory."""
    if device.type == "cuda":
        gc.collect()  # the models measured before, and their CUDA graphs' memory pools, are in reference cycles
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        return _timed(step, device, steps, warmup)
    except torch.cuda.OutOfMemoryError:
        return float("nan"), float("nan")


def _timed(step: Callable[[], None], device: torch.device, steps: int, warmup: int) -> tuple[float, float | None]:
    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    ms = 1000 * (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return ms, peak


# Kinds of CUDA kernels, by substrings of their names (the first kind that matches): a heuristic over the names that
# cuBLAS, cuDNN, FlashAttention, PyTorch's ATen and Inductor (whose generated kernels are all named triton_*) give.
KERNEL_KINDS = (
    ("Inductor's fused kernels", ("triton",)),
    ("cuDNN layout conversions", ("nchwToNhwc", "nhwcToNchw")),
    ("AdamW", ("Adam",)),
    ("attention", ("flash", "fmha", "attention", "Attention")),
    ("GEMMs and convolutions", ("gemm", "xmma", "nvjet", "cutlass", "sm90_", "sm80_", "cudnn", "conv", "splitK")),
    ("norms", ("group_norm", "GroupNorm", "layer_norm", "LayerNorm", "Moments")),
    ("copies and fills", ("copy", "Memcpy", "Memset", "fill", "Fill")),
)
OTHER_KERNELS = "other (elementwise, reductions)"
KINDS = [kind for kind, _ in KERNEL_KINDS] + [OTHER_KERNELS]  # the columns of the kernel table


def kernel_kind(name: str) -> str:
    return next((kind for kind, keys in KERNEL_KINDS if any(key in name for key in keys)), OTHER_KERNELS)


def kernel_ms(step: Callable[[], None], device: torch.device, steps: int) -> dict[str, float]:
    """GPU kernel ms per call of ``step`` by kind (``KERNEL_KINDS``, then ``OTHER_KERNELS``), summed by
    ``torch.profiler`` over ``steps`` calls; call it after warm-up. Kernels that CUDA graphs replay are counted too."""
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        synchronize(device)
    by_kind = dict.fromkeys(KINDS, 0.0)
    for event in prof.key_averages():
        by_kind[kernel_kind(event.key)] += event.self_device_time_total / steps / 1000
    return by_kind


def build(size: Size, device: torch.device, dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    with torch.device(device):
        unet = size.make_unet()
    return unet.to(dtype).train()


@dataclass(frozen=True)
class Run:
    """Inputs and settings shared by every measured model."""

    size: Size
    device: torch.device
    dtype: torch.dtype
    steps: int
    warmup: int
    sample: torch.Tensor  # (B, F, 4, h, w)
    context: torch.Tensor  # (B, L, D)
    mask: torch.Tensor  # (B, L) bool
    timestep: torch.Tensor  # (B,)
    cuda_graphs: bool = False
    kernels: list[dict[str, float]] | None = None  # each measured model's kernel ms by kind, in measuring order

    def measure(self, step: Callable[[], None]) -> tuple[float, float | None]:
        """(ms per step, peak GiB) of ``step``; with ``kernels``, its kernel ms by kind is appended there after."""
        ms, peak = timed(step, self.device, self.steps, self.warmup)
        if self.kernels is not None:
            self.kernels.append({} if math.isnan(ms) else kernel_ms(step, self.device, self.steps))  # {}: OOM
        return ms, peak

    def autocast(self) -> AbstractContextManager:
        """Autocast without its weight-cast cache, as Lightning runs it (and as CUDA graphs need)."""
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, self.dtype, cache_enabled=False)

    def call(self, module: nn.Module) -> Callable[..., torch.Tensor]:
        """``module`` itself, or with ``cuda_graphs`` its forward and backward replayed as CUDA graphs."""
        return GraphedTrainingCall(module) if self.cuda_graphs else module


class Sample(nn.Module):
    """``module(x, t, name=tensor, ...).sample`` called with positional tensors, the form a graphed call takes."""

    def __init__(self, module: nn.Module, *names: str) -> None:
        super().__init__()
        self.module = module
        self.names = names

    def forward(self, x: torch.Tensor, t: torch.Tensor, *tensors: torch.Tensor) -> torch.Tensor:
        return self.module(x, t, **dict(zip(self.names, tensors, strict=True))).sample


def frozen_inputs(sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                  mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The 2D UNet's inputs for a video batch with its frames folded into the batch, in the order of
    ``Sample(unet, "encoder_hidden_states", "encoder_attention_mask")``: sample (B·F, C, h, w), requiring grad (the
    reference's backward goes to its input), timestep (B·F,), text (B·F, L, D), mask (B·F, L)."""
    frames = sample.shape[1]
    folded = rearrange(sample, "b f c h w -> (b f) c h w").requires_grad_(True)
    return (folded, repeat(timestep, "b -> (b f)", f=frames), repeat(context, "b l d -> (b f) l d", f=frames),
            repeat(mask, "b l -> (b f) l", f=frames))


def measure_frozen(run: Run, weight_grads: bool = False) -> tuple[float, float | None, int]:
    """(ms, peak GiB, parameters) of the 2D UNet's forward + backward to its input (and, with ``weight_grads``,
    to its weights), frames in the batch."""
    unet = build(run.size, run.device, run.dtype).requires_grad_(weight_grads)
    inputs = frozen_inputs(run.sample, run.timestep, run.context, run.mask)
    folded = inputs[0]
    call = run.call(Sample(unet, "encoder_hidden_states", "encoder_attention_mask"))

    def step() -> None:
        with run.autocast():
            out = call(*inputs)
        out.float().square().mean().backward()
        folded.grad = None
        unet.zero_grad(set_to_none=True)

    return *run.measure(step), sum(p.numel() for p in unet.parameters())


def measure_variant(run: Run, variant: str, checkpointing: bool, fused: bool = False, spatial: bool = False,
                    compression: int = 2, compile_temporal: bool = False) -> tuple[float, float | None, int]:
    """(ms, peak GiB, temporal parameters) of a KeyframeUNet training step: forward, backward, AdamW step."""
    model = KeyframeUNet(build(run.size, run.device, run.dtype), variant, num_frames=run.sample.shape[1],
                         gradient_checkpointing=checkpointing, spatial_checkpointing=spatial,
                         conv_compression=compression, compile=compile_temporal)
    model.temporal.to(run.device, torch.float32)
    optimizer = torch.optim.AdamW(model.temporal_parameters(), lr=1e-4, fused=fused or None)
    target = torch.randn_like(run.sample, dtype=torch.float32)
    positions = frame_positions(*run.sample.shape[:2], device=run.device)
    call = run.call(model)

    def step() -> None:
        with run.autocast():
            out = call(run.sample, run.timestep, run.context, run.mask, positions)
        (out.float() - target).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return *run.measure(step), model.parameter_counts()["temporal"]


def animatediff(unet2d: UNet2DConditionModel) -> UNetMotionModel:
    """The AnimateDiff-style peer of ``unet2d``: diffusers' ``UNetMotionModel.from_unet2d`` with a fresh
    ``MotionAdapter`` (its defaults: 2 motion layers per block, 8 heads, a mid-block motion module), the 2D weights
    frozen (``freeze_unet2d_params``)."""
    config = unet2d.config
    adapter = MotionAdapter(block_out_channels=config.block_out_channels, motion_norm_num_groups=config.norm_num_groups,
                            motion_layers_per_block=config.layers_per_block)
    model = UNetMotionModel.from_unet2d(unet2d, adapter)
    model.freeze_unet2d_params()
    return model


def measure_animatediff(run: Run, checkpointing: bool, fused: bool = False,
                        compile_motion: bool = False) -> tuple[float, float | None, int]:
    """(ms, peak GiB, motion parameters) of the AnimateDiff-style peer's (``animatediff``) training step on the same
    2D UNet: forward, backward and AdamW over the motion modules. ``compile_motion``: ``torch.compile`` each motion
    module (``AnimateDiffTransformer3D``) in place, as ``KeyframeUNet.compile_temporal`` does for ours."""
    model = animatediff(build(run.size, run.device, torch.float32)).to(run.device, run.dtype)
    motion = [p for p in model.parameters() if p.requires_grad]
    for p in motion:
        p.data = p.data.float()
    model.train()
    if checkpointing:
        model.enable_gradient_checkpointing()
    if compile_motion:
        compile_each([m for m in model.modules() if isinstance(m, AnimateDiffTransformer3D)])
    optimizer = torch.optim.AdamW(motion, lr=1e-4, fused=fused or None)
    sample = rearrange(run.sample, "b f c h w -> b c f h w")
    context = repeat(run.context, "b l d -> (b f) l d", f=sample.shape[2])  # per frame, as AnimateDiffPipeline does
    target = torch.randn_like(sample, dtype=torch.float32)
    call = run.call(Sample(model, "encoder_hidden_states"))

    def step() -> None:
        with run.autocast():
            out = call(sample, run.timestep, context)
        (out.float() - target).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return *run.measure(step), sum(p.numel() for p in motion)


@contextmanager
def meta_device() -> Iterator[None]:
    """Build and run models on the meta device (shapes only: no memory, no kernels), with autocast a no-op (it has no
    meta backend and changes no FLOP count)."""
    with torch.device("meta"), mock.patch.object(torch, "autocast", lambda *args, **kwargs: nullcontext()):
        yield


def meta_inputs(size: Size, frames: int, batch: int) -> tuple[torch.Tensor, ...]:
    """Meta sample (B, F, 4, h, w), text (B, L, D), mask (B, L), timestep (B,) and frame positions (B, F)."""
    return (torch.randn(batch, frames, 4, size.latent, size.latent), torch.randn(batch, size.tokens, size.text_dim),
            torch.ones(batch, size.tokens, dtype=torch.bool), torch.zeros(batch, dtype=torch.long),
            frame_positions(batch, frames))


def frozen_flops(size: Size, frames: int, batch: int, weight_grads: bool = False) -> int:
    """Model FLOPs of the 2D UNet's forward + backward to its input (and, with ``weight_grads``, to its weights),
    frames in the batch: matmuls, convolutions and attention, counted by Lightning's ``measure_flops``
    (``FlopCounterMode``) on the meta device."""
    with meta_device():
        sample, context, mask, timestep, _ = meta_inputs(size, frames, batch)
        unet = Sample(size.make_unet().requires_grad_(weight_grads), "encoder_hidden_states", "encoder_attention_mask")
        inputs = frozen_inputs(sample, timestep, context, mask)
        return measure_flops(unet, lambda: unet(*inputs), torch.sum)


def variant_flops(size: Size, frames: int, batch: int, variant: str, compression: int = 2) -> int:
    """Model FLOPs of a KeyframeUNet step's forward + backward (temporal weight gradients included; without any
    recomputation, whatever checkpointing the timed step uses), counted as in ``frozen_flops``."""
    with meta_device():
        sample, context, mask, timestep, positions = meta_inputs(size, frames, batch)
        model = KeyframeUNet(size.make_unet(), variant, num_frames=frames, conv_compression=compression)
        return measure_flops(model, lambda: model(sample, timestep, context, mask, positions), torch.sum)


def peer_flops(size: Size, frames: int, batch: int) -> int:
    """Model FLOPs of the AnimateDiff-style peer's forward + backward (motion weight gradients included), counted as
    in ``frozen_flops``."""
    with meta_device():
        sample, context, _, timestep, _ = meta_inputs(size, frames, batch)
        model = Sample(animatediff(size.make_unet()), "encoder_hidden_states")
        sample, context = rearrange(sample, "b f c h w -> b c f h w"), repeat(context, "b l d -> (b f) l d", f=frames)
        return measure_flops(model, lambda: model(sample, timestep, context), torch.sum)


def throughput(flops: int, ms: float, batch: int, peak: int | None) -> str:
    """Table cells: clips/s, TFLOP/s and model FLOP utilisation (against ``peak`` FLOP/s; – without one)."""
    per_second = 1000 / ms
    utilisation = "–" if peak is None else f"{100 * flops * per_second / peak:.1f}%"
    return f"{batch * per_second:.2f} | {flops * per_second / 1e12:.4g} | {utilisation}"


def benchmark(backbone: str, size_name: str, device: torch.device, dtype: torch.dtype, variants: list[str],
              steps: int, warmup: int, frames: int, batch: int, checkpointing: bool, fused: bool = False,
              spatial: bool = False, peer: bool = False, compression: int = 2, compile_temporal: bool = False,
              cuda_graphs: bool = False, kernel_breakdown: bool = False) -> str:
    size = SIZES[backbone, size_name]
    torch.manual_seed(0)
    run = Run(size, device, dtype, steps, warmup,
              sample=torch.randn(batch, frames, 4, size.latent, size.latent, device=device, dtype=dtype),
              context=torch.randn(batch, size.tokens, size.text_dim, device=device, dtype=dtype),
              mask=torch.ones(batch, size.tokens, dtype=torch.bool, device=device),
              timestep=torch.randint(0, 1000, (batch,), device=device), cuda_graphs=cuda_graphs,
              kernels=[] if kernel_breakdown else None)
    # With graphs, the eager reference too (the issue's, 150-170 ms on an H100), first: before any graph's memory pool.
    reference = frozen_flops(size, frames, batch)
    eager = [("frozen 2D UNet fwd+bwd (to input), eager", *measure_frozen(replace(run, cuda_graphs=False))[:2], 0,
              reference)] if cuda_graphs else []
    base_ms, base_peak, frozen_params = measure_frozen(run)
    full_ms, full_peak, _ = measure_frozen(run, weight_grads=True)
    rows = [("frozen 2D UNet fwd+bwd (to input)", base_ms, base_peak, 0, reference),
            ("2D UNet fwd+bwd with weight gradients", full_ms, full_peak, 0, frozen_flops(size, frames, batch, True)),
            *eager]
    rows += [(variant, *measure_variant(run, variant, checkpointing, fused, spatial, compression, compile_temporal),
              variant_flops(size, frames, batch, variant, compression)) for variant in variants]
    if peer:
        rows.append(("AnimateDiff peer (UNetMotionModel + MotionAdapter)",
                     *measure_animatediff(run, checkpointing, fused, compile_temporal),
                     peer_flops(size, frames, batch)))
    peak_flops = get_available_flops(device, dtype) if device.type == "cuda" else None

    header = [f"{backbone} / {size_name}: {frozen_params / 1e6:,.1f}M frozen parameters, {batch}x{frames} frames of "
              f"{size.latent}x{size.latent} latents, text {size.tokens}x{size.text_dim}, {dtype}, {device} "
              f"({steps} timed steps after {warmup} warm-up"
              f"{', temporal gradient checkpointing' if checkpointing else ''}{', fused AdamW' if fused else ''}"
              f"{', spatial block checkpointing' if spatial else ''}"
              f"{f', Conv1D compression {compression}' if compression != 2 else ''}"
              f"{', temporal modules torch.compiled' if compile_temporal else ''}"
              f"{', forward and backward replayed as CUDA graphs' if cuda_graphs else ''})",
              "", "| model | ms/step | x frozen fwd+bwd (to input) | x fwd+bwd with weight grads | TFLOPs/step | "
              "clips/s | TFLOP/s | MFU | peak GiB | temporal params |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines = [f"| {name} | {ms:,.1f} | {ms / base_ms:.2f} | {ms / full_ms:.2f} | {flops / 1e12:.4g} | "
             f"{throughput(flops, ms, batch, peak_flops)} | {'n/a' if peak is None else f'{peak:.1f}'} | "
             f"{params / 1e6:,.2f}M |" for name, ms, peak, params, flops in rows]
    lines += ["", "TFLOPs/step: the model's matmul, convolution and attention FLOPs per step (FlopCounterMode on the "
              "meta device; no recomputation). MFU: TFLOP/s against the device's peak, "
              + ("which Lightning's get_available_flops does not know here (–)." if peak_flops is None else
                 f"{peak_flops / 1e12:,.1f} TFLOP/s for {torch.cuda.get_device_name(device)} in {dtype} "
                 f"(Lightning's get_available_flops).")]
    if kernel_breakdown:
        if cuda_graphs:  # the eager reference was measured first; its row comes after the graphed references
            run.kernels.insert(2, run.kernels.pop(0))
        lines += kernel_table([name for name, *_ in rows], run.kernels)
    return "\n".join(header + lines)


def kernel_table(names: list[str], kernels: list[dict[str, float]]) -> list[str]:
    """Markdown lines: each model's GPU kernel ms per step by kind and in total (nan for a model out of memory)."""
    lines = ["", "GPU kernel ms per step by kind (kinds by kernel name, KERNEL_KINDS in benchmarks/keyframes_step.py):",
             "", f"| model | {' | '.join(KINDS)} | total |", "|---|" + "---|" * (len(KINDS) + 1)]
    for name, by_kind in zip(names, kernels, strict=True):
        ms = [by_kind[kind] for kind in KINDS] + [sum(by_kind.values())] if by_kind else [math.nan] * (len(KINDS) + 1)
        lines.append(f"| {name} | {' | '.join(f'{v:.1f}' for v in ms)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", choices=["unet2d", "kandinsky3"], default="unet2d")
    parser.add_argument("--size", choices=["shapes", "paper"], default="shapes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing of temporal modules")
    parser.add_argument("--spatial-checkpointing", action="store_true",
                        help="activation checkpointing of the frozen UNet's blocks")
    parser.add_argument("--fused-adam", action="store_true", help="AdamW(fused=True) for the temporal parameters")
    parser.add_argument("--conv-compression", type=int, default=2,
                        help="Conv1D block bottleneck C -> C/N of every variant (KandinskyVideo: 2)")
    parser.add_argument("--compile-temporal", action="store_true",
                        help="torch.compile each variant's temporal modules (KeyframeUNet.compile_temporal) "
                             "and, with --peer, the peer's motion modules")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="capture every model's forward and backward as CUDA graphs (GraphedTrainingCall, as "
                             "model.cuda_graphs=true does in training), the references' and the peer's too")
    parser.add_argument("--peer", action="store_true",
                        help="also the AnimateDiff-style peer on the same 2D UNet (unet2d backbones only)")
    parser.add_argument("--kernel-breakdown", action="store_true",
                        help="also profile each model's timed steps again and tabulate their GPU kernel time by kind "
                             "(CUDA only)")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    args = parser.parse_args()
    if args.peer and args.backbone != "unet2d":
        parser.error(f"--peer needs --backbone unet2d (diffusers' MotionAdapter inflates a UNet2DConditionModel), "
                     f"got --backbone {args.backbone}.")
    if (args.compile_temporal or args.cuda_graphs) and args.warmup < 1:
        parser.error(f"--compile-temporal and --cuda-graphs need --warmup >= 1 (the first steps compile and capture), "
                     f"got --warmup {args.warmup}.")
    for flag, used in (("--cuda-graphs", args.cuda_graphs), ("--kernel-breakdown", args.kernel_breakdown)):
        if used and not args.device.startswith("cuda"):
            parser.error(f"{flag} needs a CUDA device, got --device {args.device}.")
    diffusers_logging.set_verbosity_error()
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    table = benchmark(args.backbone, args.size, torch.device(args.device), dtype, args.variants, args.steps,
                      args.warmup, args.frames, args.batch, args.checkpointing, args.fused_adam,
                      args.spatial_checkpointing, args.peer, args.conv_compression, args.compile_temporal,
                      args.cuda_graphs, args.kernel_breakdown)
    print(table)
    if args.out is not None:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
