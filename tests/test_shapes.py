from __future__ import annotations

import itertools
import json
import time

import numpy as np
import pytest

from fusionframes.data.shapes import (
    BACKGROUNDS,
    COLOURS,
    MOTIONS,
    SHAPES,
    SPEEDS,
    ShapeScene,
    ShapesWorld,
)

AREA_PER_R2 = {"circle": np.pi, "square": 2.0, "diamond": 2.0, "triangle": 3 * np.sqrt(3) / 4}


def coverage(frames: np.ndarray, scene: ShapeScene) -> np.ndarray:
    """Per-pixel fraction of shape colour, (F, H, W), by projecting each pixel on background->colour."""
    bg = np.asarray(BACKGROUNDS[scene.background], dtype=np.float64)
    direction = np.asarray(COLOURS[scene.colour], dtype=np.float64) - bg
    return (frames.astype(np.float64) - bg) @ direction / (direction @ direction)


def centroid_and_area(frames: np.ndarray, scene: ShapeScene) -> tuple[np.ndarray, np.ndarray]:
    """Measured (F, 2) centroids (x, y) in pixel coordinates and (F,) areas of the shape."""
    alpha = coverage(frames, scene)
    area = alpha.sum(axis=(1, 2))
    ys, xs = np.mgrid[: frames.shape[1], : frames.shape[2]] + 0.5
    centroid = np.stack([(alpha * xs).sum(axis=(1, 2)), (alpha * ys).sum(axis=(1, 2))], axis=1)
    return centroid / area[:, None], area


def test_constants_are_rich_and_backgrounds_distinct_from_shape_colours() -> None:
    assert {"circle", "square", "triangle"} <= set(SHAPES)
    assert len(COLOURS) >= 6
    assert set(MOTIONS) == {"left", "right", "up", "down", "growing", "shrinking"}
    assert set(SPEEDS) == {"slowly", "quickly"}
    for bg, colour in itertools.product(BACKGROUNDS.values(), COLOURS.values()):
        assert np.linalg.norm(np.subtract(bg, colour, dtype=float)) > 100


def test_scene_and_render_are_deterministic() -> None:
    a, b = ShapesWorld(resolution=32, num_frames=48, seed=3), ShapesWorld(resolution=32, num_frames=48, seed=3)
    assert a.scene(7) == b.scene(7)
    np.testing.assert_array_equal(a.render(a.scene(7), [0, 20, 47]), b.render(b.scene(7), [0, 20, 47]))
    assert a.scene(7) != a.scene(8)
    assert a.scene(7) != ShapesWorld(resolution=32, num_frames=48, seed=4).scene(7)
    assert a.scene(10**12).shape in SHAPES  # any index


def test_render_shape_dtype_and_only_requested_frames() -> None:
    world = ShapesWorld(resolution=24, num_frames=30)
    scene = world.scene(0)
    frames = world.render(scene, [29, 0, 5])
    assert frames.shape == (3, 24, 24, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames[1], world.render(scene, [0])[0])
    with pytest.raises(ValueError, match=r"\[0, 29\]"):
        world.render(scene, [30])


