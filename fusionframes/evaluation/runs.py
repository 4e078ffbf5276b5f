"""What an evaluated run is: the stage it replaces in a pipeline, and its label, variant, seed and steps."""

from __future__ import annotations

import glob
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

#: Stages a run can replace in a FusionFramesPipeline (train.py writes them under export/<stage>).
STAGES = ("keyframes", "interpolation", "decoder")


@dataclass
class RunInfo:
    """A row of an evaluation table: ``export`` replaces ``stage`` of the pipeline (None: the pipeline as is)."""

    label: str
    stage: str | None = None
    export: str | None = None
    variant: str | None = None
    seed: int | None = None
    steps: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def expand_runs(patterns: list[str]) -> list[Path]:
    """Run or export directories from paths and glob patterns, in sorted order per pattern; none found is an error."""
    found: list[Path] = []
    for pattern in patterns:
        matches = sorted(Path(p) for p in glob.glob(str(Path(pattern).expanduser())) if Path(p).is_dir())
        if not matches:
            raise FileNotFoundError(f"runs entry {pattern!r} matches no directory.")
        found += matches
    return found


def _variant(model: dict) -> str | None:
    """The ablated choice of a stage's resolved model config (keyframe variant, interpolation mode, decoder)."""
    if "temporal" in model:
        return model["temporal"]["variant"]
    if "mode" in model:
        return model["mode"]
    if "decoder" in model and "finetune" in model:
        return f"{model['decoder']['variant']}/{model['finetune']}"
    return None


def describe_run(path: Path) -> RunInfo:
    """A train.py run directory (holding ``export/<stage>``) or an export directory ``<run>/export/<stage>``."""
    exports = [s for s in STAGES if (path / "export" / s).is_dir()]
    if len(exports) == 1:
        run, stage = path, exports[0]
    elif path.name in STAGES and path.parent.name == "export":
        run, stage = path.parent.parent, path.name
    else:
        raise FileNotFoundError(f"runs entry {path} is neither a train.py run with one of "
                                f"export/{{{','.join(STAGES)}}} nor such an export directory.")
    info = RunInfo(label=run.name, stage=stage, export=str(run / "export" / stage))
    config = run / "config_resolved.yaml"
    if config.is_file():
        cfg = OmegaConf.to_container(OmegaConf.load(config))
        info.variant, info.seed = _variant(cfg.get("model", {})), cfg.get("seed")
    checkpoint = run / "checkpoints" / "last.ckpt"
    if checkpoint.is_file():
        info.steps = int(torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)["global_step"])
    return info
