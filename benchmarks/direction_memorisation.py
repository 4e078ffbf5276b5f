"""Can a keyframe model tie the motion word to its frames at all? Memorise four clips that differ only in it.

Four 181-frame clips of one red circle on black, moving left, right, up and down across the whole frame
(16 keyframes, stride 12), are the whole training set. Fresh temporal modules on the shipped frozen T2I
train on them (AdamW, the noise-prediction loss, optionally ``--high-noise-gamma``) for ``--seconds``
(timesteps drawn from ``[--t-min, T)``), then ``--seeds`` videos per caption are sampled from pure noise (DDIM with
``--timestep-spacing``, no guidance: the captions are never dropped) and their motion is measured from the
pixels. A model that ties the motion word to the frames reproduces each caption's clip (accuracy 1); a model
that memorised the clips but not the word picks one of them by the noise (accuracy about 1/4, with large
displacements in random directions). So far every configuration has done the latter, temporal cross-attention
to the text included (docs/shapes_pipeline.md, "Where the motion word is lost" and "Temporal
cross-attention to the text on GPUs").

    uv run python benchmarks/direction_memorisation.py --device cuda --seconds 400
    uv run python benchmarks/direction_memorisation.py --device cuda --variant conv3d_attn1d_blocks --text-conditioning
    uv run python benchmarks/direction_memorisation.py --device cuda --text-cross-attention --t-min 900 \
        --high-noise-gamma 1000 --timestep-spacing trailing
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from fusionframes.data.samplers import frames_to_tensor
from fusionframes.data.shapes import DIRECTIONS, ShapeScene, ShapesWorld
from fusionframes.diffusion.sampling import sample
from fusionframes.diffusion.schedule import NoiseSchedule
from fusionframes.metrics.shapes import centroid_shift, classify_motion, measure
from fusionframes.models.keyframe_unet import VARIANTS, KeyframeUNet
from fusionframes.models.latents import LatentCodec
from fusionframes.models.t2i import TextToImageModel
from fusionframes.models.temporal import frame_positions
from fusionframes.utils.media import to_uint8
from fusionframes.utils.resolvers import ASSETS_DIR

STRIDE, FRAMES = 12, 16


def scenes(resolution: int = 64) -> list[ShapeScene]:
    """One red circle of radius 8 crossing the frame through its centre in each direction over 180 source frames."""
    speed = (resolution - 24) / (STRIDE * (FRAMES - 1))
    centre = resolution / 2
    return [ShapeScene("circle", "red", "black", word, "quickly", (centre - dx * speed * 90, centre - dy * speed * 90),
                       (dx * speed, dy * speed), 8.0, 0.0) for word, (dx, dy) in DIRECTIONS.items()]


def run(args: argparse.Namespace) -> dict[str, tuple[float, np.ndarray]]:
    """{direction: (accuracy, mean displacement (dx, dy) in pixels)} of the sampled videos."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    t2i = TextToImageModel.from_pretrained(ASSETS_DIR / "shapes" / "t2i").to(device)
    schedule = t2i.schedule
    if not 0 <= args.t_min < schedule.num_train_timesteps:
        raise ValueError(f"--t-min {args.t_min} is out of range; use 0..{schedule.num_train_timesteps - 1}.")
    codec = LatentCodec.from_pretrained(ASSETS_DIR / "shapes" / "movq").to(device)
    model = KeyframeUNet(t2i.unet, args.variant, num_frames=FRAMES, text_conditioning=args.text_conditioning,
                         text_cross_attention=args.text_cross_attention).to(device)
    world = ShapesWorld(num_frames=STRIDE * (FRAMES - 1) + 1)
    clips = scenes(world.resolution)
    captions = [scene.caption() for scene in clips]
    with torch.no_grad():
        video = torch.stack([frames_to_tensor(world.render(s, range(0, world.num_frames, STRIDE))) for s in clips])
        z0 = codec.encode(video.to(device))
        context, mask = t2i.text_encoder.encode(captions)
    positions = frame_positions(len(clips), FRAMES, STRIDE, device)
    optimizer = torch.optim.AdamW(list(model.temporal_parameters()), lr=args.lr)
    start, step = time.perf_counter(), 0
    while step < args.max_steps and time.perf_counter() - start < args.seconds:
        t = torch.randint(args.t_min, schedule.num_train_timesteps, (len(clips),), device=device)
        noise = torch.randn_like(z0)
        pred = model(schedule.add_noise(z0, noise, t), t, context, mask, positions)
        loss = schedule.loss(pred, z0, noise, t, high_noise_gamma=args.high_noise_gamma)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
    print(f"{step} steps in {time.perf_counter() - start:.0f} s, last loss {loss.item():.4f}")
    n = args.seeds * len(clips)
    sampling = NoiseSchedule.from_scheduler_config({**schedule.scheduler_config,
                                                    "timestep_spacing": args.timestep_spacing}).to(device)
    with torch.no_grad():
        latents = sample(lambda z, t: model(z, t, context.repeat(args.seeds, 1, 1), mask.repeat(args.seeds, 1),
                                            positions.repeat(args.seeds, 1)),
                         (n, *z0.shape[1:]), sampling, args.steps, generator=torch.Generator(device).manual_seed(0),
                         progress=False, device=device)
        videos = codec.decode(latents).clamp(-1, 1)
    results: dict[str, list[tuple[bool, np.ndarray]]] = {}
    for i, video in enumerate(videos):
        word = clips[i % len(clips)].motion
        track = measure(to_uint8(video))
        results.setdefault(word, []).append((classify_motion(track) == word, centroid_shift(track)))
    return {word: (float(np.mean([ok for ok, _ in rows])), np.nanmean([s for _, s in rows], axis=0))
            for word, rows in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variant", default="conv1d_attn1d_blocks", choices=list(VARIANTS))
    parser.add_argument("--text-conditioning", action="store_true", help="pooled text in the temporal norms")
    parser.add_argument("--text-cross-attention", action="store_true", help="temporal cross-attention to the text")
    parser.add_argument("--high-noise-gamma", type=float, default=None)
    parser.add_argument("--t-min", type=int, default=0, help="train on timesteps t_min..T-1 only")
    parser.add_argument("--timestep-spacing", default="leading", choices=["leading", "trailing", "linspace"],
                        help="DDIM timestep spacing of the sampler (diffusers' option)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seconds", type=float, default=400.0)
    parser.add_argument("--max-steps", type=int, default=10**9)
    parser.add_argument("--seeds", type=int, default=4, help="videos sampled per caption")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    args = parser.parse_args()
    table = run(args)
    print("| direction | accuracy | mean displacement (dx, dy) px |\n|---|---|---|")
    for word, (accuracy, shift) in table.items():
        print(f"| {word} | {accuracy:.2f} | {shift[0]:+.1f}, {shift[1]:+.1f} |")


if __name__ == "__main__":
    main()
