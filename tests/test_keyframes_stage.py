"""Keyframe stage through `train.py`: each variant trains only its temporal weights on the frozen backbone."""

from __future__ import annotations

import json

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from safetensors.torch import load_file

from fusionframes.data.shapes import COLOURS, DIRECTIONS, MOTIONS, SHAPES
from fusionframes.export import export
from fusionframes.models.keyframe_unet import KeyframeUNet
from fusionframes.models.t2i import TextToImageModel
from fusionframes.training import train
from tests.conftest import ASSETS

EXPERIMENTS = ["keyframes_blocks", "keyframes_attn3d", "keyframes_conv3d", "keyframes_layers"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_one_training_step_per_variant_saves_only_temporal_weights(experiment, tiny_config, tmp_path):
    train(tiny_config(experiment, "trainer.max_steps=1"))
    run = tmp_path / "a"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    keys = list(ckpt["state_dict"])
    assert keys and all(k.startswith("model.temporal.") for k in keys), keys[:3]
    assert set(ckpt["frozen_base"]) == {"backbone", "codec"}
    assert all(len(ref["sha256"]) == 64 for ref in ckpt["frozen_base"].values())
    assert list((run / "csv" / "media").glob("val_keyframes_*.png"))
    assert list((run / "csv" / "media").glob("val_clip_*.mp4"))

    # The exported temporal weights rebuild the trained model around a freshly loaded frozen backbone,
    # whose weights are bit-identical to the shipped ones (the step did not touch them).
    base = TextToImageModel.from_pretrained(ASSETS / "t2i")
    shipped = {k: v.clone() for k, v in base.unet.state_dict().items()}
    model = KeyframeUNet.from_pretrained(run / "export" / "keyframes", base.unet)
    trained = ckpt["state_dict"]
    # Exports are fp16 (ExportPretrained's default): equal to the trained weights rounded to fp16.
    assert all(torch.equal(v, trained[f"model.temporal.{k}"].half().float())
               for k, v in model.temporal_state_dict().items())
    assert all(torch.equal(v, shipped[k]) for k, v in model.unet.state_dict().items())

    # The checkpoint converts to the same directory and to a plain state dict of exactly its trainable weights.
    exported = export(run / "checkpoints" / "last.ckpt", tmp_path / "exported", dtype="float32")
    rebuilt = KeyframeUNet.from_pretrained(exported, TextToImageModel.from_pretrained(ASSETS / "t2i").unet)
    assert all(torch.equal(v, trained[f"model.temporal.{k}"]) for k, v in rebuilt.temporal_state_dict().items())
    plain = load_file(exported / "trainable.safetensors")
    assert plain.keys() == trained.keys() and all(torch.equal(plain[k], trained[k]) for k in plain)


def test_step_changes_temporal_weights_and_not_the_frozen_backbone(tiny_config):
    from hydra.utils import instantiate

    from fusionframes.modules.keyframes import KeyframesModule  # noqa: F401  (import for the type below)

    cfg = tiny_config("keyframes_blocks", "trainer.max_steps=1")
    module = instantiate(cfg.model, _convert_="all")
    frozen = {k: v.clone() for k, v in module.backbone.state_dict().items()}
    temporal = {k: v.clone() for k, v in module.model.temporal_state_dict().items()}
    datamodule = instantiate(cfg.data.datamodule, _convert_="all")
    batch = next(iter(datamodule.train_dataloader()))
    optimizer = module.configure_optimizers()
    keep = torch.zeros(len(batch["caption"]), dtype=torch.bool)
    loss = module._loss(batch, keep, torch.Generator().manual_seed(0))
    loss.backward()
    optimizer.step()
    assert all(torch.equal(v, module.backbone.state_dict()[k]) for k, v in frozen.items())
    changed = [k for k, v in module.model.temporal_state_dict().items() if not torch.equal(v, temporal[k])]
    assert changed
    assert {id(p) for p in optimizer.param_groups[0]["params"]} == {id(p) for p in module.model.temporal_parameters()}


def test_frame_count_that_does_not_match_the_model_is_a_clear_error(tiny_config):
    cfg = tiny_config("keyframes_blocks", "model.num_frames=6")
    with pytest.raises((ValueError, InstantiationException), match="model.num_frames=6"):
        train(cfg)


def test_missing_backbone_path_names_the_config_key(tiny_config, tmp_path):
    cfg = tiny_config("keyframes_blocks", f"model.unet.path={tmp_path / 'nowhere'}")
    with pytest.raises((FileNotFoundError, InstantiationException), match="model.unet.path"):
        train(cfg)


def test_kandinsky3_backbone_from_a_local_pipeline_directory_trains(tiny_config, tmp_path, tiny_kandinsky3_dir):
    """`model/unet=kandinsky3 model.unet.path=<dir>`: Kandinsky3UNet + T5 from a diffusers pipeline layout."""
    train(tiny_config("keyframes_blocks", "model/unet=kandinsky3", f"model.unet.path={tiny_kandinsky3_dir}",
                      "model.temporal.head_dim=8", "trainer.max_steps=1"))
    ckpt = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["frozen_base"]["backbone"]["path"] == str(tiny_kandinsky3_dir)
    assert all(k.startswith("model.temporal.") for k in ckpt["state_dict"])
    assert ckpt["config"]["model"]["unet"]["_target_"].endswith("from_kandinsky3")


@pytest.mark.parametrize("override, message", [("model.snr_gamma=0", "model.snr_gamma must be > 0"),
                                               ("model.high_noise_gamma=0.5", "model.high_noise_gamma must be >= 1")])
def test_loss_weighting_out_of_range_is_a_clear_error(tiny_config, override, message):
    with pytest.raises((ValueError, InstantiationException), match=message):
        train(tiny_config("keyframes_blocks", override))


@pytest.mark.parametrize("experiment, colours, shapes, motions", [
    ("keyframes_text_motion", set(COLOURS), set(SHAPES), set(MOTIONS)),
    ("keyframes_directions", {"red"}, {"circle"}, set(DIRECTIONS)),
])
def test_text_motion_experiments_train_text_cross_attention_with_positions(tiny_config, tmp_path, experiment, colours,
                                                                            shapes, motions):
    cfg = tiny_config(experiment, "trainer.max_steps=1")
    combinations = instantiate(cfg.data.world).combinations()
    assert {c["colour"] for c in combinations} == colours and {c["shape"] for c in combinations} == shapes
    assert {c["motion"] for c in combinations} == motions
    train(cfg)
    keys = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert any(k.startswith("model.temporal.text_attention.") for k in keys)
    exported = json.loads((tmp_path / "a" / "export" / "keyframes" / "config.json").read_text())
    assert exported["text_cross_attention"] and exported["text_attention_positions"]
