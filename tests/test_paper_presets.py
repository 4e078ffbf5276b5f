"""The paper-scale presets compose and train with tiny stand-ins: a tiny Kandinsky 3 dir and tiny shards."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.strategies import DeepSpeedStrategy

from fusionframes.data.shapes import ShapesWorld
from fusionframes.data.webdataset import write_shards
from fusionframes.strategies.deepspeed import ResizableDeepSpeedStrategy, saved_world_size
from fusionframes.training import train
from tests.conftest import ASSETS, TINY_RUN, compose_config


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    world = ShapesWorld(resolution=32, num_frames=184, seed=1)
    samples = ((f"{i:04d}", world.render(world.scene(i), range(184)), world.scene(i).caption(),
                world.scene(i).to_dict()) for i in range(2))
    paths = write_shards(samples, str(tmp_path_factory.mktemp("shards") / "train-%06d.tar"), fps=24, max_per_shard=1)
    return str(paths[0]).replace("000000", "{000000..000001}")


STAND_INS = {
    "paper/keyframes_blocks": ["data.sampler.num_frames=4", "model.num_inference_steps=1",
                               "model.temporal.head_dim=8", f"model.movq_path={ASSETS / 'movq'}"],
    "paper/interpolation": ["model.num_inference_steps=1", f"model.movq_path={ASSETS / 'movq'}"],
    "paper/decoder": [f"model.movq_path={ASSETS / 'movq'}", "data.sampler.num_frames=3"],
}


@pytest.mark.parametrize("preset", STAND_INS)
def test_preset_trains_one_step_with_tiny_stand_ins(preset, shards, tiny_kandinsky3_dir, tmp_path):
    backbone = [] if preset == "paper/decoder" else [f"model.unet.path={tiny_kandinsky3_dir}"]
    cfg = compose_config([f"experiment={preset}", *TINY_RUN, "trainer.max_steps=1",
                          "data.datamodule.batch_size=1", "data.datamodule.val_batch_size=1",
                          "data.datamodule.num_workers=0", f"data.train_shards='{shards}'",
                          f"data.val_shards='{shards}'", *backbone, *STAND_INS[preset]], tmp_path)
    assert cfg.data.datamodule.train._target_.endswith("WebVideoDataset")  # TINY_RUN swaps in trainer=cpu
    train(cfg)
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 1


def test_zero1_preset_asks_deepspeed_for_stage_1():
    cfg = compose_config(["experiment=paper/keyframes_blocks", "model.unet.path=/x"], ASSETS)
    assert cfg.trainer.strategy._target_ == "fusionframes.strategies.deepspeed.ResizableDeepSpeedStrategy"
    assert issubclass(ResizableDeepSpeedStrategy, DeepSpeedStrategy)
    assert cfg.trainer.strategy.stage == 1 and cfg.trainer.precision == "bf16-mixed"
    assert cfg.trainer.accumulate_grad_batches == 2 and cfg.data.datamodule.batch_size == 1


def test_the_saved_world_size_of_a_zero_checkpoint_is_its_number_of_optimiser_partitions(tmp_path):
    """What decides whether a resume goes through DeepSpeed's universal format (the conversion itself runs on
    GPUs: docs/distributed.md, 4 -> 2 H200s)."""
    tag = tmp_path / "last.ckpt" / "checkpoint"
    tag.mkdir(parents=True)
    (tag / "mp_rank_00_model_states.pt").touch()
    assert saved_world_size(tmp_path / "last.ckpt") == 0
    for rank in range(4):
        (tag / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").touch()
    assert saved_world_size(tmp_path / "last.ckpt") == 4
