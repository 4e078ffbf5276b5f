"""Evaluation tables: one JSON file (settings, device, rows) and the same rows as a markdown table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: Column titles of known metrics, with the direction that is better.
TITLES = {
    "fvd": "FVD ↓", "is": "IS ↑", "is_std": "IS std", "clipsim": "CLIPSIM ↑",
    "colour_accuracy": "colour acc. ↑", "direction_accuracy": "direction acc. ↑", "smoothness": "smoothness ↓",
    "detected": "shape found", "classifier_all": "classifier: prompt matched ↑", "seconds_per_video": "s / video",
    "psnr": "PSNR ↑", "ssim": "SSIM ↑", "mse": "MSE ↓", "lpips": "LPIPS ↓", "temporal_error": "temporal err. ↓",
    "params_new": "new params", "params_total": "# params",
}


def title(key: str) -> str:
    base, _, suffix = key.partition("_pass")
    if suffix:
        return f"{TITLES.get(base, base)} (pass {suffix})" if not base.startswith("seconds") else \
            f"s / video (passes 1-{suffix})"
    if key.endswith("_image_decoder"):
        return f"{TITLES.get(key.removesuffix('_image_decoder'), key)} (image dec.)"
    return TITLES.get(key, key.replace("_", " "))


def number(value: float) -> str:
    if value != value:  # NaN
        return "n/a"
    if abs(value) >= 1e5:
        return f"{value / 1e6:.2f} M"
    return f"{value:.4g}" if abs(value) >= 1 else f"{value:.4f}"


def markdown(report: dict[str, Any]) -> str:
    """A markdown table of ``report["rows"]`` (one column per metric), with the settings underneath."""
    rows = report["rows"]
    keys = list(dict.fromkeys(k for row in rows for k in row["metrics"]))
    lines = ["| run | variant | seed | steps | " + " | ".join(map(title, keys)) + " |",
             "|---|---|---|---|" + "---|" * len(keys)]
    for row in rows:
        cells = [number(row["metrics"][k]) if k in row["metrics"] else "-" for k in keys]
        meta = [str(row.get(k)) if row.get(k) is not None else "-" for k in ("label", "variant", "seed", "steps")]
        lines.append("| " + " | ".join(meta + cells) + " |")
    settings = ", ".join(f"{k}={v}" for k, v in report["settings"].items() if not isinstance(v, (dict, list)))
    lines += ["", f"Task `{report['task']}` on {report['device']}; {settings} (all settings in metrics.json)."]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], directory: str | Path) -> tuple[Path, Path]:
    """Write ``metrics.json`` and ``metrics.md`` under ``directory``; returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "metrics.json", directory / "metrics.md"
    paths[0].write_text(json.dumps(report, indent=2) + "\n")
    paths[1].write_text(markdown(report))
    return paths
