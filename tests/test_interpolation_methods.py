"""The interpolation-methods benchmark runs every method end to end on CPU (shipped pipeline, one tiny video)."""

from __future__ import annotations

import copy

import pytest
import torch

from benchmarks.interpolation_methods import main
from fusionframes.models.backward_motion import BackwardKeyframeUNet
from fusionframes.models.interpolation_unet import InterpolationUNet
from fusionframes.models.keyframe_unet import KeyframeUNet
from fusionframes.models.t2i import TextToImageModel
from tests.conftest import ASSETS


def test_every_method_fills_the_same_true_keyframes_and_lands_in_the_table(tmp_path):
    t2i = TextToImageModel.from_pretrained(ASSETS / "t2i")
    with torch.no_grad():
        null_context, null_mask = t2i.text_encoder.encode([""])
    # An untrained MFI model stands in for an experiment=interpolation_mfi export.
    InterpolationUNet(copy.deepcopy(t2i.unet), null_context[0], null_mask[0], "mfi").save_pretrained(tmp_path / "mfi")
    # An untrained backward-motion model of the --fvdm-dir model stands in for an experiment=gi_backward export.
    forward = KeyframeUNet.from_pretrained(ASSETS / "keyframes", t2i.unet)
    BackwardKeyframeUNet(forward).save_pretrained(tmp_path / "gi", forward_dir=ASSETS / "keyframes")
    out = tmp_path / "table.md"
    table = main(["--device", "cpu", "--videos", "1", "--keyframes", "3", "--skips", "3", "--steps", "1",
                  "--interpolation-steps", "1", "--mfi-dir", str(tmp_path / "mfi"), "--fvdm-dir",
                  str(ASSETS / "keyframes"), "--gi-backward", str(tmp_path / "gi"), "--out", str(out), "--zerosmooth",
                  "lambda_schedule=constant", "lambda_value=0.5", "--inbetween", "num_steps=3", "num_mpd_steps=1",
                  "recurrence=1", "--strips", str(tmp_path / "strips")])
    assert out.read_text() == table + "\n"
    rows = {line.split(" | ")[2]: line.split(" | ") for line in table.splitlines() if line.startswith("| 3 |")}
    # 3 time-reversal steps, the first of them MPD's over both bases, GI's with one extra pass.
    assert list(rows) == ["ground truth", "fusionframes", "mfi", "fvdm (scalar-trained)", "fvdm", "zerosmooth",
                          "trf", "vibid", "mpd_trf", "mpd_vibid", "gi"]
    for name, cells in rows.items():
        assert cells[1] == "3 -> 9"
        if name != "ground truth":
            psnr, keyframe_psnr, error, direction, _, seconds = (float(c) for c in cells[4:9] + [cells[9][:-2]])
            assert psnr > 0 and keyframe_psnr > 0 and error >= 0 and 0 <= direction <= 1 and seconds > 0
    # The shipped interpolator keeps the true keyframes and, even at one step, lands near the true frames.
    assert float(rows["fusionframes"][4]) > 20 and float(rows["fusionframes"][5]) > 25
    assert "lambda_schedule=constant lambda_value=0.5" in table
    assert "time-reversal samplers at their conf/inbetween settings with num_steps=3 num_mpd_steps=1" in table
    # The time-reversal samplers run the --fvdm-dir model and keep the true keyframes (up to the decoder's round trip).
    for name in ("trf", "vibid", "mpd_trf", "mpd_vibid"):
        assert rows[name][3] == str(ASSETS / "keyframes") and float(rows[name][5]) > 25
    assert rows["gi"][3] == str(tmp_path / "gi") and float(rows["gi"][5]) > 25
    assert (tmp_path / "strips" / "s3.png").is_file()


def test_an_unknown_time_reversal_setting_is_one_clear_error(capsys):
    with pytest.raises(SystemExit):
        main(["--device", "cpu", "--inbetween", "num_step=5"])
    assert "--inbetween num_step is not a setting of the conf/inbetween samplers" in capsys.readouterr().err
