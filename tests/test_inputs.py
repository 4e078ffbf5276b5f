"""Inputs: start-up config values, sampler arguments, prompts and pipeline files either work or fail with one
clear sentence (hypothesis fuzzes each entry point); sample.py never overwrites outputs unless told."""

from __future__ import annotations

import copy
import functools
import json
import math
import re
import tempfile
from pathlib import Path

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, OmegaConf, open_dict

from fusionframes.models.text_encoders import shapes_vocabulary
from fusionframes.pipeline import FPS_MODES, FusionFramesPipeline, check_sampling_args
from fusionframes.sampling_cli import check_config, output_stem, run
from fusionframes.utils.validation import check_run_config
from tests.conftest import ASSETS, TINY_MODEL, TINY_RUN, compose_config, compose_sample

CLEAR = (ValueError, FileNotFoundError, FileExistsError)
# Anything a Hydra override or a Python caller can pass: numbers of every kind, text, booleans, null, lists.
NOT_INT = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6), st.booleans(), st.none(),
                    st.lists(st.integers(0, 3), max_size=2))
ANY = st.one_of(st.integers(-(2**40), 2**40), NOT_INT)
SMALL = st.one_of(st.integers(-3, 3), NOT_INT)  # for sizes whose large valid values would cost memory or processes


def fuzz(examples: int) -> settings:
    """Reproducible fuzzing (derandomized, no example database written) without per-example deadlines."""
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def some_of(values: dict[str, st.SearchStrategy], max_size: int) -> st.SearchStrategy:
    """Dictionaries of 1..``max_size`` keys of ``values``, each drawn from its strategy."""
    return st.dictionaries(st.sampled_from(list(values)), st.none(), min_size=1, max_size=max_size).flatmap(
        lambda keys: st.fixed_dictionaries({k: values[k] for k in keys}))


def assert_clear(error: BaseException) -> None:
    """A user-facing error: (under Hydra's wrapper) ValueError, FileNotFoundError or FileExistsError with a
    message of one line that ends a sentence."""
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    assert isinstance(error, CLEAR), f"{type(error).__name__}: {error}"
    message = str(error)
    assert message.endswith(".") and "\n" not in message, message


def rejected(error: BaseException) -> None:
    """In a fuzz test: the error is clear; counted in hypothesis' statistics."""
    assert_clear(error)
    event("rejected with a clear error")


