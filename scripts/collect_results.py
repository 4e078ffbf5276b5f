"""Collect ablation evaluations (``evaluate.py`` metrics.json files) into the paper's Tables 1-3 in docs/results.md.

Rows of the same variant (different seeds) are averaged (mean ± std over seeds); the paper's numbers sit
beside ours, and each of the paper's claims is checked against our means: *agrees*, *disagrees*, or
*not resolved* when the two means differ by less than the larger seed standard deviation (or a row has
a single seed). Only the
sections between ``<!-- results:tableN -->`` and ``<!-- /results:tableN -->`` markers are replaced, so other
sections of docs/results.md (written by hand or by other tools) stay.

    uv run python scripts/collect_results.py outputs/ablation/*/metrics.json --out docs/results.md
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path
from statistics import mean, stdev
from typing import Any

import torch
from torchmetrics.functional import spearman_corrcoef

from fusionframes.evaluation.report import title

# ---------------------------------------------------------------------------------------------- the paper
KEYFRAME_NAMES = {"conv1d_attn1d_layers": "Conv1dAttn1dLayers", "conv1d_attn1d_blocks": "Conv1dAttn1dBlocks",
                  "conv1d_attn3d_blocks": "Conv1dAttn3dBlocks", "conv3d_attn1d_blocks": "Conv3dAttn1dBlocks"}
#: Table 1 (100k steps): IS, FVD on UCF-101 and CLIPSIM on MSR-VTT.
PAPER_TABLE1 = {"conv1d_attn1d_layers": (19.663, 659.612, 0.2827), "conv1d_attn1d_blocks": (23.063, 545.184, 0.2955),
                "conv1d_attn3d_blocks": (23.381, 573.569, 0.2956), "conv3d_attn1d_blocks": (22.899, 594.919, 0.2953)}
#: Table 2: IS and FVD after two interpolation passes; Figure 7: FusionFrames takes under 1/3 of MFI's time.
PAPER_TABLE2 = {"mfi": (23.371, 550.932), "fusionframes": (24.325, 433.054)}
DECODER_NAMES = {"conv3x1x1": "3x1x1 Conv", "conv3x3x3": "3x3x3 Conv", "conv3x1x1_attn": "3x1x1 Conv + Attn",
                 "conv3x3x3_attn": "3x3x3 Conv + Attn", "resblock_attn": "ResNet Block + Attn",
                 "conv2d_to_3d": "2D → 3D Conv"}
#: Table 3: PSNR, SSIM, MSE, LPIPS, parameters (M) on Vimeo90k septuplets.
PAPER_TABLE3 = {
    "image": (32.9677, 0.9056, 0.0008, 0.0049, 161), "conv3x1x1/temporal": (32.2544, 0.893, 0.0009, 0.006, 203),
    "conv3x3x3/temporal": (33.5819, 0.9111, 0.0007, 0.0044, 539),
    "conv3x1x1/decoder": (33.5051, 0.9106, 0.0007, 0.0044, 203),
    "conv3x3x3/decoder": (33.6342, 0.9123, 0.0007, 0.0043, 539),
    "conv3x1x1_attn/decoder": (33.7343, 0.9129, 0.0007, 0.0043, 220),
    "conv3x3x3_attn/decoder": (33.8376, 0.9146, 0.0006, 0.0041, 556),
    "resblock_attn/decoder": (33.7024, 0.9121, 0.0007, 0.0043, 220),
    "conv2d_to_3d/decoder": (33.7321, 0.9134, 0.0007, 0.0043, 419),
}


# ------------------------------------------------------------------------------------------ aggregation
class Stat:
    """Mean and standard deviation over seeds of one metric (std 0 for a single seed)."""

    def __init__(self, values: list[float]) -> None:
        self.values = values
        self.mean = mean(values)
        self.std = stdev(values) if len(values) > 1 else 0.0

    def __str__(self) -> str:
        size = abs(self.mean)
        digits = 1 if size >= 100 else 2 if size >= 1 else 4 if size >= 0.01 else 6
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def load(paths: list[Path]) -> dict[str, list[dict[str, Any]]]:
    """Rows of every report by task; a run evaluated twice keeps its last evaluation."""
    rows: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for path in paths:
        report = json.loads(path.read_text())
        for row in report["rows"]:
            rows[report["task"]][row.get("export") or f"{path}:{row['label']}"] = {**row, "device": report["device"]}
    return {task: list(found.values()) for task, found in rows.items()}


def group(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """By variant: seeds, steps, devices and a :class:`Stat` per metric."""
    by_variant: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_variant[row["variant"] or row["label"]].append(row)
    groups = {}
    for variant, members in by_variant.items():
        keys = list(dict.fromkeys(k for r in members for k in r["metrics"]))
        groups[variant] = {"seeds": sorted(r["seed"] for r in members if r["seed"] is not None),
                           "steps": sorted({r["steps"] for r in members}, key=str),
                           "devices": sorted({r["device"] for r in members}),
                           "metrics": {k: Stat([r["metrics"][k] for r in members if k in r["metrics"]]) for k in keys}}
    return groups


def steps_note(groups: dict[str, dict[str, Any]]) -> str:
    """How long each run trained; a warning when budgets differ."""
    steps = {s for g in groups.values() for s in g["steps"]}
    seeds = {len(g["seeds"]) for g in groups.values()}
    devices = sorted({d for g in groups.values() for d in g["devices"]})
    text = f"{'/'.join(map(str, sorted(seeds)))} seed(s) per row; evaluated on {', '.join(devices)}; "
    if len(steps) == 1:
        return text + f"every run trained {steps.pop()} steps (equal budgets)."
    return text + f"**unequal budgets**: runs trained {sorted(steps, key=str)} steps (a max_time stop?)."


def compare(a: Stat, b: Stat, higher_is_better: bool) -> str:
    """Whether ``a`` is better than ``b``: "yes", "no", or "not resolved" within the seeds' spread (always with
    a single seed, which shows no spread)."""
    if min(len(a.values), len(b.values)) < 2 or abs(a.mean - b.mean) <= max(a.std, b.std):
        return "not resolved"
    return "yes" if (a.mean > b.mean) == higher_is_better else "no"


def verdict(answer: str) -> str:
    return {"yes": "**agrees**", "no": "**disagrees**", "not resolved": "**not resolved** (within seed spread)"}[answer]


def ordering(groups: dict[str, dict[str, Any]], key: str, names: dict[str, str], higher_is_better: bool) -> str:
    ranked = sorted((v for v in groups if key in groups[v]["metrics"]),
                    key=lambda v: groups[v]["metrics"][key].mean, reverse=higher_is_better)
    return " > ".join(names.get(v, v) for v in ranked)


def rank_correlation(ours: dict[str, float], paper: dict[str, float]) -> float:
    """Spearman correlation between our values and the paper's over the variants both have."""
    common = sorted(set(ours) & set(paper))
    return float(spearman_corrcoef(torch.tensor([ours[v] for v in common], dtype=torch.float64),
                                   torch.tensor([paper[v] for v in common], dtype=torch.float64)))


