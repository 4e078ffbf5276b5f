"""fusionframes.export: clear errors for what it cannot convert (conversion itself: tests/test_keyframes_stage.py)."""

from __future__ import annotations

import pytest
import torch

from fusionframes.export import export


def test_export_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export(tmp_path / "missing.ckpt", tmp_path / "out")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ValueError, match="holds no run config"):
        export(foreign, tmp_path / "out")
    with pytest.raises(ValueError, match="dtype must be one of"):
        export(foreign, tmp_path / "out", dtype="int8")
