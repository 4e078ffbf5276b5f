"""Does the keyframe model use the prompt's motion? Denoising loss on true clips against controls.

For N shapes-world clips (16 keyframes, stride 12) and noise levels t, the epsilon MSE of the keyframe model
on the true clip with its caption, beside: the frozen 2D UNet frame by frame (no temporal modules), the
same clip with the caption's motion swapped for its opposite (left<->right, up<->down,
growing<->shrinking), the clip reversed in time with its true caption, and the empty caption. A model that
has learned text-controlled motion has a clearly higher loss for the swapped caption and the reversed clip
than for the true one; equal losses mean it predicts motion-symmetric frames. Mean over ``--seeds`` noises.

A second table asks where the caption's words act at all: the relative change ||pred(c') - pred(c)|| / ||pred(c)||
of the prediction on the noised true clips when one word of the caption c is swapped (motion for its opposite;
colour, shape, background and speed for another value of the world), for the keyframe model and for the frozen 2D
UNet frame by frame. A keyframe model whose motion column is no larger than the 2D UNet's reads the motion word
only as the frozen spatial layers do.

    uv run python benchmarks/motion_sensitivity.py --device cuda --clips 32
    uv run python benchmarks/motion_sensitivity.py --keyframes-dir outputs/.../export/keyframes
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from fusionframes.data.samplers import frames_to_tensor
from fusionframes.data.shapes import BACKGROUNDS, COLOURS, SHAPES, SPEEDS, ShapeScene, ShapesWorld
from fusionframes.models.temporal import frame_positions
from fusionframes.pipeline import FusionFramesPipeline
from fusionframes.utils.resolvers import ASSETS_DIR

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up", "growing": "shrinking",
            "shrinking": "growing"}
COLUMNS = ("true clip and caption", "2D UNet only", "swapped motion in caption", "reversed clip", "empty caption")
WORDS = ("motion", "colour", "shape", "background", "speed")


def next_value(value: str, values: tuple[str, ...]) -> str:
    """The value after ``value`` in ``values`` (cyclic)."""
    return values[(values.index(value) + 1) % len(values)]


def swapped_caption(scene: ShapeScene, word: str) -> str:
    """``scene``'s caption with one attribute (one of ``WORDS``) changed: the motion to its opposite, the others to the
    next value of the world."""
    values = {"colour": tuple(COLOURS), "shape": SHAPES, "background": tuple(BACKGROUNDS), "speed": SPEEDS}
    new = OPPOSITE[scene.motion] if word == "motion" else next_value(getattr(scene, word), values[word])
    return replace(scene, **{word: new}).caption()


def clips(pipeline: FusionFramesPipeline, count: int) -> tuple[torch.Tensor, list[ShapeScene]]:
    """Latents (N, 16, C, h, w) of held-out-seed clips and their scenes."""
    world = ShapesWorld(resolution=pipeline.resolution, num_frames=400, seed=5)
    scenes = [world.scene(index) for index in range(count)]
    frames = range(100, 100 + 15 * pipeline.frame_stride + 1, pipeline.frame_stride)
    videos = torch.stack([frames_to_tensor(world.render(scene, frames)) for scene in scenes])
    return pipeline.codec.encode(videos.to(pipeline.device)), scenes


class Denoiser:
    """The keyframe model (or the frozen 2D UNet frame by frame) on ``count`` held-out clips (``clips``), noised at t.

    ``z0`` (N, F, C, h, w), ``scenes`` and their ``captions`` are rendered and encoded once, for every table.
    """

    def __init__(self, pipeline: FusionFramesPipeline, count: int) -> None:
        self.pipeline = pipeline
        self.z0, self.scenes = clips(pipeline, count)
        self.captions = [scene.caption() for scene in self.scenes]
        self.positions = frame_positions(count, self.z0.shape[1], pipeline.frame_stride, pipeline.device)

    def noise(self, seed: int) -> torch.Tensor:
        return torch.randn(self.z0.shape, generator=torch.Generator(self.pipeline.device).manual_seed(seed),
                           device=self.pipeline.device)

    @torch.no_grad()
    def __call__(self, texts: list[str], t: int, noise: torch.Tensor, temporal: bool = True,
                 reverse: bool = False) -> torch.Tensor:
        """Epsilon prediction (N, F, C, h, w) for ``texts`` at timestep ``t`` (the clips reversed in time if asked)."""
        p = self.pipeline
        z0 = self.z0.flip(1) if reverse else self.z0
        tt = torch.full((len(z0),), t, device=p.device, dtype=torch.long)
        context, mask = p.t2i.text_encoder.encode(texts)
        z_t = p.t2i.schedule.add_noise(z0, noise, tt)
        if temporal:
            return p.keyframes(z_t, tt, context, mask, self.positions)
        return torch.stack([p.t2i.unet(z_t[:, i], tt, encoder_hidden_states=context, encoder_attention_mask=mask).sample
                            for i in range(z0.shape[1])], dim=1)


def losses(denoise: Denoiser, timesteps: list[int], seeds: int) -> dict[int, list[float]]:
    """{t: the epsilon MSE of each of ``COLUMNS``}, mean over ``seeds`` noises."""
    captions = denoise.captions
    swapped = [swapped_caption(scene, "motion") for scene in denoise.scenes]

    def loss(texts: list[str], t: int, **options: bool) -> float:
        noises = [denoise.noise(seed) for seed in range(seeds)]
        return sum(float((denoise(texts, t, n, **options) - n).square().mean()) for n in noises) / seeds

    return {t: [loss(captions, t), loss(captions, t, temporal=False), loss(swapped, t), loss(captions, t, reverse=True),
                loss([""] * len(captions), t)] for t in timesteps}


def word_sensitivity(denoise: Denoiser, timesteps: list[int], seeds: int) -> dict[int, dict[str, tuple[float, float]]]:
    """{t: {word: (keyframe model, 2D UNet)}}: relative change of the prediction when ``word`` of the caption is
    swapped (``swapped_caption``), mean over ``seeds`` noises."""
    swapped = {word: [swapped_caption(scene, word) for scene in denoise.scenes] for word in WORDS}
    table = {}
    for t in timesteps:
        change = {(word, temporal): 0.0 for word in WORDS for temporal in (True, False)}
        for seed in range(seeds):
            noise = denoise.noise(seed)
            for temporal in (True, False):
                pred = denoise(denoise.captions, t, noise, temporal)
                for word in WORDS:
                    other = denoise(swapped[word], t, noise, temporal)
                    change[word, temporal] += float((other - pred).norm() / pred.norm()) / seeds
        table[t] = {word: (change[word, True], change[word, False]) for word in WORDS}
    return table


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
    denoise = Denoiser(pipeline.to(args.device), args.clips)
    table = losses(denoise, args.timesteps, args.seeds)
    lines = [f"Keyframes {args.keyframes_dir or args.pipeline_dir}, {args.clips} clips, epsilon MSE, "
             f"mean of {args.seeds} noises.", "", "| t | " + " | ".join(COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 1) + "|"]
    lines += [f"| {t} | " + " | ".join(f"{v:.4f}" for v in row) + " |" for t, row in table.items()]
    words = word_sensitivity(denoise, args.timesteps, args.seeds)
    lines += ["", "Relative change of the prediction when one word of the caption is swapped: keyframe model / "
              "2D UNet.", "", "| t | " + " | ".join(WORDS) + " |", "|---" * (len(WORDS) + 1) + "|"]
    lines += [f"| {t} | " + " | ".join(f"{k:.4f} / {u:.4f}" for k, u in row.values()) + " |"
              for t, row in words.items()]
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