# ------------------------------------------------------------------------------------------------ tables
def table1(rows: list[dict[str, Any]]) -> str:
    groups = group(rows)
    keys = [("fvd", "FVD ↓"), ("is", "IS-like ↑"), ("classifier_all", "prompt matched ↑"),
            ("colour_accuracy", "colour acc. ↑"), ("direction_accuracy", "direction acc. ↑"),
            ("smoothness", "smoothness ↓")]
    lines = ["| Variant | " + " | ".join(t for _, t in keys) + " | paper IS ↑ | paper FVD ↓ | paper CLIPSIM ↑ |",
             "|---|" + "---|" * (len(keys) + 3)]
    for variant in [v for v in PAPER_TABLE1 if v in groups] + [v for v in groups if v not in PAPER_TABLE1]:
        metrics = groups[variant]["metrics"]
        paper = PAPER_TABLE1.get(variant, ("-", "-", "-"))
        lines.append(f"| {KEYFRAME_NAMES.get(variant, variant)} | "
                     + " | ".join(str(metrics[k]) if k in metrics else "-" for k, _ in keys)
                     + f" | {paper[0]} | {paper[1]} | {paper[2]} |")
    lines += ["", steps_note(groups), ""]
    findings = []
    if all(v in groups and "fvd" in groups[v]["metrics"] for v in PAPER_TABLE1):
        m = {v: groups[v]["metrics"] for v in PAPER_TABLE1}
        blocks = [v for v in PAPER_TABLE1 if v.endswith("blocks")]
        for key, higher, label in (("fvd", False, "FVD"), ("is", True, "IS")):
            answers = [compare(m[b][key], m["conv1d_attn1d_layers"][key], higher) for b in blocks]
            answer = "yes" if all(a == "yes" for a in answers) else "no" if "no" in answers else "not resolved"
            detail = ", ".join(f"{KEYFRAME_NAMES[b]}: {a}" for b, a in zip(blocks, answers))
            findings.append(f"- Paper: every temporal-block variant beats temporal layers on {label}. Ours: "
                            f"{verdict(answer)} ({detail}).")
        best = min(blocks, key=lambda b: m[b]["fvd"].mean)
        others = [compare(m["conv1d_attn1d_blocks"]["fvd"], m[b]["fvd"], False) for b in blocks
                  if b != "conv1d_attn1d_blocks"]
        answer = "yes" if all(a == "yes" for a in others) else "no" if "no" in others else "not resolved"
        findings.append(f"- Paper: Conv1dAttn1dBlocks has the best FVD of the blocks. Ours: {verdict(answer)} "
                        f"(our best: {KEYFRAME_NAMES[best]}).")
        for key, higher, paper_index, label in (("fvd", False, 1, "FVD"), ("is", True, 0, "IS")):
            rho = rank_correlation({v: m[v][key].mean for v in m}, {v: PAPER_TABLE1[v][paper_index] for v in m})
            findings.append(f"- {label} order, ours: {ordering(groups, key, KEYFRAME_NAMES, higher)}; paper: "
                            + " > ".join(KEYFRAME_NAMES[v] for v in sorted(
                                PAPER_TABLE1, key=lambda v: PAPER_TABLE1[v][paper_index], reverse=higher))
                            + f" (Spearman rank correlation {rho:+.2f}).")
    return "\n".join(lines + findings) + "\n"


