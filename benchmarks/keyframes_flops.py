"""Matmul, convolution and attention FLOPs of a keyframe training step against the frozen UNet's forward + backward.

Counted by ``torch.utils.flop_counter.FlopCounterMode`` on the meta device (no memory, no GPU, seconds at paper size),
for the sizes of ``benchmarks/keyframes_step.py``: the frozen 2D UNet's forward + backward to its input (the
reference of the keyframe-step target) and each KeyframeUNet variant's forward + backward (temporal weight gradients
included) at each Conv1D compression. The ratio is the step's lower bound against the reference if both ran at the
same FLOP rate; the measured ratios of ``keyframes_step.py`` above it are the memory-bound work (norms, layout
changes, launches). Autocast is replaced by a no-op, as it has no meta backend; it does not change the FLOPs.

    uv run python benchmarks/keyframes_flops.py --backbone kandinsky3 --compressions 2 4 8
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from unittest import mock

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.keyframes_step import SIZES, Sample, Size, frozen_inputs
from fusionframes.models.keyframe_unet import VARIANTS, KeyframeUNet
from fusionframes.models.temporal import frame_positions


def flops(step) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def table(size: Size, variants: list[str], compressions: list[int], frames: int = 16) -> str:
    with torch.device("meta"), mock.patch.object(torch, "autocast", lambda *args, **kwargs: nullcontext()):
        sample = torch.randn(1, frames, 4, size.latent, size.latent)
        context, mask = torch.randn(1, size.tokens, size.text_dim), torch.ones(1, size.tokens, dtype=torch.bool)
        timestep, positions = torch.zeros(1, dtype=torch.long), frame_positions(1, frames)
        unet = Sample(size.make_unet().requires_grad_(False), "encoder_hidden_states", "encoder_attention_mask")
        inputs = frozen_inputs(sample, timestep, context, mask)
        reference = flops(lambda: unet(*inputs).sum().backward())
        lines = ["| model | Conv1D compression | TFLOPs | x frozen fwd+bwd (to input) |", "|---|---|---|---|",
                 f"| frozen 2D UNet fwd+bwd (to input) | – | {reference / 1e12:.2f} | 1.00 |"]
        for variant in variants:
            for compression in compressions:
                model = KeyframeUNet(size.make_unet(), variant, num_frames=frames, conv_compression=compression)
                step = flops(lambda: model(sample, timestep, context, mask, positions).sum().backward())
                lines.append(f"| {variant} | {compression} | {step / 1e12:.2f} | {step / reference:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", choices=["unet2d", "kandinsky3"], default="kandinsky3")
    parser.add_argument("--size", choices=["shapes", "paper"], default="paper")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--compressions", nargs="+", type=int, default=[2])
    args = parser.parse_args()
    print(table(SIZES[args.backbone, args.size], args.variants, args.compressions))


if __name__ == "__main__":
    main()
