"""What ``evaluate.py`` does: for each run (or the pipeline as is), load the pipeline, evaluate, write the table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from fusionframes.evaluation.decoder import DecoderEvaluation
from fusionframes.evaluation.interpolation import InterpolationEvaluation
from fusionframes.evaluation.report import write_report
from fusionframes.evaluation.runs import RunInfo, describe_run, expand_runs
from fusionframes.evaluation.text_to_video import TextToVideoEvaluation
from fusionframes.pipeline import FusionFramesPipeline
from fusionframes.sampling_cli import stage_dir

TASKS = {"text_to_video": TextToVideoEvaluation, "interpolation": InterpolationEvaluation,
         "decoder": DecoderEvaluation}


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"


def run(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.evaluation.task`` for every entry of ``cfg.runs`` (or once for the pipeline); write
    ``metrics.json`` and ``metrics.md`` to ``cfg.output_dir`` and return the report."""
    task = cfg.evaluation.task
    if task not in TASKS:
        raise ValueError(f"evaluation.task={task!r} is not a task; choose one of {list(TASKS)}.")
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          "cpu" if cfg.device == "auto" else cfg.device)
    rows = [describe_run(path) for path in expand_runs(list(cfg.runs))] if cfg.runs else [RunInfo(label="pipeline")]
    evaluation = TASKS[task](cfg.evaluation, device)
    base = {"keyframes": stage_dir(cfg.keyframes_dir, "keyframes"),
            "interpolation": stage_dir(cfg.interpolation_dir, "interpolation"),
            "decoder": stage_dir(cfg.decoder_dir, "decoder")}
    report: dict[str, Any] = {"task": task, "device": device_name(device), "pipeline_dir": str(cfg.pipeline_dir),
                              "settings": OmegaConf.to_container(cfg.evaluation, resolve=True), "rows": []}
    for info in rows:
        dirs = {**base, **({info.stage: info.export} if info.stage else {})}
        pipeline = FusionFramesPipeline.from_pretrained(cfg.pipeline_dir, dirs["keyframes"], dirs["interpolation"],
                                                        dirs["decoder"]).to(device)
        metrics = evaluation(pipeline, cfg.seed, cfg.progress)
        report["rows"].append({**info.to_dict(), "metrics": metrics})
        print(f"{info.label}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()), flush=True)
    json_path, md_path = write_report(report, Path(cfg.output_dir))
    print(f"wrote {json_path} and {md_path}")
    return report
