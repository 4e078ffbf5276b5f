from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fusionframes.data.samplers import (
    Clip,
    ClipSequenceSampler,
    ImageSampler,
    InterpolationSampler,
    KeyframeSampler,
    frames_to_tensor,
)
from fusionframes.data.shapes import ShapeScene, ShapesWorld
from fusionframes.data.shapes_dataset import ShapesDataset


def indexed_frames(clip: Clip) -> torch.Tensor:
    """(len(indices), 1, 2, 2) frames whose every pixel holds its source frame index."""
    return torch.tensor(clip.indices, dtype=torch.float32)[:, None, None, None].expand(-1, 1, 2, 2)


def test_frames_to_tensor() -> None:
    frames = np.zeros((2, 4, 5, 3), dtype=np.uint8)
    frames[1] = 255
    frames[0, 0, 0] = (0, 128, 255)
    video = frames_to_tensor(frames)
    assert video.shape == (2, 3, 4, 5) and video.dtype == torch.float32
    assert video[0].min() == -1 and video[1].min() == 1 and video.max() == 1
    np.testing.assert_allclose(video[0, :, 0, 0].numpy(), [-1.0, 128 / 127.5 - 1, 1.0], atol=1e-6)
    with pytest.raises(ValueError, match="uint8 of shape"):
        frames_to_tensor(frames.astype(np.float32))


def test_image_sampler() -> None:
    sampler = ImageSampler()
    rng = np.random.default_rng(0)
    picks = {sampler.sample(5, rng).indices[0] for _ in range(100)}
    assert picks == set(range(5))
    assert sampler.sample(0, rng) is None and sampler.min_source_frames == 1
    clip = sampler.sample(5, rng)
    assert torch.equal(sampler.arrange(indexed_frames(clip), clip)["image"], indexed_frames(clip)[0])


def test_keyframe_sampler() -> None:
    sampler = KeyframeSampler()
    rng = np.random.default_rng(0)
    assert sampler.min_source_frames == 181
    assert sampler.sample(181, rng).indices == list(range(0, 181, 12))
    assert sampler.sample(180, rng) is None
    starts = set()
    for _ in range(50):
        clip = sampler.sample(200, rng)
        start = clip.info["start"]
        starts.add(start)
        assert clip.indices == [start + 12 * k for k in range(16)] and clip.indices[-1] < 200
        out = sampler.arrange(indexed_frames(clip), clip)
        assert out["video"].shape == (16, 1, 2, 2)
        assert out["positions"].dtype == torch.long and out["positions"].tolist() == list(range(0, 181, 12))
    assert len(starts) > 5
    custom = KeyframeSampler(num_frames=4, stride=3)
    assert custom.min_source_frames == 10 and custom.sample(10, rng).indices == [0, 3, 6, 9]


def test_interpolation_sampler_arrangement() -> None:
    sampler = InterpolationSampler()
    rng = np.random.default_rng(0)
    assert sampler.min_source_frames == 33
    assert sampler.sample(32, rng) is None
    skips = set()
    for _ in range(200):
        clip = sampler.sample(400, rng)
        s, start = clip.info["skip"], clip.info["start"]
        skips.add(s)
        assert len(clip.indices) == 33 and clip.indices[-1] < 400
        out = sampler.arrange(indexed_frames(clip), clip)
        assert out["keyframes"].shape == (9, 1, 2, 2) and out["targets"].shape == (8, 3, 1, 2, 2)
        assert out["skip"].dtype == torch.long and out["skip"].shape == () and out["skip"].item() == s
        assert out["keyframes"][:, 0, 0, 0].tolist() == [start + 4 * k * s for k in range(9)]
        expected = [[start + (4 * k + j) * s for j in (1, 2, 3)] for k in range(8)]
        assert out["targets"][:, :, 0, 0, 0].tolist() == expected
    assert skips == set(range(1, 13))  # span 32 * 12 + 1 = 385 fits in 400


def test_interpolation_sampler_only_picks_fitting_skips() -> None:
    sampler = InterpolationSampler(skips=[5, 2])
    rng = np.random.default_rng(1)
    assert sampler.min_source_frames == 65
    assert {sampler.sample(100, rng).info["skip"] for _ in range(30)} == {2}  # 161 frames for s=5
    assert sampler.sample(64, rng) is None
    assert sampler.sample(65, rng).indices == list(range(0, 65, 2))
    small = InterpolationSampler(skips=[1], num_keyframes=3, between=1)
    clip = small.sample(5, rng)
    out = small.arrange(indexed_frames(clip), clip)
    assert out["keyframes"][:, 0, 0, 0].tolist() == [0, 2, 4]
    assert out["targets"][:, :, 0, 0, 0].tolist() == [[1], [3]]


