"""Which trajectory do the first sampling steps commit to? The clean clip each motion word predicts from noise.

Sampling starts from pure noise; at its first DDIM steps (t ~ 980-900 on the shapes schedule) the keyframe model's
clean-clip estimate decides where the shape goes, and the later steps refine it. For each of the four directions,
the model denoises the same batch of unit-Gaussian latents x_t at each step t of ``--timesteps`` with the caption
"a <colour> <shape> moving <direction> <speed> on a <background> background"; the predicted clean clip is decoded
and the first-to-last shift of the shape's centroid measured from the pixels (``fusionframes.metrics.shapes``).
A model whose prompt sets the direction moves the shape the prompt's way at these steps; shifts that agree across
opposite words mean the noise, not the prompt, picks the direction (docs/shapes_pipeline.md, "Positions on the text
attention").

    uv run python benchmarks/trajectory_probe.py --device cuda --keyframes-dir outputs/.../export/keyframes
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from fusionframes.data.shapes import BACKGROUNDS, COLOURS, DIRECTIONS, SHAPES, SPEEDS
from fusionframes.metrics.shapes import centroid_shift, measure
from fusionframes.models.temporal import frame_positions
from fusionframes.pipeline import FusionFramesPipeline
from fusionframes.utils.media import to_uint8
from fusionframes.utils.resolvers import ASSETS_DIR


@torch.no_grad()
def predicted_shifts(pipeline: FusionFramesPipeline, caption: str, noise: torch.Tensor,
                     timesteps: list[int]) -> dict[int, np.ndarray]:
    """{t: mean (dx, dy) pixels over the batch} of the clean clip predicted from ``noise`` (N, F, C, h, w) at t."""
    p = pipeline
    n, num_frames = noise.shape[:2]
    context, mask = p.t2i.text_encoder.encode([caption] * n)
    positions = frame_positions(n, num_frames, p.frame_stride, p.device)
    shifts = {}
    for t in timesteps:
        tt = torch.full((n,), t, device=p.device, dtype=torch.long)
        x0 = p.t2i.schedule.pred_to_x0(p.keyframes(noise, tt, context, mask, positions), noise, tt)
        videos = to_uint8(p.codec.decode(x0))
        shifts[t] = np.nanmean([centroid_shift(measure(video)) for video in videos], axis=0)
    return shifts


def probe(pipeline: FusionFramesPipeline, timesteps: list[int], batch: int, seed: int = 0, colour: str = "red",
          shape: str = "circle", speed: str = "quickly", background: str = "black") -> dict[str, dict[int, np.ndarray]]:
    """{direction: {t: (dx, dy)}}, every direction denoising the same noise."""
    size = pipeline.resolution // pipeline.codec.factor
    latents = (batch, pipeline.keyframes.num_frames, pipeline.codec.channels, size, size)
    noise = torch.randn(latents, generator=torch.Generator().manual_seed(seed)).to(pipeline.device)
    return {direction: predicted_shifts(
        pipeline, f"a {colour} {shape} moving {direction} {speed} on a {background} background", noise, timesteps)
        for direction in DIRECTIONS}


def table(shifts: dict[str, dict[int, np.ndarray]]) -> str:
    """Markdown: a row per direction, "dx / dy" per timestep."""
    timesteps = list(next(iter(shifts.values())))
    lines = ["| direction | " + " | ".join(f"t = {t}: dx / dy" for t in timesteps) + " |",
             "|---" * (len(timesteps) + 1) + "|"]
    lines += [f"| {d} | " + " | ".join(f"{row[t][0]:+.1f} / {row[t][1]:+.1f}" for t in timesteps) + " |"
              for d, row in shifts.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline-dir", default=str(ASSETS_DIR / "shapes"))
    parser.add_argument("--keyframes-dir", default=None, help="replace the pipeline's keyframe stage")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--timesteps", type=int, nargs="+", default=[980, 940, 900, 850, 700])
    parser.add_argument("--batch", type=int, default=8, help="noise samples averaged per caption")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--colour", default="red", choices=list(COLOURS))
    parser.add_argument("--shape", default="circle", choices=list(SHAPES))
    parser.add_argument("--speed", default="quickly", choices=list(SPEEDS))
    parser.add_argument("--background", default="black", choices=list(BACKGROUNDS))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error(f"--batch must be >= 1, got {args.batch}.")
    pipeline = FusionFramesPipeline.from_pretrained(args.pipeline_dir, keyframes_dir=args.keyframes_dir)
    num_train = pipeline.t2i.schedule.num_train_timesteps
    if any(not 0 <= t < num_train for t in args.timesteps):
        parser.error(f"--timesteps must lie in [0, {num_train}), got {args.timesteps}.")
    shifts = probe(pipeline.to(args.device), args.timesteps, args.batch, args.seed, args.colour, args.shape,
                   args.speed, args.background)
    text = (f"Keyframes {args.keyframes_dir or args.pipeline_dir}: first-to-last centroid shift (pixels) of the clean "
            f"clip predicted from {args.batch} pure-noise latents (seed {args.seed}).\n\n{table(shifts)}")
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
