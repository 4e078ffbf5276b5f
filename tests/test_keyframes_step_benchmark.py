"""benchmarks/keyframes_step.py: every row of the table runs, the AnimateDiff peer included, on a tiny UNet."""

from __future__ import annotations

import pytest
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


def test_cuda_graphs_wrap_every_model_and_add_the_eager_reference(monkeypatch):
    """--cuda-graphs: both references, each variant and the peer run through GraphedTrainingCall (a pass-through
    recorder here, as CPUs have no CUDA graphs), and the eager frozen reference gets a row of its own."""
    monkeypatch.setitem(keyframes_step.SIZES, ("unet2d", "tiny"), TINY)
    wrapped = []
    monkeypatch.setattr(keyframes_step, "GraphedTrainingCall", lambda module: wrapped.append(module) or module)
    table = keyframes_step.benchmark("unet2d", "tiny", torch.device("cpu"), torch.float32, ["conv1d_attn1d_blocks"],
                                     steps=1, warmup=1, frames=3, batch=1, checkpointing=False, peer=True,
                                     cuda_graphs=True)
    assert table.splitlines()[0].endswith(", forward and backward replayed as CUDA graphs)")
    names = [line.split(" | ")[0].strip("| ") for line in table.splitlines() if line.startswith("| ")][1:]
    assert names == ["frozen 2D UNet fwd+bwd (to input)", "2D UNet fwd+bwd with weight gradients",
                     "frozen 2D UNet fwd+bwd (to input), eager", "conv1d_attn1d_blocks",
                     "AnimateDiff peer (UNetMotionModel + MotionAdapter)"]
    assert [type(m).__name__ for m in wrapped] == ["Sample", "Sample", "KeyframeUNet", "Sample"]


def test_kernel_kinds_follow_the_names_the_gpu_libraries_give():
    kinds = {
        "triton_per_fused_convolution_native_group_norm_silu_3": "Inductor's fused kernels",
        "void cudnn::engines_precompiled::nchwToNhwcKernel<__nv_bfloat16, float>(...)": "cuDNN layout conversions",
        "void at::native::multi_tensor_apply_kernel<at::native::FusedAdamMathFunctor<float, 4>>(...)": "AdamW",
        "void pytorch_flash::flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel<Flash_bwd_kernel_traits>(...)": "attention",
        "sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize128x128x64": "GEMMs and convolutions",
        "nvjet_hsh_256x128_64x4_2x1_v_bz_coopA_TNT": "GEMMs and convolutions",
        "void at::native::RowwiseMomentsCUDAKernel<float, float>(long, float, float const*, float*, float*)": "norms",
        "void at::native::elementwise_kernel<128, 4, direct_copy_kernel_cuda(...)>(...)": "copies and fills",
        "void at::native::vectorized_elementwise_kernel<4, FillFunctor<float>>(...)": "copies and fills",
        "Memset (Device)": "copies and fills",
        "void at::native::vectorized_elementwise_kernel<4, at::native::silu_kernel(...)>(...)":
            keyframes_step.OTHER_KERNELS,
    }
    assert {name: keyframes_step.kernel_kind(name) for name in kinds} == kinds


def test_kernel_breakdown_gives_each_row_its_own_profile(monkeypatch):
    """--kernel-breakdown: one profile per measured model, in the table's row order; with --cuda-graphs the eager
    reference, measured first, still gets its own (a fake profile numbers the calls here, as CPUs have none)."""
    monkeypatch.setitem(keyframes_step.SIZES, ("unet2d", "tiny"), TINY)
    monkeypatch.setattr(keyframes_step, "GraphedTrainingCall", lambda module: module)
    calls = []

    def profile(step, device, steps):  # AdamW: the call's index; the other kinds sum to 0.5
        calls.append(step)
        return dict.fromkeys(keyframes_step.KINDS, 0.0) | {"AdamW": len(calls) - 1.0, "attention": 0.5}

    monkeypatch.setattr(keyframes_step, "kernel_ms", profile)
    table = keyframes_step.benchmark("unet2d", "tiny", torch.device("cpu"), torch.float32, ["conv1d_attn1d_blocks"],
                                     steps=1, warmup=1, frames=3, batch=1, checkpointing=False, peer=True,
                                     cuda_graphs=True, kernel_breakdown=True)
    lines = table.splitlines()
    kernels = lines[lines.index("| model | Inductor's fused kernels | cuDNN layout conversions | AdamW | attention | "
                                "GEMMs and convolutions | norms | copies and fills | other (elementwise, reductions) | "
                                "total |") + 2:]
    rows = {cells[0].strip("| "): cells for cells in (line.split(" | ") for line in kernels)}
    measured = ["frozen 2D UNet fwd+bwd (to input), eager", "frozen 2D UNet fwd+bwd (to input)",
                "2D UNet fwd+bwd with weight gradients", "conv1d_attn1d_blocks",
                "AnimateDiff peer (UNetMotionModel + MotionAdapter)"]
    assert list(rows) == [measured[i] for i in (1, 2, 0, 3, 4)]  # the order of the time table above
    for index, name in enumerate(measured):
        assert float(rows[name][3]) == index and float(rows[name][-1].strip(" |")) == index + 0.5, name
    assert len(calls) == 5