def table2(rows: list[dict[str, Any]]) -> str:
    groups = group(rows)
    keys = list(dict.fromkeys(k for g in groups.values() for k in g["metrics"]))
    lines = ["| Method | " + " | ".join(map(title, keys)) + " | paper IS ↑ | paper FVD ↓ |",
             "|---|" + "---|" * (len(keys) + 2)]
    names = {"fusionframes": "FusionFrames interpolation", "mfi": "Masked Frame Interpolation"}
    for mode in sorted(groups, key=lambda v: v != "mfi"):
        metrics = groups[mode]["metrics"]
        paper = PAPER_TABLE2.get(mode, ("-", "-"))
        cells = " | ".join(str(metrics[k]) if k in metrics else "-" for k in keys)
        lines.append(f"| {names.get(mode, mode)} | {cells} | {paper[0]} | {paper[1]} |")
    lines += ["", steps_note(groups), ""]
    if {"fusionframes", "mfi"} <= set(groups):
        ff, mfi = groups["fusionframes"]["metrics"], groups["mfi"]["metrics"]
        last = max(int(k.rpartition("pass")[2]) for k in ff if k.startswith("psnr_pass"))
        for key, label in ((f"psnr_pass{last}", f"PSNR of in-betweens after {last} pass(es)"),
                           (f"ssim_pass{last}", f"SSIM after {last} pass(es)")):
            lines.append(f"- Paper: FusionFrames interpolation beats MFI in quality. Ours ({label}): "
                         f"{verdict(compare(ff[key], mfi[key], True))}.")
        ratio = mfi[f"seconds_pass{last}"].mean / ff[f"seconds_pass{last}"].mean
        lines.append(f"- Paper: FusionFrames takes less than a third of MFI's time. Ours: MFI / FusionFrames = "
                     f"{ratio:.2f}x for {last} pass(es): {verdict('yes' if ratio > 3 else 'no')}.")
    return "\n".join(lines) + "\n"


