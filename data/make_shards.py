"""Write video WebDataset shards (mp4 + txt caption + json ground truth) for `WebVideoDataset`.

    python data/make_shards.py shapes --out data/shards/shapes --count 8 --frames 200 --resolution 64
    python data/make_shards.py folder --src videos/ --out data/shards/videos --resolution 256
"""

from __future__ import annotations

import argparse
import collections
import re
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import torch
from einops import rearrange

from fusionframes.data.shapes import ShapesWorld
from fusionframes.data.webdataset import resize_square, write_shards
from fusionframes.utils.video_io import decode_video

VIDEO_SUFFIXES = (".mp4", ".webm", ".avi", ".mov")
Sample = tuple[str, np.ndarray, str, dict]


def shapes_samples(args: argparse.Namespace, counts: collections.Counter[str]) -> Iterator[Sample]:
    """Scenes 0..count-1 of the shapes world, every frame rendered, with caption and ground truth."""
    world = ShapesWorld(resolution=args.resolution, num_frames=args.frames, fps=args.fps, seed=args.seed)
    for index in range(args.count):
        scene = world.scene(index)
        counts["written"] += 1
        yield f"{index:08d}", world.render(scene, range(world.num_frames)), scene.caption(), scene.to_dict()


def folder_samples(args: argparse.Namespace, counts: collections.Counter[str]) -> Iterator[Sample]:
    """Videos of `args.src` with their sibling `<stem>.txt` caption (none: written without txt)."""
    src = Path(args.src)
    if not src.is_dir():
        raise FileNotFoundError(f"--src {src} is not a directory of videos.")
    for path in sorted(p for p in src.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES):
        try:
            frames = decode_video(path.read_bytes())
        except (av.FFmpegError, ValueError) as exn:
            counts["unreadable"] += 1
            print(f"skipping unreadable video {path}: {exn}")
            continue
        if args.resolution is not None:
            video = resize_square(rearrange(torch.from_numpy(frames), "f h w c -> f c h w").float(), args.resolution)
            frames = rearrange(video.round().clamp(0, 255).to(torch.uint8), "f c h w -> f h w c").numpy()
        else:  # yuv420p needs even sizes: drop an odd last row or column
            frames = frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2]
        caption_path = path.with_suffix(".txt")
        caption = caption_path.read_text(encoding="utf-8").strip() if caption_path.exists() else ""
        counts["written"] += 1
        if not caption:
            counts["without_caption"] += 1
        yield re.sub(r"[^\w-]", "_", path.name), frames, caption, {}


def main(argv: list[str] | None = None) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", required=True, help="output folder for the .tar shards")
    common.add_argument("--prefix", default=None, help="shard name prefix (default: the --out folder's name)")
    common.add_argument("--max-per-shard", type=int, default=64, help="samples per tar shard")
    common.add_argument("--fps", type=int, default=24, help="frame rate stored in the mp4s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="source", required=True)
    shapes = sub.add_parser("shapes", parents=[common], help="render the procedural shapes world")
    shapes.add_argument("--count", type=int, required=True, help="number of videos")
    shapes.add_argument("--frames", type=int, default=400, help="frames per video")
    shapes.add_argument("--resolution", type=int, default=64, help="square frame size in pixels")
    shapes.add_argument("--seed", type=int, default=0, help="world seed")
    folder = sub.add_parser("folder", parents=[common], help="a folder of videos with sibling <stem>.txt captions")
    folder.add_argument("--src", required=True, help="folder of .mp4/.webm/.avi/.mov files")
    folder.add_argument("--resolution", type=int, default=None,
                        help="centre-crop to a square and resize to this size (default: keep the size)")
    args = parser.parse_args(argv)

    counts: collections.Counter[str] = collections.Counter()
    samples = {"shapes": shapes_samples, "folder": folder_samples}[args.source](args, counts)
    out = Path(args.out)
    paths = write_shards(samples, str(out / f"{args.prefix or out.name}-%06d.tar"), args.fps, args.max_per_shard)
    print("\n".join(paths))
    print(", ".join(f"{name}: {n}" for name, n in sorted(counts.items())))


if __name__ == "__main__":
    main()
