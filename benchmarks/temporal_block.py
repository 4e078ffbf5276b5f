"""One temporal Conv1D block at the Kandinsky 3 paper-size shapes: training forward + backward, or a sampling call.

The keyframe step's time beyond the frozen UNet is its ~50 temporal blocks (``benchmarks/keyframes_step.py``); this
measures one ``TemporalConv1dBlock`` at a time, at the widths and latent sizes it has in the Kandinsky3UNet (16
frames; C channels at HxW: 384 at 64x64, 768 at 32x32, 1536 at 16x16, 3072 at 8x8, 9-11 blocks each, and 768 at
64x64, the widest up-path block), so a change to the block is measured without building the 3B-parameter UNet.
Each row has the wall time per step and, on CUDA, the sum of the GPU kernels' times (``torch.profiler``), which is
what a CUDA-graphed step costs (no launch gaps), with the cuDNN NCHW/NHWC layout conversions shown apart: where the
wall time is well above the kernel time, the step is bound by kernel launches. Training (default): bf16 input under
autocast on CUDA (fp32 elsewhere), fp32 parameters with random weights, gradients to the input and the parameters.
``--sampling``: the forward of a guided sampling call instead (two videos, conditional and unconditional, weights
cast to bf16 on CUDA, no autocast, inference mode), as ``sample.py precision=bf16-true`` runs it. ``--compile``
adds the ``torch.compile``d block.

    uv run python benchmarks/temporal_block.py --device cpu --shapes 64x8 --steps 2
    uv run python benchmarks/temporal_block.py --device cuda --compile
    uv run python benchmarks/temporal_block.py --device cuda --sampling
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import torch
from torch import nn

from benchmarks.keyframes_step import kernel_ms, timed
from fusionframes.models.temporal import TemporalConv1dBlock

FRAMES, EMB_DIM = 16, 1536
PAPER_SHAPES = ["384x64", "768x32", "1536x16", "3072x8", "768x64"]


def training_step(block: Callable, x: torch.Tensor, emb: torch.Tensor) -> Callable[[], None]:
    gradient = torch.randn_like(x)

    def step() -> None:
        with torch.autocast(x.device.type, torch.bfloat16, enabled=x.device.type == "cuda", cache_enabled=False):
            out = block(x, FRAMES, emb)
        out.backward(gradient)
        x.grad = None

    return step


def sampling_step(block: Callable, x: torch.Tensor, emb: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        with torch.inference_mode():
            block(x, FRAMES, emb)

    return step


def measure(step: Callable[[], None], device: torch.device, steps: int, warmup: int = 3) -> tuple[float, float, float]:
    """(wall ms per step, GPU kernel ms per step, of which cuDNN layout conversions; both nan off CUDA)."""
    wall = timed(step, device, steps, warmup)[0]
    if device.type != "cuda":
        return wall, float("nan"), float("nan")
    by_kind = kernel_ms(step, device, steps)
    return wall, sum(by_kind.values()), by_kind["cuDNN layout conversions"]


def table(shapes: list[str], device: torch.device, steps: int, compression: int, compiled: bool,
          sampling: bool = False) -> str:
    lines = [f"| C | HxW | mode | wall ms per {'sampling call' if sampling else 'fwd+bwd'} | GPU kernel ms | "
             "of which cuDNN layout conversions |", "|---|---|---|---|---|---|"]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    videos = 2 if sampling else 1  # a guided sampling call runs the conditional and the unconditional video
    for shape in shapes:
        channels, size = (int(v) for v in shape.split("x"))
        torch.manual_seed(0)
        block = TemporalConv1dBlock(channels, EMB_DIM, compression=compression).to(device)
        for p in block.parameters():
            nn.init.normal_(p, std=0.02)  # not the identity-at-init zeros: every path carries values
        if sampling:
            block.to(dtype)
        x = torch.randn(videos * FRAMES, channels, size, size, device=device, dtype=dtype, requires_grad=not sampling)
        emb = torch.randn(videos * FRAMES, EMB_DIM, device=device, dtype=dtype)
        modes = {"eager": block, **({"compiled": torch.compile(block, dynamic=False)} if compiled else {})}
        for mode, module in modes.items():
            step = (sampling_step if sampling else training_step)(module, x, emb)
            cells = [f"{v:.3f}" if not math.isnan(v) else "n/a" for v in measure(step, device, steps)]
            lines.append(f"| {channels} | {size}x{size} | {mode} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shapes", nargs="+", default=PAPER_SHAPES, help="CxS: C channels at SxS latents")
    parser.add_argument("--steps", type=int, default=5, help="measured steps per row, after 3 warm-up steps")
    parser.add_argument("--conv-compression", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also the torch.compiled block")
    parser.add_argument("--sampling", action="store_true", help="a guided sampling call's forward, bf16 weights")
    args = parser.parse_args()
    print(table(args.shapes, torch.device(args.device), args.steps, args.conv_compression, args.compile,
                args.sampling))


if __name__ == "__main__":
    main()
