"""Text -> video with the shipped shapes-world pipeline: frame counts, motion that follows the prompt, determinism,
round trip, CLI, errors."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from fusionframes.metrics.shapes import centroid_shift, classify_colour, classify_motion, measure
from fusionframes.pipeline import FusionFramesPipeline
from fusionframes.sampling_cli import run
from fusionframes.utils.video_io import decode_video
from tests.conftest import ASSETS, ROOT, compose_sample

PROMPT = "a red circle moving right quickly on a black background"
FAST = dict(num_inference_steps=2, interpolation_steps=1, progress=False)


@pytest.fixture(scope="module")
def pipeline() -> FusionFramesPipeline:
    return FusionFramesPipeline.from_pretrained(ASSETS)


@pytest.mark.parametrize(("fps", "frames", "rate"), [("keyframes", 16, 2), ("medium", 61, 8), ("high", 241, 24)])
def test_each_fps_mode_gives_its_frame_count(pipeline, fps, frames, rate):
    result = pipeline(PROMPT, fps=fps, **FAST)
    assert result["keyframes"].shape == (1, 16, 4, 16, 16)
    assert result["video"].shape == (1, frames, 3, 64, 64)
    assert pipeline.fps(fps) == rate
    assert list(result["seconds"])[0] == "keyframes" and list(result["seconds"])[-1] == "decoding"
    if fps != "keyframes":  # interpolation keeps the keyframes exactly, every 4th (then 16th) latent
        assert torch.equal(result["latents"][:, :: 4 if fps == "medium" else 16], result["keyframes"])


def test_same_seed_same_video_and_save_load_round_trip(pipeline, tmp_path):
    first = pipeline(PROMPT, fps="medium", seed=7, **FAST)["video"]
    assert torch.equal(first, pipeline(PROMPT, fps="medium", seed=7, **FAST)["video"])
    assert not torch.equal(first, pipeline(PROMPT, fps="medium", seed=8, **FAST)["video"])
    pipeline.save_pretrained(tmp_path / "copy")
    reloaded = FusionFramesPipeline.from_pretrained(tmp_path / "copy")
    assert torch.equal(first, reloaded(PROMPT, fps="medium", seed=7, **FAST)["video"])


@pytest.mark.parametrize(("prompt", "message"), [
    ("", "prompt is empty"),
    ("a red unicorn moving right quickly on a black background", "unicorn"),
])
def test_bad_prompts_are_clear_errors(pipeline, prompt, message):
    with pytest.raises(ValueError, match=message):
        pipeline(prompt, fps="keyframes", **FAST)


def test_bad_fps_mode_is_a_clear_error(pipeline):
    with pytest.raises(ValueError, match="fps='fast' is not a mode"):
        pipeline(PROMPT, fps="fast", **FAST)


def _sample(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "sample.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_sample_cli_writes_mp4_gif_and_strip_and_refuses_to_overwrite(tmp_path):
    args = [f"prompt={PROMPT}", "fps=keyframes", "steps=2", f"output_dir={tmp_path / 'out'}", "progress=false"]
    done = _sample(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    paths = [Path(line) for line in done.stdout.splitlines() if line.startswith("/")]
    assert sorted(p.suffix for p in paths) == [".gif", ".mp4", ".png"] and all(p.exists() for p in paths)
    mp4 = next(p for p in paths if p.suffix == ".mp4")
    assert decode_video(mp4.read_bytes()).shape == (16, 64, 64, 3)

    # The errors, through sample.py's own main (without Hydra's launcher, to spare two more processes):
    # one line as the exit message, no traceback.
    spec = importlib.util.spec_from_file_location("sample_cli", ROOT / "sample.py")
    sample_cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sample_cli)
    for overrides, message in [(args, "already exists; pass overwrite=true"),
                               ([f"prompt={PROMPT}", f"keyframes_dir={tmp_path / 'nope'}",
                                 f"output_dir={tmp_path / 'fresh'}"], "keyframes_dir=")]:
        with pytest.raises(SystemExit) as error:
            sample_cli.main.__wrapped__(compose_sample(*overrides))
        assert str(error.value.code).startswith("error: ") and message in str(error.value.code)


def test_sample_py_videos_move_the_way_their_prompts_say(tmp_path):
    """Two prompts with opposite directions (and other colours and shapes): colour and motion measured from the
    written mp4 match each prompt."""
    for colour, shape, motion, background in [("red", "circle", "left", "black"), ("blue", "square", "right", "white")]:
        prompt = f"a {colour} {shape} moving {motion} quickly on a {background} background"
        cfg = compose_sample(f"prompt={prompt}", "fps=keyframes", "steps=10", "progress=false",
                             f"output_dir={tmp_path}")
        mp4 = next(p for p in run(cfg) if p.suffix == ".mp4")
        track = measure(decode_video(mp4.read_bytes()))
        assert classify_colour(np.nanmean(track.colour, axis=0)) == colour, prompt
        assert classify_motion(track) == motion, (prompt, centroid_shift(track))


def test_sample_py_with_bf16_weights_writes_its_video(tmp_path):
    """``precision=bf16-true``: the networks in bf16 without autocast (every stage: test_bf16_weights_...)."""
    cfg = compose_sample(f"prompt={PROMPT}", "fps=keyframes", "steps=2", "progress=false", f"output_dir={tmp_path}",
                         "precision=bf16-true")
    mp4 = next(p for p in run(cfg) if p.suffix == ".mp4")
    assert decode_video(mp4.read_bytes()).shape == (16, 64, 64, 3)


COMPILED = dict(FAST, cuda_graphs=True)  # cuda_graphs is ignored on CPU
STAGES = ("keyframes", "interpolation", "decoder")


@pytest.fixture(scope="module")
def compiled() -> Iterator[tuple[torch.Tensor, dict[str, list[torch.fx.GraphModule]]]]:
    """(video, graphs per network): the shipped pipeline with each network compiled by ``compile(stages=[name])``
    on a recording backend of its own, which runs the captured graphs as they are (as the "eager" backend does: no
    kernels generated, no compiler needed), sampled at fps="medium", where every network runs (the temporal decoder
    on 61 latent frames, in windows). One Dynamo trace per network serves all the compile tests."""
    graphs = {name: [] for name in STAGES}

    def recording_backend(name: str) -> Callable:
        def backend(graph_module, example_inputs):
            graphs[name].append(graph_module)
            return graph_module.forward

        return backend

    torch._dynamo.reset()
    pipeline = FusionFramesPipeline.from_pretrained(ASSETS)
    for name in STAGES:
        pipeline.compile(stages=[name], backend=recording_backend(name))
    yield pipeline(PROMPT, fps="medium", seed=3, **COMPILED)["video"], graphs
    torch._dynamo.reset()


def test_compiled_pipeline_samples_what_the_eager_one_does(compiled, pipeline):
    """``compile()`` wraps every network with torch.compile; with backends that run the captured graphs as they are,
    the samples equal the eager pipeline's to float32 rounding. They are not bit-identical by design: traced, the
    temporal norms take their statistics as sums (``VideoGroupNorm``), eagerly by PyTorch's GroupNorm kernel, and
    temporal convolutions run in the frames-in-batch layout (``frame_conv``: batched matmuls over frame windows or
    2D convolutions) (a max difference of 2e-4 in the
    [-1, 1] video, 1e-5 in the keyframe latents of magnitude 5)."""
    every = FusionFramesPipeline.from_pretrained(ASSETS).compile(backend="eager")
    assert all(getattr(every, name)._compiled_call_impl is not None for name in STAGES)
    video, _ = compiled
    torch.testing.assert_close(video, pipeline(PROMPT, fps="medium", seed=3, **COMPILED)["video"], atol=1e-3, rtol=0)


@pytest.mark.parametrize("stage", STAGES)
def test_compile_reaches_each_stage_it_names(stage, compiled):
    """``compile(stages=[stage])`` compiles only that network, and sampling calls it through its compiled
    ``__call__`` (the temporal decoder's ``decode`` goes through ``forward``): its recording backend saw graphs."""
    pipeline = FusionFramesPipeline.from_pretrained(ASSETS).compile(stages=[stage], backend="eager")
    assert [name for name in STAGES if getattr(pipeline, name)._compiled_call_impl is not None] == [stage]
    _, graphs = compiled
    assert graphs[stage]
    with pytest.raises(ValueError, match=r"compile stages \['vae'\] are unknown"):
        pipeline.compile(stages=["vae"])


def test_bf16_weights_sample_what_float32_does(pipeline):
    """``to(dtype=torch.bfloat16)`` casts the networks (not the noise schedules); sampling without autocast then
    runs in bf16 and stays close to the float32 video for the same seed."""
    low = FusionFramesPipeline.from_pretrained(ASSETS).to("cpu", torch.bfloat16)
    assert {p.dtype for p in low.keyframes.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in low.decoder.parameters()} == {torch.bfloat16}
    assert low.t2i.schedule.alphas_cumprod.dtype == low.interpolation_schedule.alphas_cumprod.dtype == torch.float32
    video = low(PROMPT, fps="medium", seed=3, **FAST)["video"]
    reference = pipeline(PROMPT, fps="medium", seed=3, **FAST)["video"]
    assert video.dtype == torch.float32 and video.shape == reference.shape
    psnr = 10 * torch.log10(4 / (video - reference).square().mean())
    assert psnr > 35, f"bf16 sampling drifted from float32: {psnr:.1f} dB"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs exist only on CUDA devices")
def test_cuda_graphs_sample_what_eager_calls_do(monkeypatch):
    """``cuda_graphs=True`` captures the keyframe stage's guided UNet call and the interpolation passes' calls at
    their second step and replays them: the same video as eager calls, to kernel rounding (float32, TF32 off)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    cuda = FusionFramesPipeline.from_pretrained(ASSETS).to("cuda")
    options = dict(fps="medium", seed=3, num_inference_steps=4, interpolation_steps=3, progress=False)
    eager = cuda(PROMPT, **options)
    graphed = cuda(PROMPT, cuda_graphs=True, **options)
    torch.testing.assert_close(graphed["keyframes"], eager["keyframes"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(graphed["video"], eager["video"], atol=1e-3, rtol=1e-3)
