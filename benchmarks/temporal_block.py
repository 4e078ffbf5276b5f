"""One temporal Conv1D block's forward + backward at the Kandinsky 3 paper-size shapes, eager and compiled.

The keyframe step's time beyond the frozen UNet is its ~50 temporal blocks (``benchmarks/keyframes_step.py``); this
measures one ``TemporalConv1dBlock`` at a time, at the widths and latent sizes it has in the Kandinsky3UNet (16
frames; C channels at HxW: 384 at 64x64, 768 at 32x32, 1536 at 16x16, 3072 at 8x8, 9-11 blocks each, and 768 at
64x64, the widest up-path block), so a change to the block is measured without building the 3B-parameter UNet.
On CUDA the time is the sum of the GPU kernels' times over the profiled steps (``torch.profiler``), which is what a
CUDA-graphed step costs (no launch gaps), with the cuDNN NCHW/NHWC layout conversions shown apart; elsewhere it is
wall time. The input is bf16 under autocast on CUDA (fp32 elsewhere), the block's parameters fp32 with random
weights, gradients to the input and the parameters; ``--compile`` adds the ``torch.compile``d block.

    uv run python benchmarks/temporal_block.py --device cpu --shapes 64x8 --steps 2
    uv run python benchmarks/temporal_block.py --device cuda --compile
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from benchmarks.keyframes_step import synchronize, timed
from fusionframes.models.temporal import TemporalConv1dBlock

FRAMES, EMB_DIM = 16, 1536
PAPER_SHAPES = ["384x64", "768x32", "1536x16", "3072x8", "768x64"]
LAYOUT_KERNELS = ("nchwToNhwc", "nhwcToNchw")


def step_function(block: Callable, x: torch.Tensor, emb: torch.Tensor, gradient: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        with torch.autocast(x.device.type, torch.bfloat16, enabled=x.device.type == "cuda", cache_enabled=False):
            out = block(x, FRAMES, emb)
        out.backward(gradient)
        x.grad = None

    return step


def measure(step: Callable[[], None], device: torch.device, steps: int, warmup: int = 3) -> tuple[float, float]:
    """(ms per step, of which ms in cuDNN layout conversions; nan off CUDA)."""
    if device.type != "cuda":
        return timed(step, device, steps, warmup)[0], float("nan")
    for _ in range(warmup):
        step()
    synchronize(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        synchronize(device)
    events = prof.key_averages()
    total = sum(e.self_device_time_total for e in events)
    layout = sum(e.self_device_time_total for e in events if any(k in e.key for k in LAYOUT_KERNELS))
    return total / steps / 1000, layout / steps / 1000


def table(shapes: list[str], device: torch.device, steps: int, compression: int, compiled: bool) -> str:
    lines = ["| C | HxW | mode | ms per fwd+bwd | of which cuDNN layout conversions |", "|---|---|---|---|---|"]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    for shape in shapes:
        channels, size = (int(v) for v in shape.split("x"))
        torch.manual_seed(0)
        block = TemporalConv1dBlock(channels, EMB_DIM, compression=compression).to(device)
        for p in block.parameters():
            nn.init.normal_(p, std=0.02)  # not the identity-at-init zeros: every path carries values
        x = torch.randn(FRAMES, channels, size, size, device=device, dtype=dtype, requires_grad=True)
        emb, gradient = torch.randn(FRAMES, EMB_DIM, device=device, dtype=dtype), torch.randn_like(x)
        modes = {"eager": block, **({"compiled": torch.compile(block, dynamic=False)} if compiled else {})}
        for mode, module in modes.items():
            ms, layout = measure(step_function(module, x, emb, gradient), device, steps)
            lines.append(f"| {channels} | {size}x{size} | {mode} | {ms:.3f} | "
                         f"{'n/a' if math.isnan(layout) else f'{layout:.3f}'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shapes", nargs="+", default=PAPER_SHAPES, help="CxS: C channels at SxS latents")
    parser.add_argument("--steps", type=int, default=5, help="measured steps per row, after 3 warm-up steps")
    parser.add_argument("--conv-compression", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also the torch.compiled block")
    args = parser.parse_args()
    print(table(args.shapes, torch.device(args.device), args.steps, args.conv_compression, args.compile))


if __name__ == "__main__":
    main()
