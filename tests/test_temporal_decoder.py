"""Temporal MoVQ decoder (Table 3 variants): identity at init, what trains, sizes, chunking, saving, training runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from diffusers import VQModel

from benchmarks.decoder_table import find_runs, table
from fusionframes.metrics.reconstruction import load_lpips
from fusionframes.models.temporal_decoder import VARIANTS, TemporalMoVQDecoder
from fusionframes.training import train
from tests.conftest import ASSETS, TINY_MODEL, TINY_RUN, compose_config

TEMPORAL_VARIANTS = [v for v in VARIANTS if v != "conv2d_to_3d"]


@pytest.fixture(scope="module")
def movq() -> VQModel:
    """A tiny random MoVQ: 2 levels of 32 channels (SpatialNorm hard-codes 32 groups), 2x downsampling."""
    torch.manual_seed(0)
    return VQModel(block_out_channels=(32, 32), layers_per_block=1, latent_channels=4, num_vq_embeddings=16,
                   norm_type="spatial", down_block_types=("DownEncoderBlock2D",) * 2,
                   up_block_types=("UpDecoderBlock2D",) * 2).eval()


def image_decode(movq: VQModel, latents: torch.Tensor) -> torch.Tensor:
    return movq.decode(latents.flatten(0, 1), force_not_quantize=True).sample.unflatten(0, latents.shape[:2])


def perturb_new_weights(decoder: TemporalMoVQDecoder, std: float = 0.05) -> None:
    """Move every new weight off its identity init (for conv2d_to_3d: the whole inflated kernels)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name in decoder.new_parameter_names:
            p = decoder.get_parameter(name)
            p.add_(torch.randn_like(p) * std)


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_at_init_decodes_exactly_like_the_image_decoder(movq, variant):
    latents = torch.randn(2, 5, 4, 8, 8)
    video = TemporalMoVQDecoder(movq, variant).decode(latents)
    assert video.shape == (2, 5, 3, 16, 16)
    torch.testing.assert_close(video, image_decode(movq, latents), rtol=0, atol=1e-5)


def test_shipped_movq_variant_at_init_matches_it():
    shipped = VQModel.from_pretrained(ASSETS / "movq").eval()
    latents = torch.randn(1, 3, 4, 4, 4)
    video = TemporalMoVQDecoder(shipped, "conv3x3x3_attn").decode(latents)
    torch.testing.assert_close(video, image_decode(shipped, latents), rtol=0, atol=1e-5)


@pytest.mark.parametrize("variant", TEMPORAL_VARIANTS)
def test_finetune_temporal_keeps_spatial_weights_bit_identical(movq, variant):
    decoder = TemporalMoVQDecoder(movq, variant, finetune="temporal")
    before = {n: p.detach().clone() for n, p in decoder.named_parameters()}
    optimizer = torch.optim.AdamW(decoder.trainable_parameters(), lr=1e-2, weight_decay=0.1)
    loss = (decoder.decode(torch.randn(1, 4, 4, 8, 8)) - torch.rand(1, 4, 3, 16, 16)).abs().mean()
    loss.backward()
    optimizer.step()
    new = set(decoder.new_parameter_names)
    spatial = [n for n in before if n not in new]
    assert spatial and all(torch.equal(decoder.get_parameter(n), before[n]) for n in spatial)
    assert any(not torch.equal(decoder.get_parameter(n), before[n]) for n in new)
    assert {id(p) for p in decoder.trainable_parameters()} == {id(decoder.get_parameter(n)) for n in new}


def test_conv2d_to_3d_trains_the_whole_decoder_and_rejects_temporal(movq):
    with pytest.raises(ValueError, match="finetune='temporal' is not allowed with variant 'conv2d_to_3d'"):
        TemporalMoVQDecoder(movq, "conv2d_to_3d", finetune="temporal")
    decoder = TemporalMoVQDecoder(movq, "conv2d_to_3d", finetune="decoder")
    kernel = decoder.decoder.conv_in.module.weight
    assert kernel.shape[2] == 3 and not kernel[:, :, 0].any() and not kernel[:, :, 2].any()
    optimizer = torch.optim.AdamW(decoder.trainable_parameters(), lr=1e-2)
    decoder.decode(torch.randn(1, 4, 4, 8, 8)).square().mean().backward()
    optimizer.step()
    assert kernel[:, :, 0].any() and kernel[:, :, 2].any()


def test_parameter_counts_per_variant(movq):
    counts = {v: TemporalMoVQDecoder(movq, v).parameter_counts() for v in VARIANTS}
    print("\n| variant | image decoder | new | trainable (decoder) | total |\n|---|---|---|---|---|")
    for v, c in counts.items():
        print(f"| {v} | {c['image_decoder']} | {c['new']} | {c['trainable']} | {c['total']} |")
    assert len({c["image_decoder"] for c in counts.values()}) == 1
    assert all(c["new"] > 0 and c["trainable"] == c["total"] == c["image_decoder"] + c["new"] for c in counts.values())
    new = {v: c["new"] for v, c in counts.items()}
    assert new["conv3x3x3"] > new["conv2d_to_3d"] > new["conv3x1x1"]
    assert new["conv3x3x3_attn"] > new["conv3x3x3"] and new["conv3x1x1_attn"] > new["conv3x1x1"]
    assert max(new, key=new.get) == "conv3x3x3_attn"
    temporal = TemporalMoVQDecoder(movq, "conv3x1x1", finetune="temporal").parameter_counts()
    assert temporal["trainable"] == temporal["new"]


