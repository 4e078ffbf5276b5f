"""CUDA-graphed training steps (``GraphedTrainingCall``, ``model.cuda_graphs=true``).

The graph tests need a CUDA device: CI (CPU only) runs the configuration check, and the graph tests run on the GPU
machines (`uv run pytest tests/test_cuda_graph_training.py` there; docs/benchmarks.md records the run).
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from fusionframes.diffusion.cuda_graph import GraphedTrainingCall
from fusionframes.models.keyframe_unet import KeyframeUNet
from fusionframes.training import train
from tests.test_keyframe_unet import BACKBONES, batch, perturb

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


def test_cuda_graphs_off_a_single_cuda_device_is_a_clear_error(tiny_config):
    message = r"needs training on one CUDA device \(no DDP or DeepSpeed\); got SingleDeviceStrategy on cpu"
    with pytest.raises(ValueError, match="model.cuda_graphs=true " + message):
        train(tiny_config("keyframes_blocks", "model.cuda_graphs=true", "trainer.max_steps=1"))


def _grads(model: KeyframeUNet, call, inputs: list[dict[str, torch.Tensor]], dtype: torch.dtype):
    """Outputs of ``call`` on each of ``inputs`` and the temporal gradients accumulated over all of them."""
    outputs = []
    for x in inputs:
        with torch.autocast("cuda", dtype, enabled=dtype != torch.float32, cache_enabled=False):
            out = call(*x.values())
        out.float().square().mean().backward()
        outputs.append(out.detach().float())
    grads = {name: p.grad.clone() for name, p in model.temporal.named_parameters()}
    model.zero_grad(set_to_none=True)
    return outputs, grads


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_graphed_steps_match_eager_ones_and_accumulate(backbone, dtype, monkeypatch):
    """Two micro-batches accumulated through the graphs give the eager outputs and gradients (the replay must not
    overwrite the first micro-batch's gradients); another batch size runs eagerly. In float32 the convolutions run
    without TF32, which cuDNN uses by default and whose rounding depends on the algorithm it picks."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    model = perturb(KeyframeUNet(BACKBONES[backbone](), "conv1d_attn1d_blocks")).cuda().train()
    model.unet.to(dtype)
    inputs = []
    for seed in (0, 1):
        x = {k: v.cuda() for k, v in batch().items()}
        x["sample"] = x["sample"].to(dtype) + seed
        inputs.append(x)
    eager_out, eager_grads = _grads(model, model, inputs, dtype)
    graphed = GraphedTrainingCall(model)
    for _ in range(2):  # the first round captures, the second replays
        graph_out, graph_grads = _grads(model, graphed, inputs, dtype)
    tolerance = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-3)
    for a, b in zip(graph_out, eager_out, strict=True):
        torch.testing.assert_close(a, b, **tolerance)
    assert graph_grads.keys() == eager_grads.keys()
    assert any(g.abs().sum() > 0 for g in eager_grads.values())
    for name, g in graph_grads.items():
        torch.testing.assert_close(g, eager_grads[name], **tolerance, msg=name)
    assert graphed.eager_calls == 0

    smaller = {k: v[:1] for k, v in inputs[0].items()}
    with torch.autocast("cuda", dtype, enabled=dtype != torch.float32, cache_enabled=False):
        torch.testing.assert_close(graphed(*smaller.values()), model(*smaller.values()), **tolerance)
    assert graphed.eager_calls == 1


@requires_cuda
def test_graphed_steps_without_accumulation_copy_no_gradients(monkeypatch):
    """With ``.grad`` set to None between steps (Lightning's default), each replayed step's gradients reach ``.grad``
    in the backward graph's own buffers, the same memory every step, and they are the eager step's gradients."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    model = perturb(KeyframeUNet(BACKBONES["unet2d"](), "conv1d_attn1d_blocks")).cuda().train()
    x = {k: v.cuda() for k, v in batch().items()}
    eager_out, eager_grads = _grads(model, model, [x], torch.float32)
    graphed = GraphedTrainingCall(model)
    addresses = []
    for _ in range(3):  # capture, then two replays
        out = graphed(*x.values())
        out.float().square().mean().backward()
        grads = {name: p.grad for name, p in model.temporal.named_parameters()}
        index = {id(p): i for i, p in enumerate(graphed.trainable)}
        written = {name: graphed.gradient_addresses[index[id(p)]] for name, p in model.temporal.named_parameters()}
        assert written == {name: g.data_ptr() for name, g in grads.items()}  # .grad is where the graph wrote
        addresses.append(written)
        model.zero_grad(set_to_none=True)
    assert addresses[1] == addresses[2]  # the backward graph's buffers
    torch.testing.assert_close(out.detach().float(), eager_out[0], rtol=1e-4, atol=1e-5)
    for name, g in grads.items():
        torch.testing.assert_close(g, eager_grads[name], rtol=1e-4, atol=1e-5, msg=name)


@requires_cuda
def test_a_graphed_model_is_freed_once_unreferenced():
    """The gradient hooks close no reference cycle that Python's collector cannot see: after a capture and a
    replay, dropping the model and its graphed call frees both."""
    model = perturb(KeyframeUNet(BACKBONES["unet2d"](), "conv1d_attn1d_blocks")).cuda().train()
    graphed = GraphedTrainingCall(model)
    x = {k: v.cuda() for k, v in batch().items()}
    for _ in range(2):
        graphed(*x.values()).square().mean().backward()
    freed = weakref.ref(model), weakref.ref(graphed)
    del model, graphed
    gc.collect()
    assert [ref() for ref in freed] == [None, None]


@requires_cuda
def test_keyframe_training_with_cuda_graphs_and_compiled_temporal_modules(tiny_config, tmp_path, monkeypatch):
    """`train.py experiment=keyframes_blocks model.cuda_graphs=true model.temporal.compile=true` on one GPU:
    one capture, at the first training batch, then replays."""
    captures = []
    capture = torch.cuda.make_graphed_callables
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", lambda *a, **k: captures.append(a) or capture(*a, **k))
    metrics = train(tiny_config("keyframes_blocks", "trainer.accelerator=gpu", "trainer.precision=bf16-mixed",
                                "model.cuda_graphs=true", "model.temporal.compile=true", "trainer.max_steps=3",
                                "trainer.limit_val_batches=0"))  # the GPU machines lack PyAV for validation videos
    assert len(captures) == 1 and torch.isfinite(torch.tensor(metrics["train/loss"]))
    ckpt = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