def _int_in(value: object, low: int, high: float = math.inf) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _guidance(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


VALID_ARGUMENTS = {
    "fps": st.sampled_from(list(FPS_MODES)), "num_inference_steps": st.integers(1, 1000),
    "guidance_scale": st.floats(0, 20), "interpolation_steps": st.integers(1, 1000),
    "interpolation_guidance": st.floats(0, 2), "seed": st.one_of(st.none(), st.integers(0, 2**32 - 1)),
    "decode_chunk": st.integers(1, 64),
}
EDGE_ARGUMENTS = {  # values just outside (and on) the allowed ranges, on top of ANY
    "num_inference_steps": st.sampled_from([0, 1000, 1001]), "interpolation_steps": st.sampled_from([0, 1001]),
    "guidance_scale": st.sampled_from([-1e-9, 0.0, math.inf]), "seed": st.sampled_from([-1, 2**32]),
    "decode_chunk": st.sampled_from([0, -1]), "fps": st.sampled_from(["High", "", "fast"]),
    "interpolation_guidance": st.sampled_from([-0.25, math.nan]),
}


def _valid_argument(name: str, value: object) -> bool:
    if name == "fps":
        return isinstance(value, str) and value in FPS_MODES
    if name in ("num_inference_steps", "interpolation_steps"):
        return _int_in(value, 1, 1000)
    if name in ("guidance_scale", "interpolation_guidance"):
        return _guidance(value)
    if name == "seed":
        return value is None or _int_in(value, 0, 2**32 - 1)
    return _int_in(value, 1)


@fuzz(400)
@given(data=st.data(), broken=st.sets(st.sampled_from(list(VALID_ARGUMENTS)), max_size=3))
def test_fuzz_sampler_arguments(data, broken):
    """Valid arguments with up to three replaced by anything: accepted exactly when all are in range."""
    arguments = {name: data.draw(st.one_of(ANY, EDGE_ARGUMENTS.get(name, ANY)) if name in broken else valid, name)
                 for name, valid in VALID_ARGUMENTS.items()}
    valid = all(_valid_argument(name, value) for name, value in arguments.items())
    try:
        check_sampling_args(**arguments, max_steps=1000, max_interpolation_steps=1000)
    except CLEAR as error:
        assert not valid, error
        rejected(error)
    else:
        assert valid
        event("accepted")


@pytest.fixture(scope="module")
def pipeline() -> FusionFramesPipeline:
    return FusionFramesPipeline.from_pretrained(ASSETS)


WORDS = st.sampled_from([*shapes_vocabulary(), "unicorn", "RED", "red,", "!"])
PROMPTS = st.one_of(st.text(max_size=40), st.lists(WORDS, max_size=40).map(" ".join),
                    st.lists(st.one_of(st.text(max_size=10), st.lists(WORDS, min_size=1, max_size=8).map(" ".join)),
                             max_size=3), ANY)


@fuzz(200)
@given(prompts=PROMPTS)
def test_fuzz_prompts(pipeline, prompts):
    """Any text, list of texts or other value: encoded (B prompts then B empty ones) or a clear error."""
    try:
        context, mask = pipeline.encode_prompt(prompts)
    except CLEAR as error:
        rejected(error)
    else:
        count = 1 if isinstance(prompts, str) else len(prompts)
        assert context.shape[0] == mask.shape[0] == 2 * count and torch.isfinite(context).all()
        event("accepted")


@functools.cache
def _sample_config() -> DictConfig:
    """sample.yaml as sample.py composes it (kept out of hypothesis' failure reports, like _train_config)."""
    return compose_sample("prompt=a red circle moving right quickly on a black background",
                          f"output_dir={tempfile.mkdtemp()}")


SAMPLE_VALUES = {"prompt": st.one_of(st.text(max_size=10), ANY), "fps": ANY, "steps": ANY, "guidance_scale": ANY,
                 "interpolation_steps": ANY, "interpolation_guidance": ANY, "seed": ANY, "num_videos": ANY,
                 "decode_chunk": ANY, "device": st.one_of(st.sampled_from(["cpu", "cuda:x", "tpu", "auto"]), ANY),
                 "overwrite": ANY, "progress": ANY, "output_dir": ANY,
                 "compile": st.one_of(st.lists(st.sampled_from(["decoder", "keyframes", "vae"]), max_size=2), ANY),
                 "precision": st.one_of(st.sampled_from(["auto", "bf16-true", "16-mixed", "32-true"]), ANY)}


@fuzz(300)
@given(changes=some_of(SAMPLE_VALUES, 3))
def test_fuzz_sample_py_config(changes):
    """Every sample.yaml value is checked before weights load: a bad one makes run() fail at once, clearly."""
    cfg = copy.deepcopy(_sample_config())
    with open_dict(cfg):
        cfg.update(changes)
    try:
        device, _ = check_config(cfg)
    except CLEAR as error:
        rejected(error)
        with open_dict(cfg):
            cfg.pipeline_dir = "/nonexistent"  # run() must fail on the value, not by loading anything
        with pytest.raises(type(error), match="^" + re.escape(str(error)) + "$"):
            run(cfg)
    else:
        assert isinstance(device, torch.device)
        event("accepted")


def test_sample_py_refuses_to_overwrite_outputs_before_loading(tmp_path):
    cfg = copy.deepcopy(_sample_config())
    with open_dict(cfg):
        cfg.output_dir, cfg.pipeline_dir = str(tmp_path), str(tmp_path / "no-pipeline")
    earlier = tmp_path / f"{output_stem(cfg.prompt, cfg.seed, 0)}.mp4"
    earlier.write_bytes(b"an earlier video")
    with pytest.raises(FileExistsError, match=f"{earlier} already exists; pass overwrite=true"):
        run(cfg)
    with open_dict(cfg):
        cfg.overwrite = True
    with pytest.raises(FileNotFoundError, match="pipeline_dir="):  # past the check, on to loading
        run(cfg)
    assert earlier.read_bytes() == b"an earlier video"


def _mirror(src: Path, dst: Path) -> None:
    """``dst``: a tree of symlinks to ``src``'s files, so single files can be replaced cheaply."""
    for path in src.rglob("*"):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)


