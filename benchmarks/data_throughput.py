"""Data throughput in frames/s: rendering the shapes world vs decoding video shards.

Both sources feed the keyframe sampler (16 frames, stride 12) from `--frames`-frame source videos,
single process and with DataLoader workers. Shard writing is not timed; the first batch of each
run (worker start-up) is excluded. Prints a markdown table, optionally written to `--out`.

    uv run python benchmarks/data_throughput.py --resolutions 64 256 --out throughput.md
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import torch

from fusionframes.data.samplers import KeyframeSampler
from fusionframes.data.shapes import ShapesWorld
from fusionframes.data.shapes_dataset import ShapesDataset
from fusionframes.data.webdataset import WebVideoDataset, write_shards


def frames_per_second(dataset: torch.utils.data.Dataset, workers: int, batch_size: int) -> tuple[float, int]:
    """(frames/s after the first batch, samples timed) of iterating `dataset` in batches."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    batches = iter(loader)
    next(batches)
    start, frames, count = time.perf_counter(), 0, 0
    for batch in batches:
        batch_count, frames_per_sample = batch["video"].shape[:2]
        frames += batch_count * frames_per_sample
        count += batch_count
    return frames / (time.perf_counter() - start), count


def rows(resolutions: Iterable[int], workers: Iterable[int], count: int, num_frames: int, batch_size: int,
         shard_dir: Path) -> Iterable[str]:
    sampler = KeyframeSampler()
    for resolution in resolutions:
        world = ShapesWorld(resolution=resolution, num_frames=num_frames)
        samples = ((f"{i:06d}", world.render(world.scene(i), range(num_frames)), world.scene(i).caption(),
                    world.scene(i).to_dict()) for i in range(count))
        shards = write_shards(samples, str(shard_dir / f"r{resolution}-%04d.tar"), fps=world.fps,
                              max_per_shard=max(1, count // 4))
        sources = {
            "shapes render (ShapesDataset)": ShapesDataset(world, sampler, length=count),
            "shard decode (WebVideoDataset)": WebVideoDataset(shards, sampler, resolution=resolution),
        }
        for name, dataset in sources.items():
            for worker_count in workers:
                fps, timed = frames_per_second(dataset, worker_count, batch_size)
                yield (f"| {name} | {resolution}x{resolution} | {worker_count} | {timed} | "
                       f"{fps:,.0f} | {fps / sampler.num_frames:,.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64], help="square frame sizes")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts")
    parser.add_argument("--count", type=int, default=128, help="videos per source")
    parser.add_argument("--frames", type=int, default=400, help="frames per source video")
    parser.add_argument("--batch-size", type=int, default=8, help="DataLoader batch size")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    header = ["| source | resolution | workers | samples timed | frames/s | samples/s |",
              "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as shard_dir:
        table = "\n".join(header + list(rows(args.resolutions, args.workers, args.count, args.frames,
                                             args.batch_size, Path(shard_dir))))
    print(table)
    if args.out is not None:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
