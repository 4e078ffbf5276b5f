"""benchmarks/interpolation_speed.py: every mode timed, the ratios reported, with channels-last weights too."""

from __future__ import annotations

import torch

from benchmarks import interpolation_speed


def test_every_mode_and_the_ratios_with_channels_last_weights(tmp_path, monkeypatch):
    out = tmp_path / "speed.md"
    # 8x8 latents, not the shapes size's 16x16: a quarter of the pixels, still 2x2 at the UNet's deepest level.
    monkeypatch.setattr("sys.argv", ["interpolation_speed.py", "--size", "shapes", "--latents", "8", "--device", "cpu",
                                     "--steps", "1", "--repeats", "1", "--channels-last", "--out", str(out)])
    built = []
    build = interpolation_speed.build
    monkeypatch.setattr(interpolation_speed, "build", lambda *args: built.append(build(*args)) or built[-1])
    interpolation_speed.main()
    table = out.read_text()
    assert all(f"| shapes | 8x8 | {mode} |" in table for mode in ("fusionframes", "mfi", "mfi_windows"))
    assert "8x8: MFI / FusionFrames = " in table and "8x8: MFI on 5-frame windows / FusionFrames = " in table
    assert "channels-last, float32" in table
    convs = [m for model in built for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(built) == 3 and convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
