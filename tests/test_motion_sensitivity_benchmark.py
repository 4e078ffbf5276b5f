"""benchmarks/motion_sensitivity.py: caption swaps, the frame-by-frame 2D baseline and both tables (shipped models)."""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks import motion_sensitivity as ms
from fusionframes.data.shapes import ShapeScene
from fusionframes.pipeline import FusionFramesPipeline
from fusionframes.utils.resolvers import ASSETS_DIR

SCENE = ShapeScene("circle", "red", "black", "left", "quickly", (30.0, 30.0), (-0.1, 0.0), 8.0, 0.0)


@pytest.fixture(scope="module")
def pipeline() -> FusionFramesPipeline:
    return FusionFramesPipeline.from_pretrained(ASSETS_DIR / "shapes")


@pytest.mark.parametrize(("word", "caption"), [
    ("motion", "a red circle moving right quickly on a black background"),
    ("colour", "a green circle moving left quickly on a black background"),
    ("shape", "a red square moving left quickly on a black background"),
    ("background", "a red circle moving left quickly on a grey background"),
    ("speed", "a red circle moving left slowly on a black background"),
])
def test_swapped_caption_changes_one_word(word: str, caption: str) -> None:
    assert ms.swapped_caption(SCENE, word) == caption


def test_swapped_caption_of_a_size_change_is_the_opposite_change() -> None:
    scene = ShapeScene("square", "blue", "white", "growing", "slowly", (32.0, 32.0), (0.0, 0.0), 6.0, 0.02)
    assert ms.swapped_caption(scene, "motion") == "a blue square shrinking slowly on a white background"


def test_two_dimensional_baseline_is_frame_by_frame(pipeline: FusionFramesPipeline) -> None:
    """The 2D UNet sees each frame alone, so reversing the clip reverses its prediction; the keyframe model mixes
    frames, so it does not."""
    denoise = ms.Denoiser(pipeline, 1)
    captions = denoise.captions
    noise = denoise.noise(0)
    forward = denoise(captions, 600, noise, temporal=False)
    backward = denoise(captions, 600, noise.flip(1), temporal=False, reverse=True)
    torch.testing.assert_close(backward, forward.flip(1), rtol=1e-4, atol=1e-5)
    temporal = denoise(captions, 600, noise)
    temporal_backward = denoise(captions, 600, noise.flip(1), reverse=True)
    assert not torch.allclose(temporal_backward, temporal.flip(1), rtol=1e-4, atol=1e-5)


def test_tables(pipeline: FusionFramesPipeline) -> None:
    denoise = ms.Denoiser(pipeline, 1)
    losses = ms.losses(denoise, [800], 1)
    assert list(losses) == [800] and len(losses[800]) == len(ms.COLUMNS)
    assert all(math.isfinite(v) and v > 0 for v in losses[800])
    words = ms.word_sensitivity(denoise, [800], 1)
    assert set(words[800]) == set(ms.WORDS)
    assert all(math.isfinite(v) and v >= 0 for pair in words[800].values() for v in pair)
    # The caption reaches both models: a colour swap moves either prediction.
    assert min(words[800]["colour"]) > 0