def test_clip_sequence_sampler() -> None:
    sampler = ClipSequenceSampler()
    rng = np.random.default_rng(0)
    assert sampler.sample(7, rng) is None and sampler.min_source_frames == 8
    clip = sampler.sample(20, rng)
    assert clip.indices == list(range(clip.info["start"], clip.info["start"] + 8)) and clip.indices[-1] < 20
    assert sampler.arrange(indexed_frames(clip), clip)["video"].shape == (8, 1, 2, 2)


def test_sampler_constructor_errors() -> None:
    with pytest.raises(ValueError, match="num_frames must be a positive integer, got 0"):
        KeyframeSampler(num_frames=0)
    with pytest.raises(ValueError, match="stride must be a positive integer, got 1.5"):
        KeyframeSampler(stride=1.5)
    with pytest.raises(ValueError, match="skip must be a positive integer, got 0"):
        InterpolationSampler(skips=[0, 1])
    with pytest.raises(ValueError, match="at least one"):
        InterpolationSampler(skips=[])
    with pytest.raises(ValueError, match="num_keyframes must be at least 2, got 1"):
        InterpolationSampler(num_keyframes=1)
    with pytest.raises(ValueError, match="between must be a positive integer, got 0"):
        InterpolationSampler(between=0)
    with pytest.raises(ValueError, match="num_frames must be a positive integer, got -1"):
        ClipSequenceSampler(num_frames=-1)


@pytest.mark.parametrize(
    "sampler,shapes",
    [
        (ImageSampler(), {"image": (3, 16, 16)}),
        (KeyframeSampler(num_frames=4, stride=12), {"video": (4, 3, 16, 16), "positions": (4,)}),
        (InterpolationSampler(skips=[1, 2]), {"keyframes": (9, 3, 16, 16), "targets": (8, 3, 3, 16, 16), "skip": ()}),
        (ClipSequenceSampler(), {"video": (8, 3, 16, 16)}),
    ],
)
def test_shapes_dataset_outputs(sampler, shapes: dict) -> None:
    world = ShapesWorld(resolution=16, num_frames=70)
    dataset = ShapesDataset(world, sampler, length=5, seed=2)
    assert len(dataset) == 5
    sample = dataset[3]
    assert set(sample) == set(shapes) | {"caption", "meta"}
    for key, shape in shapes.items():
        assert tuple(sample[key].shape) == shape
    for key in set(shapes) - {"positions", "skip"}:
        assert sample[key].dtype == torch.float32 and -1 <= sample[key].min() and sample[key].max() <= 1
    scene = world.scene(3)
    assert sample["caption"] == scene.caption()
    assert ShapeScene.from_dict(json.loads(sample["meta"])) == scene
    again = ShapesDataset(world, sampler, length=5, seed=2)[3]
    assert all(torch.equal(sample[k], again[k]) for k in shapes)
    with pytest.raises(IndexError):
        dataset[5]


def test_shapes_dataset_renders_only_clip_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    world = ShapesWorld(resolution=16, num_frames=400)
    rendered = []
    render = world.render
    monkeypatch.setattr(world, "render", lambda scene, frames: rendered.append(list(frames)) or render(scene, frames))
    sample = ShapesDataset(world, KeyframeSampler(), length=2)[1]
    assert len(rendered) == 1 and len(rendered[0]) == 16
    assert [b - a for a, b in zip(rendered[0], rendered[0][1:])] == [12] * 15
    # The video holds exactly those source frames.
    expected = frames_to_tensor(render(world.scene(1), rendered[0]))
    assert torch.equal(sample["video"], expected)


def test_shapes_dataset_rejects_too_short_world() -> None:
    world = ShapesWorld(resolution=16, num_frames=100)
    with pytest.raises(ValueError, match="num_frames 100 is too short for KeyframeSampler.*at least 181"):
        ShapesDataset(world, KeyframeSampler(), length=4)
    with pytest.raises(ValueError, match="at least 33"):
        ShapesDataset(ShapesWorld(resolution=16, num_frames=32), InterpolationSampler(), length=4)
    with pytest.raises(ValueError, match="length must be a positive integer, got 0"):
        ShapesDataset(world, ImageSampler(), length=0)
