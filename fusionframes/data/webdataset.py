"""WebDataset shards of captioned videos: writing, decoding and streaming sampler clips.

A shard is a ``.tar`` whose samples hold ``mp4`` (H.264 yuv420p via PyAV), ``txt`` (the caption,
absent when unknown) and ``json`` (ground truth, ``{}`` when unknown). Raw video is uint8
(F, H, W, 3); `WebVideoDataset` yields the clip sampler's dicts of float tensors in [-1, 1]
(e.g. ``video`` (F, C, H, W)) plus ``caption`` and ``meta`` strings.
"""

from __future__ import annotations

import collections
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
import webdataset as wds

from fusionframes.data.samplers import ClipSampler, frames_to_tensor
from fusionframes.utils.video_io import decode_frames, encode_video

log = logging.getLogger(__name__)

# H.264 at crf 12 keeps decoded frames within a few grey levels of the source (chroma subsampling
# at sharp colour edges dominates the error); mpeg4 at a high bit rate only where libx264 is missing.
MIN_SAMPLES_FOR_SKIP_CHECK = 20
MAX_SKIPPED_KEYS = 1000


def resize_square(video: torch.Tensor, resolution: int) -> torch.Tensor:
    """Centre-crop float (F, C, H, W) to a square, then resize (antialiased) to (F, C, res, res)."""
    height, width = video.shape[-2:]
    size = min(height, width)
    top, left = (height - size) // 2, (width - size) // 2
    video = video[..., top : top + size, left : left + size]
    if size == resolution:
        return video
    return F.interpolate(video, size=(resolution, resolution), mode="bilinear", antialias=True)


def write_shards(
    samples: Iterable[tuple[str, np.ndarray, str, dict]], pattern: str, fps: int, max_per_shard: int
) -> list[str]:
    """Write (key, uint8 (F, H, W, 3), caption, meta) samples to tar shards named by `pattern`.

    `pattern` holds one integer field, e.g. ``out/shapes-%06d.tar``. An empty caption writes no
    ``txt`` (readers skip the sample). Returns the shard paths in order.
    """
    if "%" not in pattern:
        raise ValueError(f"Shard pattern {pattern!r} needs an integer field such as '%06d'.")
    if fps < 1:
        raise ValueError(f"fps must be a positive integer, got {fps}.")
    if max_per_shard < 1:
        raise ValueError(f"max_per_shard must be a positive integer, got {max_per_shard}.")
    Path(pattern).parent.mkdir(parents=True, exist_ok=True)
    paths: list[str] = []
    with wds.ShardWriter(pattern, maxcount=max_per_shard, post=paths.append, verbose=0) as writer:
        for key, frames, caption, meta in samples:
            if not key or any(c in key for c in "./"):
                raise ValueError(f"Sample key {key!r} must be non-empty and contain no '.' or '/'.")
            record = {"__key__": key, "mp4": encode_video(frames, fps), "json": json.dumps(meta)}
            if caption:
                record["txt"] = caption
            writer.write(record)
    return paths


