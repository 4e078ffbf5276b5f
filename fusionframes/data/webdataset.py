"""WebDataset shards of captioned videos: writing, decoding and streaming sampler clips.

A shard is a ``.tar`` whose samples hold ``mp4`` (H.264 yuv420p via PyAV), ``txt`` (the caption,
absent when unknown) and ``json`` (ground truth, ``{}`` when unknown). Raw video is uint8
(F, H, W, 3); `WebVideoDataset` yields the clip sampler's dicts of float tensors in [-1, 1]
(e.g. ``video`` (F, C, H, W)) plus ``caption`` and ``meta`` strings.

A *latent* shard (``data/make_latent_shards.py``) holds ``safetensors`` instead of ``mp4``: ``latents``
(F_src, C, h, w) of every source frame and, when written with a text encoder, ``text`` (L, D) and
``text_mask`` (L,), so the frozen MoVQ and text encoder stay out of the training loop; the clip then
comes as ``latents`` (and ``text_embedding``, ``text_mask``) instead of ``video``.
"""

from __future__ import annotations

import collections
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import av
import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F
import webdataset as wds
from safetensors import SafetensorError

from fusionframes.data.samplers import ClipSampler, frames_to_tensor
from fusionframes.utils.validation import check_int, check_probability
from fusionframes.utils.video_io import decode_frames, encode_video

log = logging.getLogger(__name__)

# H.264 at crf 12 keeps decoded frames within a few grey levels of the source (chroma subsampling
# at sharp colour edges dominates the error); mpeg4 at a high bit rate only where libx264 is missing.
MIN_SAMPLES_FOR_SKIP_CHECK = 20
MAX_SKIPPED_KEYS = 1000
UNREADABLE_SHARD_ATTEMPTS = 10  # per shard, before a resampled stream that has read nothing stops
LATENTS = "safetensors"  # member of a latent shard's sample


def resize_square(video: torch.Tensor, resolution: int) -> torch.Tensor:
    """Centre-crop float (F, C, H, W) to a square, then resize (antialiased) to (F, C, res, res)."""
    height, width = video.shape[-2:]
    size = min(height, width)
    top, left = (height - size) // 2, (width - size) // 2
    video = video[..., top : top + size, left : left + size]
    if size == resolution:
        return video
    return F.interpolate(video, size=(resolution, resolution), mode="bilinear", antialias=True)


def write_records(records: Iterable[dict], pattern: str, max_per_shard: int) -> list[str]:
    """Write webdataset records (``__key__`` plus members) to tar shards named by `pattern`.

    `pattern` holds one integer field, e.g. ``out/shapes-%06d.tar``. Returns the shard paths in order.
    """
    if "%" not in pattern:
        raise ValueError(f"Shard pattern {pattern!r} needs an integer field such as '%06d'.")
    if max_per_shard < 1:
        raise ValueError(f"max_per_shard must be a positive integer, got {max_per_shard}.")
    Path(pattern).parent.mkdir(parents=True, exist_ok=True)
    paths: list[str] = []
    with wds.ShardWriter(pattern, maxcount=max_per_shard, post=paths.append, verbose=0) as writer:
        for record in records:
            key = record["__key__"]
            if not key or any(c in key for c in "./"):
                raise ValueError(f"Sample key {key!r} must be non-empty and contain no '.' or '/'.")
            writer.write(record)
    return paths


def write_shards(
    samples: Iterable[tuple[str, np.ndarray, str, dict]], pattern: str, fps: int, max_per_shard: int
) -> list[str]:
    """Write (key, uint8 (F, H, W, 3), caption, meta) samples to tar shards named by `pattern` (see
    `write_records`). An empty caption writes no ``txt`` (readers skip the sample)."""
    if fps < 1:
        raise ValueError(f"fps must be a positive integer, got {fps}.")

    def records() -> Iterator[dict]:
        for key, frames, caption, meta in samples:
            record = {"__key__": key, "mp4": encode_video(frames, fps), "json": json.dumps(meta)}
            yield {**record, "txt": caption} if caption else record

    return write_records(records(), pattern, max_per_shard)


