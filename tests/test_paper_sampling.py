"""benchmarks/paper_sampling.py builds the paper-shaped pipeline (Kandinsky 3 keyframes and interpolator, MoVQ
with a temporal decoder) and samples all stages; here at tiny sizes on CPU."""

from __future__ import annotations

import torch

from benchmarks.paper_sampling import PROMPT, build

TINY_MOVQ = dict(block_out_channels=(32, 32), layers_per_block=1, latent_channels=4,
                 down_block_types=("DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
                 up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D"), norm_type="spatial",
                 num_vq_embeddings=16, vq_embed_dim=4)


def test_the_paper_shaped_pipeline_samples_every_stage(tiny_kandinsky3_dir):
    pipeline = build(tiny_kandinsky3_dir, TINY_MOVQ, resolution=16, device=torch.device("cpu"))
    result = pipeline(PROMPT, fps="high", num_inference_steps=1, interpolation_steps=1, progress=False)
    assert result["video"].shape == (1, 241, 3, 16, 16) and torch.isfinite(result["video"]).all()
    assert list(result["seconds"]) == ["keyframes", "interpolation pass 1 (s=3)", "interpolation pass 2 (s=1)",
                                       "decoding"]
    # The keyframe model and the interpolator are separate copies of the Kandinsky 3 UNet.
    assert pipeline.keyframes.unet is pipeline.t2i.unet and pipeline.interpolation.unet is not pipeline.t2i.unet
    # In bf16 weights without autocast (the benchmark's --precision bf16) every stage runs too.
    low = pipeline.to("cpu", torch.bfloat16)(PROMPT, fps="high", num_inference_steps=1, interpolation_steps=1,
                                             progress=False)
    assert low["latents"].dtype == torch.bfloat16 and torch.isfinite(low["video"]).all()


def test_channels_last_decoder_decodes_what_the_contiguous_one_does():
    from diffusers import VQModel

    from fusionframes.models.temporal_decoder import TemporalMoVQDecoder
    from fusionframes.utils.memory_format import channels_last

    torch.manual_seed(0)
    decoder = TemporalMoVQDecoder(VQModel(**TINY_MOVQ), "conv3x3x3_attn").eval()
    latents = torch.randn(1, 5, 4, 8, 8)
    with torch.no_grad():
        reference = decoder.decode(latents)
        converted = channels_last(decoder)
        assert all(m.weight.is_contiguous(memory_format=torch.channels_last_3d if m.weight.ndim == 5
                                          else torch.channels_last)
                   for m in converted.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)))
        torch.testing.assert_close(converted.decode(latents), reference, atol=1e-5, rtol=1e-4)


def test_sampling_levers_times_every_setting_of_every_network(tmp_path, monkeypatch):
    """benchmarks/sampling_levers.py at tiny size: a row per (network, setting). Without --compile: Dynamo's
    tracing of the UNet takes longer on this CPU than the rest (the pipeline tests cover compile)."""
    from benchmarks import sampling_levers

    out = tmp_path / "levers.md"
    monkeypatch.setattr("sys.argv", ["sampling_levers.py", "--tiny", "--device", "cpu", "--warmup", "1",
                                     "--repeats", "1", "--out", str(out)])
    sampling_levers.main()
    rows = [line.split(" | ") for line in out.read_text().splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + 3 * 3
    assert {row[1] for row in rows[1:]} == {"bf16-mixed", "bf16-true", "bf16-true + channels-last"}
    assert all(float(row[2].strip(" |")) > 0 for row in rows[1:])
