"""Matmul, convolution and attention FLOPs of a keyframe training step against the frozen UNet's forward + backward.

Counted by Lightning's ``measure_flops`` (``FlopCounterMode``) on the meta device (no memory, no GPU, seconds at paper
size), for the sizes of ``benchmarks/keyframes_step.py``: the frozen 2D UNet's forward + backward to its input (the
reference of the keyframe-step target) and each KeyframeUNet variant's forward + backward (temporal weight gradients
included) at each Conv1D compression. The ratio is the step's lower bound against the reference if both ran at the
same FLOP rate; the measured ratios of ``keyframes_step.py`` above it are the memory-bound work (norms, layout
changes, launches). The counting functions are ``keyframes_step.py``'s (``frozen_flops``, ``variant_flops``), which
also give that script's MFU column.

    uv run python benchmarks/keyframes_flops.py --backbone kandinsky3 --compressions 2 4 8
"""

from __future__ import annotations

import argparse

from benchmarks.keyframes_step import SIZES, Size, frozen_flops, variant_flops
from fusionframes.models.keyframe_unet import VARIANTS


def table(size: Size, variants: list[str], compressions: list[int], frames: int = 16) -> str:
    reference = frozen_flops(size, frames, batch=1)
    lines = ["| model | Conv1D compression | TFLOPs | x frozen fwd+bwd (to input) |", "|---|---|---|---|",
             f"| frozen 2D UNet fwd+bwd (to input) | – | {reference / 1e12:.2f} | 1.00 |"]
    for variant in variants:
        for compression in compressions:
            step = variant_flops(size, frames, 1, variant, compression)
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
