"""`evaluate.py`: each task evaluates train.py-style runs (stages replaced in the shipped pipeline) and writes a
metrics table as JSON and markdown; bad inputs are one clear error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from fusionframes.config import CONFIG_DIR
from fusionframes.evaluation.cli import run
from fusionframes.models.interpolation_unet import InterpolationUNet
from fusionframes.models.shapes_classifier import ShapesVideoClassifier
from fusionframes.models.t2i import TextToImageModel
from tests.conftest import ASSETS


def evaluate_config(*overrides: str) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("evaluate", overrides=list(overrides))


def fake_run(root: Path, name: str, stage: str, weights: Path, config: dict) -> Path:
    """A directory laid out as train.py leaves a run: export/<stage> and config_resolved.yaml."""
    run_dir = root / name
    shutil.copytree(weights, run_dir / "export" / stage)
    (run_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(config))
    return run_dir


def test_text_to_video_scores_keyframe_runs_with_a_shapes_classifier(tmp_path):
    for seed in (1, 2):
        fake_run(tmp_path / "runs", f"blocks_seed{seed}", "keyframes", ASSETS / "keyframes",
                 {"seed": seed, "model": {"temporal": {"variant": "conv1d_attn1d_blocks"}}})
    torch.manual_seed(0)
    classifier = ShapesVideoClassifier(width=8, feature_dim=16).save_pretrained(tmp_path / "classifier")
    cfg = evaluate_config("evaluation=text_to_video", f"runs=[{tmp_path}/runs/*]", f"output_dir={tmp_path}/out",
                          "evaluation.num_videos=2", "evaluation.batch_size=2", "evaluation.steps=1",
                          "evaluation.metrics.is_splits=1", f"evaluation.metrics.fvd_detector={classifier}",
                          f"evaluation.metrics.is_classifier={classifier}")
    report = run(cfg)
    assert [(r["variant"], r["seed"]) for r in report["rows"]] == [("conv1d_attn1d_blocks", 1),
                                                                   ("conv1d_attn1d_blocks", 2)]
    metrics = report["rows"][0]["metrics"]
    for key in ("fvd", "is", "colour_accuracy", "direction_accuracy", "smoothness", "classifier_all",
                "seconds_per_video"):
        assert key in metrics and metrics[key] == metrics[key], key  # present and not NaN
    assert 1.0 - 1e-5 <= metrics["is"] <= 144.0 and metrics["fvd"] >= 0  # IS >= 1 up to float32 rounding
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["task"] == "text_to_video"
    table = (tmp_path / "out" / "metrics.md").read_text()
    assert "| blocks_seed1 | conv1d_attn1d_blocks | 1 |" in table and "FVD ↓" in table


def test_interpolation_compares_modes_against_true_frames_and_times_them(tmp_path):
    t2i = TextToImageModel.from_pretrained(ASSETS / "t2i")
    context, mask = t2i.text_encoder.encode([""])
    InterpolationUNet(t2i.unet, context[0], mask[0], mode="mfi").save_pretrained(tmp_path / "mfi_weights")
    shutil.copytree(ASSETS / "interpolation" / "scheduler", tmp_path / "mfi_weights" / "scheduler")
    fake_run(tmp_path / "runs", "a_fusionframes", "interpolation", ASSETS / "interpolation",
             {"seed": 1, "model": {"mode": "fusionframes"}})
    fake_run(tmp_path / "runs", "b_mfi", "interpolation", tmp_path / "mfi_weights",
             {"seed": 1, "model": {"mode": "mfi"}})
    cfg = evaluate_config("evaluation=interpolation", f"runs=[{tmp_path}/runs/*]", f"output_dir={tmp_path}/out",
                          "evaluation.num_videos=1", "evaluation.num_keyframes=3", "evaluation.steps=1",
                          "evaluation.world.resolution=32")
    rows = run(cfg)["rows"]
    assert [r["variant"] for r in rows] == ["fusionframes", "mfi"]
    for row in rows:
        m = row["metrics"]
        assert m["psnr_pass1"] > 0 and -1 <= m["ssim_pass2"] <= 1 and m["seconds_pass2"] >= m["seconds_pass1"] > 0
    # The shipped interpolator beats an untrained MFI against the truth.
    assert rows[0]["metrics"]["psnr_pass1"] > 15 > rows[1]["metrics"]["psnr_pass1"]


def test_decoder_compares_the_video_decoder_with_the_image_decoder(tmp_path):
    run_dir = fake_run(tmp_path, "attn_seed1", "decoder", ASSETS / "decoder",
                       {"seed": 1, "model": {"decoder": {"variant": "conv3x3x3_attn"}, "finetune": "decoder"}})
    cfg = evaluate_config("evaluation=decoder", f"runs=[{run_dir}/export/decoder]", f"output_dir={tmp_path}/out",
                          "evaluation.num_videos=2", "evaluation.real.world.resolution=32",
                          "evaluation.real.sampler.num_frames=4")
    (row,) = run(cfg)["rows"]
    assert row["variant"] == "conv3x3x3_attn/decoder" and row["label"] == "attn_seed1"
    m = row["metrics"]
    assert {"psnr", "ssim", "mse", "temporal_error", "psnr_image_decoder", "params_new", "params_total"} <= set(m)
    assert m["params_total"] > m["params_new"] > 0


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"runs entry '.*nothing/\*' matches no directory"):
        run(evaluate_config("evaluation=decoder", f"runs=[{tmp_path}/nothing/*]", f"output_dir={tmp_path}"))
    (tmp_path / "plain").mkdir()
    with pytest.raises(FileNotFoundError, match="neither a train.py run"):
        run(evaluate_config("evaluation=decoder", f"runs=[{tmp_path}/plain]", f"output_dir={tmp_path}"))
    with pytest.raises(ValueError, match="evaluation.fps='fast' is not a mode"):
        run(evaluate_config("evaluation=text_to_video", "evaluation.fps=fast", f"output_dir={tmp_path}"))
    with pytest.raises(FileNotFoundError, match=r"evaluation\.metrics\.fvd_detector=.*missing is not a file"):
        run(evaluate_config("evaluation=text_to_video", f"evaluation.metrics.fvd_detector={tmp_path}/missing",
                            "evaluation.num_videos=1", f"output_dir={tmp_path}"))