def table3(rows: list[dict[str, Any]]) -> str:
    groups = group(rows)
    keys = [("psnr", "PSNR ↑"), ("ssim", "SSIM ↑"), ("mse", "MSE ↓"), ("lpips", "LPIPS ↓"),
            ("temporal_error", "temporal err. ↓")]
    lines = ["| Decoder | Temporal layers | Finetune | " + " | ".join(t for _, t in keys)
             + " | new params | # params | paper PSNR | paper SSIM | paper LPIPS | paper # params |",
             "|---|---|---|" + "---|" * (len(keys) + 6)]
    image = {k: Stat([v for g in groups.values() for v in g["metrics"][f"{k}_image_decoder"].values])
             for k, _ in keys if all(f"{k}_image_decoder" in g["metrics"] for g in groups.values())}
    paper = PAPER_TABLE3["image"]
    total = next(iter(groups.values()))["metrics"]["params_total"].mean - \
        next(iter(groups.values()))["metrics"]["params_new"].mean
    lines.append("| Image | - | - | " + " | ".join(str(image[k]) if k in image else "-" for k, _ in keys)
                 + f" | 0 | {total / 1e6:.2f} M | {paper[0]} | {paper[1]} | {paper[3]} | {paper[4]} M |")
    order = [v for v in PAPER_TABLE3 if v in groups] + [v for v in groups if v not in PAPER_TABLE3]
    for variant in order:
        metrics = groups[variant]["metrics"]
        layers, _, finetune = variant.partition("/")
        paper = PAPER_TABLE3.get(variant, ("-",) * 5)
        lines.append(f"| Video | {DECODER_NAMES.get(layers, layers)} | {finetune.capitalize()} | "
                     + " | ".join(str(metrics[k]) if k in metrics else "-" for k, _ in keys)
                     + f" | {metrics['params_new'].mean / 1e6:.2f} M | {metrics['params_total'].mean / 1e6:.2f} M"
                     + f" | {paper[0]} | {paper[1]} | {paper[3]} | {paper[4]} M |")
    lines += ["", steps_note(groups), ""]
    m = {v: groups[v]["metrics"] for v in groups}
    if "conv3x3x3_attn/decoder" in m:
        best = max(m, key=lambda v: m[v]["psnr"].mean)
        others = [compare(m["conv3x3x3_attn/decoder"]["psnr"], m[v]["psnr"], True) for v in m
                  if v != "conv3x3x3_attn/decoder"]
        answer = "yes" if all(a == "yes" for a in others) else "no" if "no" in others else "not resolved"
        lines.append("- Paper: 3x3x3 Conv + Attn, whole decoder fine-tuned, has the best PSNR. Ours: "
                     f"{verdict(answer)} (our best: {best}).")
    if "psnr" in image:
        beats = {v: compare(m[v]["psnr"], image["psnr"], True) for v in m}
        expected = {v: "no" if v == "conv3x1x1/temporal" else "yes" for v in m}
        answer = "yes" if beats == expected else "no" if any(
            beats[v] not in (expected[v], "not resolved") for v in m) else "not resolved"
        lines.append("- Paper: every video decoder beats the image decoder on PSNR except 3x1x1 Conv fine-tuning "
                     f"temporal layers only. Ours: {verdict(answer)} ("
                     + ", ".join(f"{v}: {beats[v]}" for v in m) + ").")
    common = [v for v in m if v in PAPER_TABLE3]
    if len(common) > 2:
        rho = rank_correlation({v: m[v]["psnr"].mean for v in common}, {v: PAPER_TABLE3[v][0] for v in common})
        lines.append(f"- PSNR order of the video decoders, ours: {ordering(groups, 'psnr', {}, True)}; "
                     f"Spearman rank correlation with the paper's {rho:+.2f}.")
    return "\n".join(lines) + "\n"


SECTIONS = {"text_to_video": ("table1", table1), "interpolation": ("table2", table2), "decoder": ("table3", table3)}


def replace_section(text: str, name: str, body: str) -> str:
    """Put ``body`` between the ``name`` markers of ``text`` (appending the section when absent)."""
    begin, end = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
    block = f"{begin}\n{body}{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    return text.rstrip("\n") + f"\n\n{block}\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", type=Path, help="metrics.json files written by evaluate.py")
    parser.add_argument("--out", type=Path, default=Path("docs/results.md"))
    args = parser.parse_args(argv)
    text = args.out.read_text() if args.out.exists() else "# Results\n"
    for task, rows in load(args.reports).items():
        if task not in SECTIONS:
            raise ValueError(f"{task!r} reports have no table here; expected one of {list(SECTIONS)}.")
        name, make = SECTIONS[task]
        body = make(rows)
        print(body)
        text = replace_section(text, name, body)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
