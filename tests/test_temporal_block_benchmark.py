"""benchmarks/temporal_block.py: one row per shape and mode with a positive time (CPU, tiny shapes)."""

from __future__ import annotations

import torch

from benchmarks.temporal_block import table


def test_table_has_a_timed_row_per_shape_and_mode() -> None:
    out = table(["64x4", "32x2"], torch.device("cpu"), steps=1, compression=2, compiled=False)
    rows = out.splitlines()[2:]
    assert [tuple(row.split(" | ")[:3]) for row in rows] == [("| 64", "4x4", "eager"), ("| 32", "2x2", "eager")]
    for row in rows:
        ms = float(row.split(" | ")[3])
        assert ms > 0
        assert row.endswith("| n/a |")  # layout conversions are a CUDA profiler reading
