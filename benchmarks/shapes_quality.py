"""Quality of the shipped (or given) pipeline against shapes-world ground truth.

Samples one video (``--repeats`` videos) for every (colour, shape, motion) prompt of the world, or of the
``--colours``, ``--shapes`` and ``--motions`` given (backgrounds cycle, speed "quickly"), measures colour
accuracy, direction accuracy and trajectory smoothness from the frames (fusionframes.metrics.shapes), and
scores the interpolator alone: 16 true keyframes of rendered videos -> one s=3 pass -> PSNR of the in-between
frames against the true ones. Prints a markdown table.

    uv run python benchmarks/shapes_quality.py --device cuda --out shapes_quality.md
    uv run python benchmarks/shapes_quality.py --limit 4 --steps 5     # quick CPU check
    # direction alone: 12 videos of a red circle per direction, keyframes only, no interpolation score
    uv run python benchmarks/shapes_quality.py --device cuda --colours red --shapes circle \\
        --motions left right up down --repeats 12 --fps keyframes --interpolation-videos 0
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio

from fusionframes.data.samplers import frames_to_tensor
from fusionframes.data.shapes import BACKGROUNDS, COLOURS, MOTIONS, SHAPES, ShapesWorld
from fusionframes.metrics.shapes import (
    classify_colour,
    classify_motion,
    detected_fraction,
    measure,
    smoothness,
)
from fusionframes.pipeline import FusionFramesPipeline
from fusionframes.utils.media import to_uint8
from fusionframes.utils.resolvers import ASSETS_DIR


def prompts(colours: list[str], shapes: list[str], motions: list[str], repeats: int = 1,
            limit: int | None = None) -> list[tuple[str, str, str]]:
    """(colour, shape, motion) for every combination, each ``repeats`` times, optionally the first ``limit``."""
    combos = [c for c in itertools.product(colours, shapes, motions) for _ in range(repeats)]
    return combos[:limit] if limit else combos


def caption(colour: str, shape: str, motion: str, index: int) -> str:
    background = [b for b in BACKGROUNDS][index % len(BACKGROUNDS)]
    verb = motion if motion in ("growing", "shrinking") else f"moving {motion}"
    return f"a {colour} {shape} {verb} quickly on a {background} background"


def generation_scores(pipeline: FusionFramesPipeline, args: argparse.Namespace) -> dict[str, float]:
    combos = prompts(args.colours, args.shapes, args.motions, args.repeats, args.limit)
    rows = []
    start = time.perf_counter()
    for i in range(0, len(combos), args.batch):
        chunk = combos[i: i + args.batch]
        texts = [caption(*c, i + j) for j, c in enumerate(chunk)]
        videos = pipeline(texts, fps=args.fps, num_inference_steps=args.steps, seed=args.seed + i,
                          progress=False, dtype=args.dtype)["video"]
        for (colour, _, motion), video in zip(chunk, videos):
            track = measure(to_uint8(video))
            rows.append((classify_colour(np.nanmean(track.colour, axis=0)) == colour,
                         classify_motion(track) == motion, smoothness(track), detected_fraction(track)))
    colour_ok, motion_ok, smooth, detected = (np.array(c, dtype=np.float64) for c in zip(*rows))
    motions = np.array([motion for _, _, motion in combos])
    per_motion = {f"direction accuracy, {m}": motion_ok[motions == m].mean() for m in MOTIONS if (motions == m).any()}
    return {"prompts": len(rows), "colour accuracy": colour_ok.mean(), "direction accuracy": motion_ok.mean(),
            **per_motion, "smoothness (lower is smoother)": np.nanmean(smooth),
            "shape detected in frames": detected.mean(), "seconds per video": (time.perf_counter() - start) / len(rows)}


def interpolation_psnr(pipeline: FusionFramesPipeline, count: int, steps: int) -> float:
    """Mean PSNR (dB, frames in [0, 1]) of s=3 in-betweens from 16 true keyframes against the true frames."""
    world = ShapesWorld(resolution=pipeline.resolution, num_frames=400, seed=99)
    scores = []
    for index in range(count):
        frames = frames_to_tensor(world.render(world.scene(index), range(0, 181, 3))).to(pipeline.device)
        keyframes = pipeline.codec.encode(frames[::4][None])
        latents = pipeline.interpolation.interpolate(keyframes, 3, pipeline.interpolation_schedule, steps,
                                                     generator=torch.Generator(pipeline.device).manual_seed(index))
        video = pipeline.decode(latents)[0].float().clamp(-1, 1)
        between = torch.ones(len(frames), dtype=torch.bool)
        between[::4] = False
        scores.append(peak_signal_noise_ratio((video[between] + 1) / 2, (frames[between] + 1) / 2, data_range=1.0))
    return float(torch.stack(scores).mean())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline-dir", default=str(ASSETS_DIR / "shapes"))
    parser.add_argument("--keyframes-dir", default=None, help="replace the pipeline's keyframe stage")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--fps", default="medium", choices=["keyframes", "medium", "high"])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=24)
    parser.add_argument("--colours", nargs="+", default=list(COLOURS), choices=list(COLOURS))
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--motions", nargs="+", default=list(MOTIONS), choices=list(MOTIONS))
    parser.add_argument("--repeats", type=int, default=1, help="videos per prompt (backgrounds and noise differ)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    parser.add_argument("--interpolation-videos", type=int, default=16, help="0 skips the interpolation score")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats} must be at least 1.")
    args.dtype = torch.bfloat16 if args.device.startswith("cuda") else None
    pipeline = FusionFramesPipeline.from_pretrained(args.pipeline_dir, keyframes_dir=args.keyframes_dir).to(args.device)
    with torch.no_grad():
        scores = generation_scores(pipeline, args)
        if args.interpolation_videos:
            scores["interpolation PSNR (dB), s=3, true keyframes"] = interpolation_psnr(
                pipeline, args.interpolation_videos, 10)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    lines = [f"Pipeline {args.pipeline_dir}, fps={args.fps}, {args.steps} keyframe steps, {device}.", "",
             "| score | value |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in scores.items()]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