class WebVideoDataset(torch.utils.data.IterableDataset):
    """Streams sampler dicts (+ ``caption``, ``meta``) from video shards, split by node and worker.

    Each sample is decoded with PyAV, `sampler` picks source frame indices from the decoded frame
    count, the picked frames become float (F, C, H, W) in [-1, 1], optionally centre-cropped and
    resized to `resolution`², and `sampler.arrange` builds the dict. Unreadable shards, unreadable
    videos, videos too short for the sampler, missing captions and invalid metadata are skipped,
    logged with their key, counted by reason in `stats` and listed (bounded) in `skipped`; both are
    per process, so each DataLoader worker keeps its own. Clip choices are deterministic in
    (seed, rank, worker, iteration, position in the worker's stream).
    """

    def __init__(
        self,
        urls: str | list[str],
        sampler: ClipSampler,
        resolution: int | None = None,
        shuffle: int = 0,
        seed: int = 0,
        resampled: bool = False,
        max_skip_fraction: float = 1.0,
    ) -> None:
        super().__init__()
        if resolution is not None and resolution < 1:
            raise ValueError(f"resolution must be a positive integer or None, got {resolution}.")
        if shuffle < 0:
            raise ValueError(f"shuffle buffer size must be >= 0 (0 disables shuffling), got {shuffle}.")
        if not 0.0 <= max_skip_fraction <= 1.0:
            raise ValueError(f"max_skip_fraction must lie in [0, 1], got {max_skip_fraction}.")
        self.urls = urls
        self.sampler = sampler
        self.resolution = resolution
        self.shuffle = shuffle
        self.seed = seed
        self.resampled = resampled
        self.max_skip_fraction = max_skip_fraction
        self.stats: collections.Counter[str] = collections.Counter()
        self.skipped: collections.deque[tuple[str, str]] = collections.deque(maxlen=MAX_SKIPPED_KEYS)
        self.num_seen = 0
        self._iteration = 0

    def _pipeline(self, stream_seed: int) -> wds.DataPipeline:
        if self.resampled:
            stages = [wds.ResampledShards(self.urls, seed=self.seed, deterministic=True)]
        else:
            stages = [wds.SimpleShardList(self.urls), wds.split_by_node, wds.split_by_worker]
        stages.append(wds.tarfile_to_samples(handler=self._skip_shard))
        if self.shuffle:
            stages.append(wds.shuffle(self.shuffle, initial=min(self.shuffle, 100), seed=stream_seed))
        return wds.DataPipeline(*stages)

    def __iter__(self) -> Iterator[dict]:
        rank, _, worker, _ = wds.utils.pytorch_worker_info()
        iteration, self._iteration = self._iteration, self._iteration + 1
        stream_seed = wds.utils.make_seed(self.seed, rank, worker, iteration)
        for position, sample in enumerate(self._pipeline(stream_seed)):
            rng = np.random.default_rng((self.seed, rank, worker, iteration, position))
            item = self._load(sample, rng)
            self.num_seen += 1
            self._check_skip_fraction()
            if item is not None:
                yield item

    def _load(self, sample: dict, rng: np.random.Generator) -> dict | None:
        try:
            caption = sample.get("txt", b"").decode("utf-8").strip()
        except UnicodeDecodeError as exn:
            return self._skip(sample, "unreadable_caption", exn)
        if not caption:
            return self._skip(sample, "missing_caption", "no or empty txt")
        try:
            meta = sample.get("json", b"{}").decode("utf-8")
            json.loads(meta)
        except ValueError as exn:
            return self._skip(sample, "invalid_meta", exn)
        try:
            frames = decode_frames(sample.get("mp4", b""))
        except (av.FFmpegError, ValueError) as exn:
            return self._skip(sample, "unreadable_video", exn)
        clip = self.sampler.sample(len(frames), rng)
        if clip is None:
            return self._skip(sample, "too_short", f"{len(frames)} frames")
        video = frames_to_tensor(np.stack([frames[i].to_ndarray(format="rgb24") for i in clip.indices]))
        if self.resolution is not None:
            video = resize_square(video, self.resolution)
        return {**self.sampler.arrange(video, clip), "caption": caption, "meta": meta}

    def _skip(self, sample: dict, reason: str, detail: object) -> None:
        key = sample["__key__"]
        self.stats[reason] += 1
        self.skipped.append((key, reason))
        log.warning("Skipping sample %s of %s (%s): %s", key, sample.get("__url__"), reason, detail)

    def _skip_shard(self, exn: Exception) -> bool:
        """webdataset handler: log and count a shard that cannot be opened or read, then go on."""
        name = next((a for a in reversed(exn.args) if isinstance(a, str)), repr(exn))
        self.stats["unreadable_shard"] += 1
        self.skipped.append((name, "unreadable_shard"))
        log.warning("Skipping unreadable shard %s: %r", name, exn)
        return True

    def _check_skip_fraction(self) -> None:
        skipped = sum(n for reason, n in self.stats.items() if reason != "unreadable_shard")
        if self.num_seen >= MIN_SAMPLES_FOR_SKIP_CHECK and skipped > self.max_skip_fraction * self.num_seen:
            raise RuntimeError(
                f"Skipped {skipped} of {self.num_seen} samples ({dict(self.stats)}), more than "
                f"max_skip_fraction={self.max_skip_fraction}; check the shards {self.urls!r}.")
