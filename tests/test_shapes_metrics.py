"""Ground-truth scores measured on rendered shapes-world videos recover the captioned attributes."""

from __future__ import annotations

import numpy as np
import pytest

from fusionframes.data.shapes import MOTIONS, ShapesWorld
from fusionframes.metrics.shapes import (
    centroid_shift,
    classify_colour,
    classify_motion,
    detected_fraction,
    measure,
    smoothness,
)

WORLD = ShapesWorld(resolution=64, num_frames=400, seed=5)


def _scene(motion: str, speed: str = "quickly"):
    return next(s for s in map(WORLD.scene, range(2000)) if s.motion == motion and s.speed == speed)


@pytest.mark.parametrize("motion", MOTIONS)
def test_rendered_keyframes_are_scored_as_their_caption(motion):
    scene = _scene(motion)
    track = measure(WORLD.render(scene, range(0, 181, 12)))
    assert classify_motion(track) == motion
    assert classify_colour(np.nanmean(track.colour, axis=0)) == scene.colour
    assert detected_fraction(track) == 1.0


def test_constant_velocity_is_smooth_and_shuffled_frames_are_not():
    video = WORLD.render(_scene("right"), range(0, 181, 12))
    assert smoothness(measure(video)) < 0.1
    shuffled = video[np.random.default_rng(0).permutation(len(video))]
    assert smoothness(measure(shuffled)) > 0.5


def test_empty_frames_are_not_detected():
    blank = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    track = measure(blank)
    assert detected_fraction(track) == 0.0 and classify_motion(track) == "none"
    assert np.isnan(centroid_shift(track)).all()


def test_centroid_shift_is_the_scene_displacement():
    scene = _scene("up")
    video = WORLD.render(scene, range(0, 181, 12))
    video[0] = video[0, 0, 0]  # the first frame shows no shape: the shift starts at the second
    expected = np.array(scene.centre_at(180)) - np.array(scene.centre_at(12))
    np.testing.assert_allclose(centroid_shift(measure(video)), expected, atol=0.5)
    assert expected[1] < -5
