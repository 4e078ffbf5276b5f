"""Latent shards (data/make_latent_shards.py): precomputed MoVQ latents and text embeddings in training."""

from __future__ import annotations

import collections
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fusionframes.data.samplers import InterpolationSampler, KeyframeSampler
from fusionframes.data.shapes import ShapesWorld
from fusionframes.data.webdataset import WebVideoDataset, write_shards
from fusionframes.models.latents import LatentCodec
from fusionframes.models.t2i import TextToImageModel
from fusionframes.modules.keyframes import KeyframesModule
from tests.conftest import ASSETS, ROOT

RES, FRAMES, COUNT = 64, 12, 2
SAMPLER = KeyframeSampler(num_frames=4, stride=3)  # 10 source frames per clip


def make_latent_shards(argv: list[str]) -> None:
    spec = importlib.util.spec_from_file_location("make_latent_shards", ROOT / "data" / "make_latent_shards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(argv)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[str], Path]:
    """(video shards, latent shards, latent folder); a third, caption-less video is skipped by the tool."""
    world = ShapesWorld(resolution=RES, num_frames=FRAMES, seed=4)
    samples = [(f"{i:04d}", world.render(world.scene(i), range(FRAMES)), world.scene(i).caption() if i < COUNT
                else "", world.scene(i).to_dict()) for i in range(COUNT + 1)]
    root = tmp_path_factory.mktemp("latent_shards")
    videos = write_shards(samples, str(root / "videos" / "v-%03d.tar"), fps=24, max_per_shard=8)
    out = root / "latents"
    make_latent_shards(["--shards", videos[0], "--out", str(out), "--movq", str(ASSETS / "movq"), "--t2i",
                        str(ASSETS / "t2i"), "--resolution", str(RES), "--device", "cpu"])
    return videos, sorted(str(p) for p in out.glob("latents-*.tar")), out


def test_latent_clips_match_encoded_video_clips(shards) -> None:
    videos, latents, folder = shards
    codec = LatentCodec.from_pretrained(ASSETS / "movq")
    encoder = TextToImageModel.from_pretrained(ASSETS / "t2i").text_encoder
    from_video = list(WebVideoDataset(videos, SAMPLER, resolution=RES, seed=1))
    from_latents = list(WebVideoDataset(latents, SAMPLER, resolution=RES, seed=1,
                                        null_text_path=str(folder / "null_text.safetensors")))
    assert len(from_latents) == COUNT == len(from_video)  # the caption-less video is in neither
    with torch.no_grad():
        for video, latent in zip(from_video, from_latents, strict=True):
            assert torch.equal(video["positions"], latent["positions"]) and video["caption"] == latent["caption"]
            assert latent["latents"].shape == (4, codec.channels, RES // codec.factor, RES // codec.factor)
            assert torch.allclose(latent["latents"], codec.encode(video["video"][None])[0], atol=2e-2)
            hidden, mask = encoder.encode([latent["caption"]])
            length = mask.shape[1]
            assert torch.allclose(latent["text_embedding"][:length], hidden[0], atol=1e-2)
            assert torch.equal(latent["text_mask"], F.pad(mask[0], (0, 32 - length)))
            null, null_mask = encoder.encode([""])
            assert torch.allclose(latent["null_text_embedding"][: null_mask.shape[1]], null[0], atol=1e-2)


def test_keyframes_module_trains_on_latent_shards_as_on_videos(shards) -> None:
    videos, latents, folder = shards
    module = KeyframesModule(TextToImageModel.from_pretrained(ASSETS / "t2i"),
                             {"variant": "conv1d_attn1d_blocks"}, str(ASSETS / "movq"),
                             lambda params: torch.optim.AdamW(params), num_frames=4, frame_stride=3, resolution=RES)
    collate = torch.utils.data.default_collate
    video = collate(list(WebVideoDataset(videos, SAMPLER, resolution=RES, seed=1)))
    latent = collate(list(WebVideoDataset(latents, SAMPLER, resolution=RES, seed=1,
                                          null_text_path=str(folder / "null_text.safetensors"))))
    with torch.no_grad():
        for drop in (torch.tensor([False, False]), torch.tensor([True, False])):
            losses = [module._loss(b, drop, torch.Generator().manual_seed(0), t=torch.tensor([100, 700]))
                      for b in (video, latent)]
            assert torch.allclose(*losses, rtol=2e-2)
        no_null = {k: v for k, v in latent.items() if not k.startswith("null_text")}
        with pytest.raises(ValueError, match="null_text_path"):
            module._loss(no_null, torch.tensor([True, False]), torch.Generator().manual_seed(0))


def test_latent_shard_errors_and_skips(shards, tmp_path) -> None:
    _, latents, _ = shards
    with pytest.raises(ValueError, match="latent shards serve clip samplers"):
        next(iter(WebVideoDataset(latents, InterpolationSampler(skips=[1], num_keyframes=2))))
    other = WebVideoDataset(latents, SAMPLER, resolution=32)
    assert list(other) == [] and other.stats == collections.Counter(wrong_resolution=COUNT)
    with pytest.raises(FileNotFoundError, match="null_text_path="):
        WebVideoDataset(latents, SAMPLER, null_text_path=str(tmp_path / "missing.safetensors"))