def _replace(root: Path, name: str, content: bytes | None) -> None:
    (root / name).unlink()
    if content is not None:
        (root / name).write_bytes(content)


def _truncated(name: str) -> bytes:
    data = (ASSETS / name).read_bytes()
    return data[: len(data) // 2]


# (file, new content or None to delete it, the config key the error must name)
BROKEN_FILES = {
    "model_index.json not JSON": ("model_index.json", b"{oops", "pipeline_dir"),
    "model_index.json without resolution": ("model_index.json", json.dumps({"frame_stride": 12}).encode(),
                                            "pipeline_dir"),
    "t2i unet weights truncated": ("t2i/unet/diffusion_pytorch_model.safetensors",
                                   _truncated("t2i/unet/diffusion_pytorch_model.safetensors"), "pipeline_dir"),
    "text encoder weights empty": ("t2i/text_encoder/model.safetensors", b"", "pipeline_dir"),
    "t2i scheduler missing": ("t2i/scheduler/scheduler_config.json", None, "pipeline_dir"),
    "keyframes weights truncated": ("keyframes/temporal.safetensors", _truncated("keyframes/temporal.safetensors"),
                                    "keyframes_dir"),
    "interpolation config not JSON": ("interpolation/config.json", b"[", "interpolation_dir"),
    "decoder weights empty": ("decoder/temporal_decoder.safetensors", b"", "decoder_dir"),
    "movq weights truncated": ("movq/diffusion_pytorch_model.safetensors",
                               _truncated("movq/diffusion_pytorch_model.safetensors"), "pipeline_dir"),
}


@pytest.mark.parametrize("case", BROKEN_FILES)
def test_malformed_pipeline_files_are_clear_errors_naming_their_key(case, tmp_path):
    name, content, key = BROKEN_FILES[case]
    _mirror(ASSETS, tmp_path / "pipeline")
    _replace(tmp_path / "pipeline", name, content)
    with pytest.raises(CLEAR, match=f"^{key}=") as error:
        FusionFramesPipeline.from_pretrained(tmp_path / "pipeline")
    assert_clear(error.value)


@functools.cache
def _train_config() -> DictConfig:
    """Composed once; a module function rather than a fixture keeps it out of hypothesis' failure reports."""
    return compose_config(["experiment=shapes/t2i", *TINY_RUN, *TINY_MODEL["shapes/t2i"]], Path(tempfile.mkdtemp()))


TRAIN_VALUES = {
    "data.resolution": st.one_of(st.sampled_from([8, 16, 30, 32, 0, -32]), NOT_INT),
    "data.datamodule.batch_size": SMALL, "data.datamodule.num_workers": SMALL, "data.world.num_frames": SMALL,
    "data.datamodule.train.length": st.one_of(st.integers(-3, 1000), NOT_INT),  # the sampler permutes it
    "model.caption_dropout": st.one_of(st.floats(-0.5, 1.5), ANY),
    "model.guidance_scale": ANY, "model.num_inference_steps": ANY, "seed": ANY,
    "model.movq_path": st.sampled_from([str(ASSETS / "movq"), "/nonexistent/movq", str(ASSETS)]),
    "ckpt_path": st.sampled_from([None, "/nonexistent.ckpt", str(ASSETS / "model_index.json")]),
}


@fuzz(60)
@given(changes=some_of(TRAIN_VALUES, 2))
def test_fuzz_training_config_at_start_up(changes):
    """What train.py builds before the first step (config checks, datamodule, model) works or fails clearly."""
    cfg = copy.deepcopy(_train_config())
    with open_dict(cfg):
        for key, value in changes.items():
            node, _, leaf = key.rpartition(".")
            (OmegaConf.select(cfg, node) if node else cfg)[leaf] = value
    try:
        check_run_config(cfg)
        datamodule = instantiate(cfg.data.datamodule, _convert_="all")
        instantiate(cfg.model, _convert_="all")
        next(iter(datamodule.train_dataloader()))
    except (*CLEAR, InstantiationException) as error:
        rejected(error)
    else:
        event("accepted")
