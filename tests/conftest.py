"""Shared fixtures: Hydra configs composed exactly as `train.py` composes them, shrunk to CPU test size.

The suite runs torch on one intra-op thread (child processes too, through OMP_NUM_THREADS): its models are tiny,
and on a 2-core machine a second OpenMP thread competing with DataLoader workers makes their steps several times
slower.

Child processes (train.py, sample.py, evaluate.py, DDP ranks) share a bytecode cache under the session's temp dir
where PYTHONDONTWRITEBYTECODE is set: without one, each compiles torch, Lightning, diffusers and transformers from
source again (about 12 s of CPU on every start instead of 5 s).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from fusionframes.config import CONFIG_DIR
from fusionframes.utils.random_kandinsky3 import TINY_KANDINSKY3_UNET, random_kandinsky3_dir, word_level_t5

os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "fusionframes" / "assets" / "shapes"

# Tiny run settings shared by every stage: CPU, 32x32 frames, batch 2, a checkpoint every step, no workers.
TINY_RUN = [
    "trainer=cpu", "logger=csv", "data.resolution=32", "data.datamodule.batch_size=2",
    "data.datamodule.val_batch_size=2", "data.datamodule.num_workers=0", "trainer.max_steps=2",
    "trainer.val_check_interval=1", "trainer.log_every_n_steps=1", "trainer.limit_val_batches=1",
    "callbacks.progress_bar.refresh_rate=0",
]
TINY_MODEL = {
    "shapes/movq": [
        # SpatialNorm in diffusers hard-codes 32 groups, so 32 channels is the floor.
        "model.movq.block_out_channels=[32,32,32]", "model.movq.num_vq_embeddings=32",
    ],
    "shapes/t2i": [
        f"model.movq_path={ASSETS / 'movq'}", "model.unet.block_out_channels=[16,32,32]",
        "model.unet.norm_num_groups=8", "model.unet.attention_head_dim=8", "model.text_encoder.dim=32",
        "model.text_encoder.depth=1", "model.num_inference_steps=2", "model.num_val_images=2",
    ],
    # Video decoder on the shipped MoVQ: 3-frame clips of 16x16 pixels (4x4 latents), one clip per batch.
    **{f"decoder_{variant}": [
        "data.resolution=16", "data.sampler.num_frames=3", "data.datamodule.batch_size=1",
        "data.datamodule.val_batch_size=1", "model.decoder.attention_head_dim=32",
    ] for variant in ("conv3x1x1", "conv3x3x3", "conv3x1x1_attn", "conv3x3x3_attn", "resblock_attn", "conv2d_to_3d")},
}
# Keyframes: 4 frames of 8x8 latents on the shipped T2I backbone, one sampling step in validation.
TINY_KEYFRAMES = [
    "data.sampler.num_frames=4", "data.datamodule.batch_size=1", "data.datamodule.val_batch_size=1",
    "model.num_inference_steps=1", "model.num_val_videos=1", "model.temporal.head_dim=32",
]
for _name in ("keyframes_blocks", "keyframes_attn3d", "keyframes_conv3d", "keyframes_layers", "keyframes_fvdm",
              "keyframes_text_motion", "keyframes_directions"):
    TINY_MODEL[_name] = TINY_KEYFRAMES
# Interpolation: 3 keyframes (9-frame clips) of 8x8 latents on the shipped T2I backbone, one sampling step.
TINY_INTERPOLATION = [
    "data.sampler.num_keyframes=3", "data.datamodule.batch_size=1", "data.datamodule.val_batch_size=1",
    "model.num_inference_steps=1",
]
for _name in ("interpolation", "interpolation_mfi", "interpolation_mfi_windows"):
    TINY_MODEL[_name] = TINY_INTERPOLATION


@pytest.fixture(scope="session", autouse=True)
def child_bytecode_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Child processes' shared bytecode cache (module docstring)."""
    with pytest.MonkeyPatch.context() as env:
        if os.environ.get("PYTHONDONTWRITEBYTECODE"):
            env.delenv("PYTHONDONTWRITEBYTECODE")
            env.setenv("PYTHONPYCACHEPREFIX", str(tmp_path_factory.mktemp("pycache")))
        yield


def tiny_t5(words: list[str]):
    """A tiny random transformers T5 encoder and a word-level tokenizer over ``words``, built offline."""
    torch.manual_seed(0)
    return word_level_t5(words, d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8)


@pytest.fixture(scope="session")
def tiny_kandinsky3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Kandinsky 3 pipeline directory: unet/, text_encoder/ + tokenizer/ (T5), scheduler/."""
    from fusionframes.models.text_encoders import shapes_vocabulary

    return random_kandinsky3_dir(
        tmp_path_factory.mktemp("kandinsky3"), shapes_vocabulary(),
        unet=TINY_KANDINSKY3_UNET,
        t5=dict(d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8))


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose ``conf/config.yaml`` with ``overrides`` and register it as the current Hydra run in ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.runtime.cwd = str(ROOT)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


def compose_sample(*overrides: str) -> DictConfig:
    """``conf/sample.yaml`` with ``overrides``, as sample.py composes it."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("sample", overrides=list(overrides))


@pytest.fixture
def tiny_config(tmp_path: Path):
    """``tiny_config(experiment, *overrides, run="a")`` -> a composed tiny config writing under ``tmp_path/run``."""

    def make(experiment: str, *overrides: str, run: str = "a") -> DictConfig:
        args = [f"experiment={experiment}", *TINY_RUN, *TINY_MODEL.get(experiment, []), *overrides]
        return compose_config(args, tmp_path / run)

    return make


