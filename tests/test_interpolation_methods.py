"""The interpolation-methods benchmark runs every method end to end on CPU (shipped pipeline, one tiny video)."""

from __future__ import annotations

import copy

import torch

from benchmarks.interpolation_methods import main
from fusionframes.models.interpolation_unet import InterpolationUNet
from fusionframes.models.t2i import TextToImageModel
from tests.conftest import ASSETS


def test_every_method_fills_the_same_true_keyframes_and_lands_in_the_table(tmp_path):
    t2i = TextToImageModel.from_pretrained(ASSETS / "t2i")
    with torch.no_grad():
        null_context, null_mask = t2i.text_encoder.encode([""])
    # An untrained MFI model stands in for an experiment=interpolation_mfi export.
    InterpolationUNet(copy.deepcopy(t2i.unet), null_context[0], null_mask[0], "mfi").save_pretrained(tmp_path / "mfi")
    out = tmp_path / "table.md"
    table = main(["--device", "cpu", "--videos", "1", "--keyframes", "3", "--skips", "3", "--steps", "1",
                  "--interpolation-steps", "1", "--inbetween-steps", "5", "--mfi-dir", str(tmp_path / "mfi"),
                  "--fvdm-dir", str(ASSETS / "keyframes"), "--out", str(out), "--zerosmooth",
                  "lambda_schedule=constant", "lambda_value=0.5", "--strips", str(tmp_path / "strips")])
    assert out.read_text() == table + "\n"
    rows = {line.split(" | ")[2]: line.split(" | ") for line in table.splitlines() if line.startswith("| 3 |")}
    # 5 time-reversal steps: MPD distils in the first (floor(0.3 * 5) = floor(0.2 * 5) = 1) over both bases.
    assert list(rows) == ["ground truth", "fusionframes", "mfi", "fvdm (scalar-trained)", "fvdm", "zerosmooth",
                          "trf", "vibid", "mpd_trf", "mpd_vibid"]
    for name, cells in rows.items():
        assert cells[1] == "3 -> 9"
        if name != "ground truth":
            psnr, keyframe_psnr, error, direction, _, seconds = (float(c) for c in cells[4:9] + [cells[9][:-2]])
            assert psnr > 0 and keyframe_psnr > 0 and error >= 0 and 0 <= direction <= 1 and seconds > 0
    # The shipped interpolator keeps the true keyframes and, even at one step, lands near the true frames.
    assert float(rows["fusionframes"][4]) > 20 and float(rows["fusionframes"][5]) > 25
    assert "lambda_schedule=constant lambda_value=0.5" in table and "time-reversal samplers 5 steps" in table
    # The time-reversal samplers run the --fvdm-dir model and keep the true keyframes (up to the decoder's round trip).
    for name in ("trf", "vibid", "mpd_trf", "mpd_vibid"):
        assert rows[name][3] == str(ASSETS / "keyframes") and float(rows[name][5]) > 25
    assert (tmp_path / "strips" / "s3.png").is_file()
