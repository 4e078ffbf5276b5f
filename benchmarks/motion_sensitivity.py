"""Does the keyframe model use the prompt's motion? Denoising loss on true clips against controls.

For N shapes-world clips (16 keyframes, stride 12) and noise levels t, the epsilon MSE of the keyframe model
on the true clip with its caption, beside: the frozen 2D UNet frame by frame (no temporal modules), the
same clip with the caption's motion swapped for its opposite (left<->right, up<->down,
growing<->shrinking), the clip reversed in time with its true caption, and the empty caption. A model that
has learned text-controlled motion has a clearly higher loss for the swapped caption and the reversed clip
than for the true one; equal losses mean it predicts motion-symmetric frames. Mean over ``--seeds`` noises.

    uv run python benchmarks/motion_sensitivity.py --device cuda --clips 32
    uv run python benchmarks/motion_sensitivity.py --keyframes-dir outputs/.../export/keyframes
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fusionframes.data.samplers import frames_to_tensor
from fusionframes.data.shapes import ShapesWorld
from fusionframes.models.temporal import frame_positions
from fusionframes.pipeline import FusionFramesPipeline
from fusionframes.utils.resolvers import ASSETS_DIR

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up", "growing": "shrinking",
            "shrinking": "growing"}
COLUMNS = ("true clip and caption", "2D UNet only", "swapped motion in caption", "reversed clip", "empty caption")


def clips(pipeline: FusionFramesPipeline, count: int) -> tuple[torch.Tensor, list[str], list[str]]:
    """Latents (N, 16, C, h, w) of held-out-seed clips, their captions and the motion-swapped captions."""
    world = ShapesWorld(resolution=pipeline.resolution, num_frames=400, seed=5)
    videos, captions, swapped = [], [], []
    for index in range(count):
        scene = world.scene(index)
        videos.append(frames_to_tensor(world.render(scene, range(100, 100 + 15 * pipeline.frame_stride + 1,
                                                                 pipeline.frame_stride))))
        captions.append(scene.caption())
        swapped.append(captions[-1].replace(scene.motion, OPPOSITE[scene.motion]))
    return pipeline.codec.encode(torch.stack(videos).to(pipeline.device)), captions, swapped


@torch.no_grad()
def losses(pipeline: FusionFramesPipeline, count: int, timesteps: list[int], seeds: int) -> dict[int, list[float]]:
    z0, captions, swapped = clips(pipeline, count)
    device, schedule = pipeline.device, pipeline.t2i.schedule
    positions = frame_positions(count, z0.shape[1], pipeline.frame_stride, device)

    def loss(z: torch.Tensor, texts: list[str], t: int, temporal: bool = True) -> float:
        values = []
        for seed in range(seeds):
            noise = torch.randn(z.shape, generator=torch.Generator(device).manual_seed(seed), device=device)
            tt = torch.full((count,), t, device=device, dtype=torch.long)
            context, mask = pipeline.t2i.text_encoder.encode(texts)
            z_t = schedule.add_noise(z, noise, tt)
            if temporal:
                pred = pipeline.keyframes(z_t, tt, context, mask, positions)
            else:
                pred = torch.stack([pipeline.t2i.unet(z_t[:, i], tt, encoder_hidden_states=context,
                                                      encoder_attention_mask=mask).sample
                                    for i in range(z.shape[1])], dim=1)
            values.append(float((pred - noise).square().mean()))
        return sum(values) / len(values)

    return {t: [loss(z0, captions, t), loss(z0, captions, t, temporal=False), loss(z0, swapped, t),
                loss(z0.flip(1), captions, t), loss(z0, [""] * count, t)] for t in timesteps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline-dir", default=str(ASSETS_DIR / "shapes"))
    parser.add_argument("--keyframes-dir", default=None, help="replace the pipeline's keyframe stage")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[50, 200, 400, 600, 800, 950])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    pipeline = FusionFramesPipeline.from_pretrained(args.pipeline_dir, keyframes_dir=args.keyframes_dir)
    table = losses(pipeline.to(args.device), args.clips, args.timesteps, args.seeds)
    lines = [f"Keyframes {args.keyframes_dir or args.pipeline_dir}, {args.clips} clips, epsilon MSE, "
             f"mean of {args.seeds} noises.", "", "| t | " + " | ".join(COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 1) + "|"]
    lines += [f"| {t} | " + " | ".join(f"{v:.4f}" for v in row) + " |" for t, row in table.items()]
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
