"""Bad data in shards: each kind of bad sample is skipped, counted by reason and logged with its key;
unopenable shards are reported by name; a run whose skipped fraction passes the bound stops clearly."""

from __future__ import annotations

import collections
import logging
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from fusionframes.data.samplers import ImageSampler, KeyframeSampler
from fusionframes.data.shapes import ShapesWorld
from fusionframes.data.webdataset import WebVideoDataset, write_shards
from fusionframes.training import train
from fusionframes.utils.video_io import encode_video

FAST = ["model.num_val_images=0", "trainer.val_check_interval=100000", "trainer.limit_val_batches=0"]


def _video(resolution: int = 32, frames: int = 8, scene: int = 0) -> bytes:
    world = ShapesWorld(resolution=resolution, num_frames=frames, seed=2)
    return encode_video(world.render(world.scene(scene), range(frames)), fps=24)


def _bad_records() -> dict[str, dict]:
    """One sample of every bad kind (key -> tar members), each skipped for the reason its key starts with."""
    good = _video()
    return {
        "unreadable_video-corrupt": {"mp4": np.random.default_rng(0).bytes(3000), "txt": "a caption"},
        "unreadable_video-truncated": {"mp4": good[: len(good) // 2], "txt": "a caption"},
        "unreadable_video-zero_length": {"mp4": b"", "txt": "a caption"},
        "unreadable_video-no_video": {"txt": "a caption"},
        "wrong_resolution-16px": {"mp4": _video(resolution=16), "txt": "a caption"},
        "missing_caption-none": {"mp4": good},
        "missing_caption-blank": {"mp4": good, "txt": " \t\n"},
        "unreadable_caption-latin1": {"mp4": good, "txt": b"caf\xe9"},
        "invalid_meta-json": {"mp4": good, "txt": "a caption", "json": b"{not json"},
        "too_short-2_frames": {"mp4": _video(frames=2), "txt": "a caption"},
    }


def _write(path: Path, records: dict[str, dict]) -> str:
    with wds.TarWriter(str(path)) as writer:
        for key, record in records.items():
            writer.write({"__key__": key, "json": "{}", **record})
    return str(path)


@pytest.fixture(scope="module")
def good_shard(tmp_path_factory: pytest.TempPathFactory) -> str:
    world = ShapesWorld(resolution=32, num_frames=8, seed=2)
    samples = ((f"good{i}", world.render(world.scene(i), range(8)), world.scene(i).caption(), {}) for i in range(4))
    return write_shards(samples, str(tmp_path_factory.mktemp("good") / "good-%03d.tar"), fps=24, max_per_shard=4)[0]


def test_every_kind_of_bad_sample_is_skipped_counted_and_logged(good_shard, tmp_path, caplog):
    records = _bad_records()
    dataset = WebVideoDataset([_write(tmp_path / "bad.tar", records), good_shard], KeyframeSampler(3, stride=2),
                              resolution=32)
    with caplog.at_level(logging.WARNING, logger="fusionframes.data.webdataset"):
        samples = list(dataset)
    assert len(samples) == 4 and all(s["video"].shape == (3, 3, 32, 32) for s in samples)
    reasons = collections.Counter(key.split("-")[0] for key in records)
    assert dataset.stats == reasons and sum(reasons.values()) == 10
    assert sorted(dataset.skipped) == sorted((key, key.split("-")[0]) for key in records)
    assert all(f"Skipping sample {key} of {tmp_path / 'bad.tar'}" in caplog.text for key in records)


def test_unopenable_shards_are_reported_by_name_and_the_rest_is_read(good_shard, tmp_path, caplog):
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(np.random.default_rng(1).bytes(5000))
    data = Path(good_shard).read_bytes()
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(data[: len(data) // 2])  # the first samples still read
    missing = tmp_path / "missing.tar"
    with caplog.at_level(logging.WARNING, logger="fusionframes.data.webdataset"):
        dataset = WebVideoDataset([str(p) for p in (garbage, missing, truncated)] + [good_shard], ImageSampler())
        samples = list(dataset)
    assert 4 < len(samples) < 8  # all of the good shard, part of the truncated one
    assert dataset.stats["unreadable_shard"] == 3
    for shard in (garbage, missing, truncated):
        assert (str(shard), "unreadable_shard") in dataset.skipped and str(shard) in caplog.text
    assert f"Shard {missing} does not exist" in caplog.text  # named at construction already


def test_no_readable_shard_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="No shard of .*missing-\\{000..003\\}.tar' exists"):
        WebVideoDataset(str(tmp_path / "missing-{000..003}.tar"), ImageSampler())
    garbage = [tmp_path / f"garbage-{i}.tar" for i in range(2)]
    for path in garbage:
        path.write_bytes(b"not a tar file" * 100)
    for resampled in (False, True):  # a resampled stream never ends: it must stop by itself
        with pytest.raises(RuntimeError, match="None of the shards .*garbage-0.tar.* could be read"):
            list(WebVideoDataset([str(p) for p in garbage], ImageSampler(), resampled=resampled))


def _mostly_bad_shards(tmp_path: Path) -> str:
    """24 samples, 18 of them without a caption (75% skipped)."""
    good, records = _video(), {}
    for i in range(24):
        records[f"s{i:02d}"] = {"mp4": good, **({"txt": "a red circle"} if i % 4 == 0 else {})}
    return _write(tmp_path / "mostly-bad-000.tar", records)


def test_training_run_stops_when_the_skipped_fraction_passes_its_bound(tiny_config, tmp_path):
    shard = _mostly_bad_shards(tmp_path)
    data = ["data=webdataset", f"data.train_shards={shard}", f"data.val_shards={shard}",
            "data.datamodule.train.resampled=false", "data.datamodule.num_workers=1"]
    # Under the default bound (1.0) the run trains on the good quarter.
    train(tiny_config("shapes/t2i", *FAST, *data, "trainer.max_steps=2"))
    with pytest.raises(RuntimeError, match=r"Skipped 1[5-8] of 2[0-4] samples .*missing_caption.* more than "
                                           r"max_skip_fraction=0.5"):
        train(tiny_config("shapes/t2i", *FAST, *data, "trainer.max_steps=20",
                          "+data.datamodule.train.max_skip_fraction=0.5", run="b"))
