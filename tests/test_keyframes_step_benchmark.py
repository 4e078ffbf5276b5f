"""benchmarks/keyframes_step.py: every row of the table runs, the AnimateDiff peer included, on a tiny UNet."""

from __future__ import annotations

import torch
from diffusers import MotionAdapter, UNet2DConditionModel

from benchmarks import keyframes_step

TINY = keyframes_step.Size(lambda: UNet2DConditionModel(
    block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16, layers_per_block=1,
    attention_head_dim=8), 8, 5, 16)


def test_the_table_has_both_references_our_variant_and_the_animatediff_peer(monkeypatch):
    monkeypatch.setitem(keyframes_step.SIZES, ("unet2d", "tiny"), TINY)
    table = keyframes_step.benchmark("unet2d", "tiny", torch.device("cpu"), torch.float32, ["conv1d_attn1d_blocks"],
                                     steps=1, warmup=1, frames=3, batch=1, checkpointing=False, peer=True)
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in table.splitlines() if line.startswith("| ")}
    assert {"frozen 2D UNet fwd+bwd (to input)", "conv1d_attn1d_blocks",
            "AnimateDiff peer (UNetMotionModel + MotionAdapter)"} <= set(rows)
    peer = rows["AnimateDiff peer (UNetMotionModel + MotionAdapter)"]
    assert float(peer[1].replace(",", "")) > 0 and float(peer[-1].strip(" |M")) > 0


def test_the_peer_trains_only_its_motion_modules():
    run = keyframes_step.Run(TINY, torch.device("cpu"), torch.float32, steps=1, warmup=1,
                             sample=torch.randn(1, 3, 4, 8, 8), context=torch.randn(1, 5, 16),
                             mask=torch.ones(1, 5, dtype=torch.bool), timestep=torch.tensor([10]))
    ms, peak, motion = keyframes_step.measure_animatediff(run, checkpointing=False)
    unet = TINY.make_unet()
    adapter = MotionAdapter(block_out_channels=unet.config.block_out_channels,
                            motion_norm_num_groups=unet.config.norm_num_groups,
                            motion_layers_per_block=unet.config.layers_per_block)
    assert ms > 0 and peak is None
    assert motion == sum(p.numel() for p in adapter.parameters())  # exactly the motion modules train


def variant_parameters(table: str) -> dict[str, float]:
    """Temporal parameters (millions) of the table's KeyframeUNet rows, by variant."""
    rows = (line.split(" | ") for line in table.splitlines() if line.startswith("| conv"))
    return {cells[0].strip("| "): float(cells[-1].strip(" |M")) for cells in rows}


def test_conv_compression_and_compile_temporal_reach_every_variant_and_the_header(monkeypatch):
    monkeypatch.setitem(keyframes_step.SIZES, ("unet2d", "tiny"), TINY)
    compiled = []
    monkeypatch.setattr(keyframes_step.KeyframeUNet, "compile_temporal", lambda self, **kwargs: compiled.append(self))
    tables = [keyframes_step.benchmark("unet2d", "tiny", torch.device("cpu"), torch.float32,
                                      ["conv1d_attn1d_blocks", "conv3d_attn1d_blocks"], steps=1, warmup=1, frames=3,
                                      batch=1, checkpointing=False, **options)
              for options in ({}, {"compression": 4, "compile_temporal": True})]
    assert "compression" not in tables[0].splitlines()[0] and "compiled" not in tables[0].splitlines()[0]
    assert tables[1].splitlines()[0].endswith(", Conv1D compression 4, temporal modules torch.compiled)")
    assert [model.config["conv_compression"] for model in compiled] == [4, 4]
    params = [variant_parameters(table) for table in tables]
    assert params[0].keys() == {"conv1d_attn1d_blocks", "conv3d_attn1d_blocks"}
    assert all(params[1][variant] < params[0][variant] for variant in params[0])  # narrower Conv1D and Conv3D blocks


def test_compile_temporal_also_compiles_each_motion_module_of_the_peer(monkeypatch):
    compiled = []
    monkeypatch.setattr(keyframes_step.AnimateDiffTransformer3D, "compile",
                        lambda self, **kwargs: compiled.append(kwargs), raising=False)
    run = keyframes_step.Run(TINY, torch.device("cpu"), torch.float32, steps=1, warmup=1,
                             sample=torch.randn(1, 3, 4, 8, 8), context=torch.randn(1, 5, 16),
                             mask=torch.ones(1, 5, dtype=torch.bool), timestep=torch.tensor([10]))
    with torch._dynamo.config.patch(cache_size_limit=8):  # compile_each raises it; restored after the test
        keyframes_step.measure_animatediff(run, checkpointing=False, compile_motion=True)
    motion_modules = 2 * 1 + 2 * 2 + 1  # down: 1 per block, up: layers_per_block + 1, mid: 1 (the adapter's defaults)
    assert compiled == [{"dynamic": False}] * motion_modules
