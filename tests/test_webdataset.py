"""Video shards: round trip against the shapes world, skipping of bad data, worker splitting."""

from __future__ import annotations

import collections
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from fusionframes.data.samplers import (
    ClipSequenceSampler,
    KeyframeSampler,
    frames_to_tensor,
)
from fusionframes.data.shapes import ShapesWorld
from fusionframes.data.shapes_dataset import ShapesDataset
from fusionframes.data.webdataset import WebVideoDataset, resize_square, write_shards
from fusionframes.utils.video_io import decode_video, encode_video

RES, FRAMES, COUNT = 32, 24, 6
GREY_LEVEL = 2 / 255  # one grey level in [-1, 1] units


@pytest.fixture(scope="module")
def world() -> ShapesWorld:
    return ShapesWorld(resolution=RES, num_frames=FRAMES, seed=3)


@pytest.fixture(scope="module")
def shards(world: ShapesWorld, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    samples = ((f"{i:04d}", world.render(world.scene(i), range(FRAMES)), world.scene(i).caption(),
                world.scene(i).to_dict()) for i in range(COUNT))
    return write_shards(samples, str(tmp_path_factory.mktemp("shapes") / "s-%03d.tar"), fps=24, max_per_shard=2)


def test_round_trip_matches_world(world: ShapesWorld, shards: list[str]) -> None:
    assert len(shards) == COUNT // 2
    reference = ShapesDataset(world, ClipSequenceSampler(FRAMES), length=COUNT)
    samples = list(WebVideoDataset(shards, ClipSequenceSampler(FRAMES)))
    assert len(samples) == COUNT
    for i, sample in enumerate(samples):
        expected = reference[i]
        assert sample["caption"] == expected["caption"] == world.scene(i).caption()
        assert sample["meta"] == expected["meta"]
        assert json.loads(sample["meta"]) == world.scene(i).to_dict()
        error = (sample["video"] - frames_to_tensor(world.render(world.scene(i), range(FRAMES)))).abs().mean()
        assert error < 3 * GREY_LEVEL


def test_decode_video_round_trip_and_errors() -> None:
    frames = np.random.default_rng(0).integers(0, 256, (3, 8, 10, 3), dtype=np.uint8)
    assert decode_video(encode_video(frames, fps=24)).shape == frames.shape
    with pytest.raises(ValueError, match="even"):
        encode_video(frames[:, :7], fps=24)
    with pytest.raises(ValueError):
        decode_video(b"not a video")


def test_sample_dicts_match_shapes_dataset(world: ShapesWorld, shards: list[str]) -> None:
    sampler = KeyframeSampler(num_frames=4, stride=5)
    expected = ShapesDataset(world, sampler, length=COUNT)[0]
    sample = next(iter(WebVideoDataset(shards, sampler)))
    assert sample.keys() == expected.keys()
    for key in ("video", "positions"):
        assert sample[key].shape == expected[key].shape and sample[key].dtype == expected[key].dtype
    assert torch.equal(sample["positions"], expected["positions"])


def test_resolution_and_determinism(shards: list[str]) -> None:
    sampler = KeyframeSampler(num_frames=3, stride=4)
    first = list(WebVideoDataset(shards, sampler, resolution=16, shuffle=3, seed=1))
    again = list(WebVideoDataset(shards, sampler, resolution=16, shuffle=3, seed=1))
    assert first[0]["video"].shape == (3, 3, 16, 16)
    assert all(torch.equal(a["video"], b["video"]) and a["meta"] == b["meta"] for a, b in zip(first, again))
    constant = torch.full((2, 3, 20, 30), 0.25)
    assert torch.allclose(resize_square(constant, 8), torch.full((2, 3, 8, 8), 0.25))


def test_bad_samples_are_skipped_and_counted(
    world: ShapesWorld, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = encode_video(world.render(world.scene(0), range(FRAMES)), fps=24)
    records = {
        "good": {"mp4": good, "txt": "a caption"},
        "corrupt": {"mp4": np.random.default_rng(0).bytes(2000), "txt": "a caption"},
        "truncated": {"mp4": good[: len(good) // 2], "txt": "a caption"},
        "empty": {"mp4": b"", "txt": "a caption"},
        "nocaption": {"mp4": good},
        "blankcaption": {"mp4": good, "txt": "  \n"},
        "short": {"mp4": encode_video(world.render(world.scene(1), range(4)), fps=24), "txt": "a caption"},
    }
    path = str(tmp_path / "bad.tar")
    with wds.TarWriter(path) as writer:
        for key, record in records.items():
            writer.write({"__key__": key, "json": "{}", **record})
    dataset = WebVideoDataset(path, KeyframeSampler(num_frames=3, stride=4))
    with caplog.at_level(logging.WARNING):
        samples = list(dataset)
    assert len(samples) == 1 and samples[0]["caption"] == "a caption" and samples[0]["meta"] == "{}"
    assert dataset.stats == collections.Counter(unreadable_video=3, missing_caption=2, too_short=1)
    assert set(dataset.skipped) == {("corrupt", "unreadable_video"), ("truncated", "unreadable_video"),
                                    ("empty", "unreadable_video"), ("nocaption", "missing_caption"),
                                    ("blankcaption", "missing_caption"), ("short", "too_short")}
    assert all(key in caplog.text for key in records if key != "good")


def test_missing_shard_is_reported_by_name(
    shards: list[str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = str(tmp_path / "missing-000.tar")
    dataset = WebVideoDataset([missing, shards[0]], ClipSequenceSampler(4))
    with caplog.at_level(logging.WARNING):
        samples = list(dataset)
    assert len(samples) == 2
    assert dataset.stats == collections.Counter(unreadable_shard=1)
    assert dataset.skipped[0] == (missing, "unreadable_shard") and missing in caplog.text


def test_max_skip_fraction(world: ShapesWorld, tmp_path: Path) -> None:
    frames = world.render(world.scene(0), range(2))
    samples = ((f"{i:02d}", frames, "" if i < 20 else "a caption", {}) for i in range(25))
    paths = write_shards(samples, str(tmp_path / "s-%03d.tar"), fps=24, max_per_shard=100)
    with pytest.raises(RuntimeError, match="max_skip_fraction=0.5"):
        list(WebVideoDataset(paths, ClipSequenceSampler(2), max_skip_fraction=0.5))
    assert len(list(WebVideoDataset(paths, ClipSequenceSampler(2)))) == 5
    with pytest.raises(ValueError, match="max_skip_fraction"):
        WebVideoDataset(paths, ClipSequenceSampler(2), max_skip_fraction=1.5)


def test_two_workers_yield_every_sample_once(world: ShapesWorld, shards: list[str]) -> None:
    loader = torch.utils.data.DataLoader(WebVideoDataset(shards, ClipSequenceSampler(4)), batch_size=None,
                                         num_workers=2)
    metas = [sample["meta"] for sample in loader]
    assert sorted(metas) == sorted(json.dumps(world.scene(i).to_dict()) for i in range(COUNT))
