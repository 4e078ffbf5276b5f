"""benchmarks/shapes_quality.py: the prompt grid (restricted, repeated) and a whole run on the shipped models."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import shapes_quality as sq
from fusionframes.data.shapes import COLOURS, MOTIONS, SHAPES


def test_the_prompt_grid_covers_the_world_or_the_given_words_repeated() -> None:
    everything = sq.prompts(list(COLOURS), list(SHAPES), list(MOTIONS))
    assert len(everything) == len(set(everything)) == len(COLOURS) * len(SHAPES) * len(MOTIONS)
    directions = sq.prompts(["red"], ["circle"], ["left", "right"], repeats=3)
    assert directions == [("red", "circle", "left")] * 3 + [("red", "circle", "right")] * 3
    assert sq.prompts(["red"], ["circle"], ["left", "right"], repeats=3, limit=4) == directions[:4]
    assert sq.caption("red", "circle", "left", 0) != sq.caption("red", "circle", "left", 1)  # backgrounds cycle


def test_a_restricted_run_scores_each_direction_and_writes_the_table(tmp_path: Path) -> None:
    out = tmp_path / "quality.md"
    sq.main(["--device", "cpu", "--colours", "red", "--shapes", "circle", "--motions", "left", "right",
             "--steps", "2", "--fps", "keyframes", "--interpolation-videos", "0", "--out", str(out)])
    table = out.read_text()
    assert "| prompts | 2 |" in table
    for score in ("colour accuracy", "direction accuracy, left", "direction accuracy, right", "smoothness"):
        assert f"| {score}" in table
    assert "interpolation PSNR" not in table


def test_repeats_below_one_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        sq.main(["--repeats", "0"])
    assert "--repeats 0 must be at least 1" in capsys.readouterr().err
