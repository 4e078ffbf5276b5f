"""benchmarks/trajectory_probe.py: the clean clip each motion word predicts from pure noise (shipped models, CPU)."""

from __future__ import annotations

import pytest

from benchmarks import trajectory_probe


def test_probe_writes_a_row_per_direction_and_rejects_bad_timesteps(tmp_path, capsys) -> None:
    out = tmp_path / "probe.md"
    trajectory_probe.main(["--device", "cpu", "--batch", "1", "--timesteps", "980", "--out", str(out)])
    rows = out.read_text().splitlines()[-4:]
    assert [row.split(" | ")[0] for row in rows] == ["| left", "| right", "| up", "| down"]
    for row in rows:  # "+1.2 / -3.4": a finite shift, the shape was found in the predicted clip
        dx, dy = (float(v) for v in row.split(" | ")[1].rstrip(" |").split(" / "))
        assert abs(dx) < 64 and abs(dy) < 64
    with pytest.raises(SystemExit):
        trajectory_probe.main(["--device", "cpu", "--timesteps", "1000"])
    assert "--timesteps must lie in [0, 1000), got [1000]." in capsys.readouterr().err
    with pytest.raises(SystemExit):
        trajectory_probe.main(["--batch", "0"])
    assert "--batch must be >= 1, got 0." in capsys.readouterr().err
