"""benchmarks/temporal_block.py: one row per shape and mode with a positive time (CPU, tiny shapes)."""

from __future__ import annotations

import pytest
import torch

from benchmarks.temporal_block import table


@pytest.mark.parametrize("sampling", [False, True], ids=["training", "sampling"])
def test_table_has_a_timed_row_per_shape_and_mode(sampling: bool) -> None:
    out = table(["64x4", "32x2"], torch.device("cpu"), steps=1, compression=2, compiled=False, sampling=sampling)
    assert ("sampling call" if sampling else "fwd+bwd") in out.splitlines()[0]
    rows = out.splitlines()[2:]
    assert [tuple(row.split(" | ")[:3]) for row in rows] == [("| 64", "4x4", "eager"), ("| 32", "2x2", "eager")]
    for row in rows:
        assert float(row.split(" | ")[3]) > 0
        assert row.endswith("| n/a | n/a |")  # kernel times are a CUDA profiler reading
