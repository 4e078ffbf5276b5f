"""benchmarks/direction_memorisation.py: the four training clips move as captioned, and the whole run works."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from benchmarks import direction_memorisation as dm
from fusionframes.data.shapes import DIRECTIONS, ShapesWorld
from fusionframes.metrics.shapes import classify_motion, measure


def test_clips_cross_the_frame_in_their_captioned_direction() -> None:
    world = ShapesWorld(num_frames=181)
    scenes = dm.scenes(world.resolution)
    assert [s.motion for s in scenes] == list(DIRECTIONS)
    for scene in scenes:
        track = measure(world.render(scene, range(0, 181, dm.STRIDE)))
        assert classify_motion(track) == scene.motion
        assert np.abs(track.centroid[-1] - track.centroid[0]).max() > 30  # most of the 64-pixel frame
        assert f"moving {scene.motion}" in scene.caption()


def test_run_trains_samples_and_scores_every_direction() -> None:
    args = argparse.Namespace(device="cpu", variant="conv1d_attn1d_blocks", text_conditioning=True,
                              text_cross_attention=True, high_noise_gamma=30.0, lr=1e-3, seconds=60.0, max_steps=2,
                              seeds=1, steps=2, t_min=900, timestep_spacing="trailing")
    table = dm.run(args)
    assert set(table) == set(DIRECTIONS)
    assert all(0.0 <= accuracy <= 1.0 and shift.shape == (2,) for accuracy, shift in table.values())


def test_out_of_range_t_min_is_a_clear_error() -> None:
    args = argparse.Namespace(device="cpu", t_min=1000)
    with pytest.raises(ValueError, match="--t-min 1000 is out of range"):
        dm.run(args)