def test_chunked_decoding_of_20_frames(movq):
    """Exact when one chunk covers the clip; close across chunk borders.

    Tolerance: the new weights are perturbed (std 0.05), which moves the output by about 0.19 on average off the
    image decoder's (the temporal layers' own contribution). Chunking only cuts the temporal context at window
    ends, so its error must stay a small fraction of that contribution: at most 20% on average over the clip and
    50% at the worst frame (measured: 12% and 27%).
    """
    decoder = TemporalMoVQDecoder(movq, "conv3x3x3_attn")
    perturb_new_weights(decoder)
    latents = torch.randn(1, 20, 4, 8, 8)
    with torch.no_grad():
        full = decoder.decode(latents)
        assert torch.equal(decoder.decode_chunked(latents, chunk=20, overlap=2), full)
        assert torch.equal(decoder.decode_chunked(latents, chunk=32, overlap=2), full)
        chunked = decoder.decode_chunked(latents, chunk=8, overlap=2)
        contribution = (full - image_decode(movq, latents)).abs().mean()
    error = (chunked - full).abs().mean(dim=(0, 2, 3, 4))
    assert contribution > 0.05
    assert error.mean() < 0.2 * contribution and error.max() < 0.5 * contribution


@pytest.mark.parametrize(("chunk", "overlap", "message"), [(0, 0, "chunk must be"), (4, 4, "overlap must be in")])
def test_chunked_decoding_rejects_bad_windows(movq, chunk, overlap, message):
    with pytest.raises(ValueError, match=message):
        TemporalMoVQDecoder(movq, "conv3x1x1").decode_chunked(torch.randn(1, 6, 4, 8, 8), chunk, overlap)


def test_bad_variant_and_finetune_are_clear_errors(movq):
    with pytest.raises(ValueError, match="variant 'conv5x5x5' is unknown"):
        TemporalMoVQDecoder(movq, "conv5x5x5")
    with pytest.raises(ValueError, match="finetune='all' is not allowed"):
        TemporalMoVQDecoder(movq, "conv3x1x1", finetune="all")


def test_save_and_load_round_trip(movq, tmp_path):
    decoder = TemporalMoVQDecoder(movq, "resblock_attn", finetune="temporal", attention_head_dim=16)
    perturb_new_weights(decoder)
    decoder.save_pretrained(tmp_path / "decoder")
    loaded = TemporalMoVQDecoder.from_pretrained(tmp_path / "decoder")
    assert (loaded.variant, loaded.finetune, loaded.attention_head_dim) == ("resblock_attn", "temporal", 16)
    latents = torch.randn(1, 4, 4, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded.decode(latents), decoder.decode(latents), rtol=0, atol=0)


def test_lpips_without_local_weights_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.lpips_path=.* does not exist"):
        load_lpips(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="has no checkpoints/alexnet-owt-7be5be79.pth"):
        load_lpips(tmp_path)


RUNS = [(v, "decoder") for v in VARIANTS] + [("conv3x1x1", "temporal")]


@pytest.fixture(scope="module")
def multirun(tmp_path_factory) -> Path:
    """One training step (and a validation) per variant through ``train``, laid out like a Hydra multirun."""
    root = tmp_path_factory.mktemp("multirun")
    for i, (variant, finetune) in enumerate(RUNS):
        experiment = f"decoder_{variant}"
        overrides = [f"experiment={experiment}", *TINY_RUN, *TINY_MODEL[experiment], "trainer.max_steps=1",
                     f"model.finetune={finetune}"]
        train(compose_config(overrides, root / str(i)))
    return root


@pytest.mark.parametrize("index", range(len(RUNS)), ids=[f"{v}-{f}" for v, f in RUNS])
def test_one_training_step_per_variant(multirun, index):
    variant, finetune = RUNS[index]
    run = multirun / str(index)
    assert list((run / "csv" / "media").glob("val_reconstructions_*.png"))
    decoder = TemporalMoVQDecoder.from_pretrained(run / "export" / "decoder")
    assert (decoder.variant, decoder.finetune) == (variant, finetune)
    assert decoder.decode(torch.randn(1, 2, 4, 4, 4)).shape == (1, 2, 3, 16, 16)
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert all(math.isfinite(v.float().sum()) for v in state.values())
    assert not [k for k in state if k.startswith("codec.")]
    # finetune=temporal: the spatial weights are copies of the frozen MoVQ, saved by reference only
    assert ("video_decoder.post_quant_conv.weight" in state) == (finetune == "decoder")


def test_decoder_table_reads_the_multirun(multirun):
    text = table(find_runs([multirun]))
    print("\n" + text)
    lines = text.strip().splitlines()
    assert len(lines) == 2 + 1 + len(RUNS)  # header, separator, image decoder, one row per run
    assert lines[2].startswith("| Image |") and "| 3x3x3 Conv + Attn | Decoder |" in text
    assert "| 3x1x1 Conv | Temporal |" in text and "n/a" in text