def test_flop_table_counts_the_temporal_work_on_the_meta_device():
    from benchmarks.keyframes_flops import table

    rows = [line.split(" | ") for line in table(TINY, ["conv1d_attn1d_blocks"], [1, 4], frames=3).splitlines()[2:]]
    ratios = {cells[1]: float(cells[-1].strip(" |")) for cells in rows}
    assert ratios["–"] == 1.0 and ratios["4"] > 1.0  # temporal modules add FLOPs to the frozen forward + backward
    assert ratios["1"] > ratios["4"]  # a wider Conv1D bottleneck costs more


def test_throughput_cells_are_clips_per_second_flop_rate_and_utilisation():
    assert keyframes_step.throughput(flops=3 * 10**12, ms=250.0, batch=2, peak=24 * 10**12) == "8.00 | 12 | 50.0%"
    assert keyframes_step.throughput(flops=3 * 10**12, ms=250.0, batch=1, peak=None) == "4.00 | 12 | –"


def test_each_row_has_its_models_flops_and_throughput(monkeypatch):
    """The table's FLOPs per step are those counted on the meta device for each row's model; off CUDA there is no
    peak, so no utilisation."""
    monkeypatch.setitem(keyframes_step.SIZES, ("unet2d", "tiny"), TINY)
    table = keyframes_step.benchmark("unet2d", "tiny", torch.device("cpu"), torch.float32, ["conv1d_attn1d_blocks"],
                                     steps=1, warmup=1, frames=3, batch=2, checkpointing=False, peer=True)
    rows = {cells[0].strip("| "): cells for cells in (line.split(" | ") for line in table.splitlines()
                                                     if line.startswith("| ") and not line.startswith("| model"))}
    flops = {"frozen 2D UNet fwd+bwd (to input)": keyframes_step.frozen_flops(TINY, 3, 2),
             "2D UNet fwd+bwd with weight gradients": keyframes_step.frozen_flops(TINY, 3, 2, weight_grads=True),
             "conv1d_attn1d_blocks": keyframes_step.variant_flops(TINY, 3, 2, "conv1d_attn1d_blocks"),
             "AnimateDiff peer (UNetMotionModel + MotionAdapter)": keyframes_step.peer_flops(TINY, 3, 2)}
    assert flops["frozen 2D UNet fwd+bwd (to input)"] < flops["2D UNet fwd+bwd with weight gradients"]
    assert flops["frozen 2D UNet fwd+bwd (to input)"] < min(flops["conv1d_attn1d_blocks"],
                                                            flops["AnimateDiff peer (UNetMotionModel + MotionAdapter)"])
    assert rows.keys() == flops.keys()
    for name, cells in rows.items():
        ms = float(cells[1].replace(",", ""))
        assert float(cells[4]) == float(f"{flops[name] / 1e12:.4g}"), name
        clips, rate = float(cells[5]), float(cells[6])  # from the unrounded ms; the table shows it to 0.1 ms
        assert clips == pytest.approx(2 * 1000 / ms, rel=2e-3)
        assert rate == pytest.approx(flops[name] / ms / 1e9, rel=2e-3)
        assert cells[7] == "–", name
    assert table.splitlines()[-1].endswith("which Lightning's get_available_flops does not know here (–).")