class WebVideoDataset(torch.utils.data.IterableDataset):
    """Streams sampler dicts (+ ``caption``, ``meta``) from video shards, split by node and worker.

    Each sample is decoded with PyAV, `sampler` picks source frame indices from the decoded frame
    count, the picked frames become float (F, C, H, W) in [-1, 1], optionally centre-cropped and
    resized to `resolution`², and `sampler.arrange` builds the dict. Unreadable shards, unreadable
    videos, videos too short for the sampler or smaller than `resolution` (which would need
    upsampling), missing captions and invalid metadata are skipped, logged with their key, counted by
    reason in `stats` and listed (bounded) in `skipped`; both are per process, so each DataLoader
    worker keeps its own. Local shard paths that do not exist are named at construction (an error if
    none exists); a pass in which no shard can be read is an error, not an empty epoch. Clip choices
    are deterministic in (seed, rank, worker, epoch, position in the worker's stream); `epoch` counts
    the passes of this copy (a resumed loader restores it). Latent shards (see the module docstring) skip
    decoding; their latents must have been written at `resolution` (else "wrong_resolution"), and
    ``null_text_path`` (the ``null_text.safetensors`` written beside them) adds the empty prompt's
    ``null_text_embedding`` / ``null_text_mask`` to every clip for caption dropout.
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
        null_text_path: str | None = None,
    ) -> None:
        super().__init__()
        if resolution is not None:
            check_int("data.resolution", resolution, 1)
        check_int("shuffle buffer size (0 disables shuffling)", shuffle, 0)
        check_probability("max_skip_fraction", max_skip_fraction)
        self.urls = urls
        self.sampler = sampler
        self.resolution = resolution
        self.shuffle = shuffle
        self.seed = seed
        self.resampled = resampled
        self.max_skip_fraction = max_skip_fraction
        self.null_text = None
        if null_text_path is not None:
            if not Path(null_text_path).is_file():
                raise FileNotFoundError(f"null_text_path={null_text_path} does not exist; give the "
                                        "null_text.safetensors that data/make_latent_shards.py wrote.")
            self.null_text = safetensors.torch.load_file(null_text_path)
        self.stats: collections.Counter[str] = collections.Counter()
        self.skipped: collections.deque[tuple[str, str]] = collections.deque(maxlen=MAX_SKIPPED_KEYS)
        self.num_seen = 0
        self.epoch = 0
        self._check_shards_exist()

    def _check_shards_exist(self) -> None:
        """Name missing local shards now; with none of them present, fail with one clear error."""
        urls = wds.shardlists.expand_urls(self.urls) if isinstance(self.urls, str) else list(self.urls)
        local = [u for u in urls if "://" not in u and not u.startswith("pipe:")]
        missing = [u for u in local if not Path(u).is_file()]
        if not urls or (missing and len(missing) == len(urls)):
            raise FileNotFoundError(f"No shard of {self.urls!r} exists; point data.train_shards/val_shards at "
                                    "written .tar shards (python data/make_shards.py ...).")
        for url in missing:
            log.warning("Shard %s does not exist; it will be skipped.", url)
        self._urls = frozenset(urls)

    def _pipeline(self, stream_seed: int) -> wds.DataPipeline:
        if self.resampled:
            stages = [wds.ResampledShards(self.urls, seed=stream_seed, deterministic=True)]
        else:
            stages = [wds.SimpleShardList(self.urls), wds.split_by_node, wds.split_by_worker]
        stages.append(wds.tarfile_to_samples(handler=self._skip_shard))
        if self.shuffle:
            stages.append(wds.shuffle(self.shuffle, initial=min(self.shuffle, 100), seed=stream_seed))
        return wds.DataPipeline(*stages)

    def __iter__(self) -> Iterator[dict]:
        rank, _, worker, _ = wds.utils.pytorch_worker_info()
        epoch, self.epoch = self.epoch, self.epoch + 1
        stream_seed = wds.utils.make_seed(self.seed, rank, worker, epoch)
        self._pass_samples, self._pass_bad_shards = 0, collections.Counter()
        for position, sample in enumerate(self._pipeline(stream_seed)):
            rng = np.random.default_rng((self.seed, rank, worker, epoch, position))
            self._pass_samples += 1
            item = self._load(sample, rng)
            self.num_seen += 1
            self._check_skip_fraction()
            if item is not None:
                yield item
        if not self._pass_samples and self._pass_bad_shards:
            self._no_shard_readable()

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
        if LATENTS in sample:
            return self._load_latents(sample, caption, meta, rng)
        try:
            frames = decode_frames(sample.get("mp4", b""))
        except (av.FFmpegError, ValueError) as exn:
            return self._skip(sample, "unreadable_video", exn)
        clip = self.sampler.sample(len(frames), rng)
        if clip is None:
            return self._skip(sample, "too_short", f"{len(frames)} frames")
        if self.resolution is not None and min(frames[0].width, frames[0].height) < self.resolution:
            return self._skip(sample, "wrong_resolution",
                              f"{frames[0].width}x{frames[0].height} is smaller than resolution {self.resolution}")
        video = frames_to_tensor(np.stack([frames[i].to_ndarray(format="rgb24") for i in clip.indices]))
        if self.resolution is not None:
            video = resize_square(video, self.resolution)
        return {**self.sampler.arrange(video, clip), "caption": caption, "meta": meta}

    def _load_latents(self, sample: dict, caption: str, meta: str, rng: np.random.Generator) -> dict | None:
        try:
            tensors = safetensors.torch.load(sample[LATENTS])
            latents = tensors["latents"]
        except (SafetensorError, KeyError) as exn:
            return self._skip(sample, "unreadable_latents", exn)
        written = json.loads(meta).get("resolution")
        if self.resolution is not None and written != self.resolution:
            return self._skip(sample, "wrong_resolution",
                              f"latents of {written}x{written} frames, not {self.resolution}")
        clip = self.sampler.sample(len(latents), rng)
        if clip is None:
            return self._skip(sample, "too_short", f"{len(latents)} frames")
        item = self.sampler.arrange(latents[clip.indices].float(), clip)
        if "video" not in item:
            raise ValueError(f"latent shards serve clip samplers that return 'video' (keyframes, clip), not "
                             f"{type(self.sampler).__name__}; use video shards for this stage.")
        item["latents"] = item.pop("video")
        if "text" in tensors:
            item.update(text_embedding=tensors["text"].float(), text_mask=tensors["text_mask"].bool())
        if self.null_text is not None:
            item.update(null_text_embedding=self.null_text["text"].float(),
                        null_text_mask=self.null_text["text_mask"].bool())
        return {**item, "caption": caption, "meta": meta}

    def _skip(self, sample: dict, reason: str, detail: object) -> None:
        key = sample["__key__"]
        self.stats[reason] += 1
        self.skipped.append((key, reason))
        log.warning("Skipping sample %s of %s (%s): %s", key, sample.get("__url__"), reason, detail)

    def _skip_shard(self, exn: Exception) -> bool:
        """webdataset handler: log and count a shard that cannot be opened or read, then go on.

        webdataset calls it first for a member that cannot be read (without the shard's url), then for the
        shard whose stream that breaks (with it); only the second is counted.
        """
        name = next((a for a in reversed(exn.args) if isinstance(a, str) and a in self._urls), None)
        if name is None:
            log.debug("Unreadable shard member: %r", exn)
            return True
        self.stats["unreadable_shard"] += 1
        self.skipped.append((name, "unreadable_shard"))
        log.warning("Skipping unreadable shard %s: %r", name, exn)
        if not self._pass_samples:
            self._pass_bad_shards[name] += 1
            if self._pass_bad_shards.total() >= UNREADABLE_SHARD_ATTEMPTS * len(self._urls):
                self._no_shard_readable()  # a resampled stream never ends: stop once every shard had its chances
        return True

    def _no_shard_readable(self) -> None:
        raise RuntimeError(f"None of the shards {sorted(self._pass_bad_shards)} could be read in this pass; "
                           "check data.train_shards and data.val_shards.")

    def _check_skip_fraction(self) -> None:
        skipped = sum(n for reason, n in self.stats.items() if reason != "unreadable_shard")
        if self.num_seen >= MIN_SAMPLES_FOR_SKIP_CHECK and skipped > self.max_skip_fraction * self.num_seen:
            raise RuntimeError(
                f"Skipped {skipped} of {self.num_seen} samples ({dict(self.stats)}), more than "
                f"max_skip_fraction={self.max_skip_fraction}; check the shards {self.urls!r}.")