@pytest.mark.parametrize("resolution,num_frames", [(16, 1), (16, 2), (32, 24), (64, 400)])
def test_whole_shape_stays_in_view(resolution: int, num_frames: int) -> None:
    world = ShapesWorld(resolution=resolution, num_frames=num_frames, seed=1)
    last = num_frames - 1
    for i in range(60):
        scene = world.scene(i)
        for t in (0, last):
            x, y = scene.centre_at(t)
            r = scene.radius_at(t)
            assert r > 0 and r <= x <= resolution - r and r <= y <= resolution - r
        frames = world.render(scene, sorted({0, last // 2, last}))
        bg = np.asarray(BACKGROUNDS[scene.background], dtype=np.uint8)
        border = np.concatenate([frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]], axis=1)
        assert (border == bg).all(), scene
        assert (frames != bg).any(axis=-1).any(axis=(1, 2)).all(), "shape must be visible on every frame"


@pytest.mark.parametrize("shape", SHAPES)
def test_measured_centroid_and_area_match_ground_truth(shape: str) -> None:
    world = ShapesWorld(resolution=64, num_frames=100, shapes=(shape,))
    for i in range(8):
        scene = world.scene(i)
        times = [0, 37, 99]
        centroid, area = centroid_and_area(world.render(scene, times), scene)
        np.testing.assert_allclose(centroid, [scene.centre_at(t) for t in times], atol=0.1)
        expected = [AREA_PER_R2[shape] * scene.radius_at(t) ** 2 for t in times]
        np.testing.assert_allclose(area, expected, rtol=0.03)


@pytest.mark.parametrize("motion", MOTIONS)
def test_motion_matches_caption(motion: str) -> None:
    world = ShapesWorld(resolution=32, num_frames=120, motions=(motion,))
    moved = {speed: [] for speed in SPEEDS}
    for i in range(24):
        scene = world.scene(i)
        assert f" {motion} {scene.speed} " in scene.caption()
        centroid, area = centroid_and_area(world.render(scene, [0, 60, 119]), scene)
        dx, dy = np.diff(centroid, axis=0).T
        if motion in ("left", "right", "up", "down"):
            along = {"left": -dx, "right": dx, "up": -dy, "down": dy}[motion]
            across = dy if motion in ("left", "right") else dx
            assert (along > 1.0).all() and (np.abs(across) < 0.1).all(), scene
            moved[scene.speed].append(along.sum())
        else:
            growth = np.diff(area) if motion == "growing" else -np.diff(area)
            assert (growth > 5.0).all() and (np.abs(centroid - centroid[0]) < 0.1).all(), scene
            moved[scene.speed].append(growth.sum() / area.max())
    assert moved["slowly"] and moved["quickly"]
    assert max(moved["slowly"]) < min(moved["quickly"])


def test_captions() -> None:
    common = {"shape": "circle", "colour": "red", "background": "black", "centre": (8.0, 8.0), "radius": 3.0}
    moving = ShapeScene(**common, motion="left", speed="quickly", velocity=(-0.1, 0.0), growth=0.0)
    growing = ShapeScene(**common, motion="growing", speed="slowly", velocity=(0.0, 0.0), growth=0.01)
    assert moving.caption() == "a red circle moving left quickly on a black background"
    assert growing.caption() == "a red circle growing slowly on a black background"
    world = ShapesWorld(resolution=16, num_frames=10)
    for i in range(20):
        s = world.scene(i)
        words = s.caption().split()
        assert words[:3] == ["a", s.colour, s.shape] and words[-3:] == ["a", s.background, "background"]
        assert s.motion in words and s.speed in words


def test_to_dict_round_trips_through_json() -> None:
    scene = ShapesWorld(resolution=16, num_frames=10).scene(4)
    d = json.loads(json.dumps(scene.to_dict()))
    assert d["caption"] == scene.caption()
    assert ShapeScene.from_dict(d) == scene


def test_holdout_split() -> None:
    holdout = [{"colour": "red", "shape": "circle"}, {"motion": "up", "background": "white", "speed": "slowly"}]
    kw = {"resolution": 16, "num_frames": 10, "holdout": holdout}
    train, held, every = (ShapesWorld(**kw, split=s) for s in ("train", "holdout", "all"))

    def is_held(c: dict) -> bool:
        return any(all(c[k] == v for k, v in rule.items()) for rule in holdout)

    assert len(every.combinations()) == len(SHAPES) * len(COLOURS) * len(BACKGROUNDS) * len(MOTIONS) * len(SPEEDS)
    assert len(train.combinations()) + len(held.combinations()) == len(every.combinations())
    assert not any(is_held(c) for c in train.combinations())
    assert all(is_held(c) for c in held.combinations())
    for i in range(200):
        assert not is_held(vars(train.scene(i)))
        assert is_held(vars(held.scene(i)))


def test_holdout_and_constructor_errors() -> None:
    with pytest.raises(ValueError, match="'hue'.*shape, colour"):
        ShapesWorld(holdout=[{"hue": "red"}])
    with pytest.raises(ValueError, match="'magenta'.*red"):
        ShapesWorld(holdout=[{"colour": "magenta"}])
    with pytest.raises(ValueError, match="leaves no attribute combination"):
        ShapesWorld(shapes=("circle",), holdout=[{"shape": "circle"}])
    with pytest.raises(ValueError, match="leaves no attribute combination"):
        ShapesWorld(split="holdout")
    with pytest.raises(ValueError, match="'val'.*train, holdout, all"):
        ShapesWorld(split="val")
    with pytest.raises(ValueError, match="'hexagon'.*circle"):
        ShapesWorld(shapes=("hexagon",))
    with pytest.raises(ValueError, match="resolution must be at least 16 pixels, got 8"):
        ShapesWorld(resolution=8)
    with pytest.raises(ValueError, match="num_frames must be at least 1, got 0"):
        ShapesWorld(num_frames=0)
    with pytest.raises(ValueError, match="non-negative"):
        ShapesWorld().scene(-1)


def test_render_is_fast() -> None:
    world = ShapesWorld(resolution=64, num_frames=400)
    scenes = [world.scene(i) for i in range(20)]
    world.render(scenes[0], range(16))
    start = time.perf_counter()
    for scene in scenes:
        world.render(scene, range(0, 181, 12))
    assert (time.perf_counter() - start) / len(scenes) < 0.02  # measured ~2 ms; generous for busy CI
