"""Shapes-world ground-truth scores: colour, motion direction and smoothness measured from pixels.

No learned feature extractor: a frame's shape is the set of pixels far from the background colour
(estimated from the frame border, which the world keeps free of shapes). Videos are uint8 (F, H, W, 3)
for the functions; the torchmetrics ``Metric``s at the end take (B, F, 3, H, W) in [-1, 1] and prompts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torchmetrics import Metric

from fusionframes.data.shapes import BACKGROUNDS, COLOURS, DIRECTIONS, MOTIONS, SHAPES, SPEEDS
from fusionframes.models.shapes_classifier import ATTRIBUTE_CLASSES, JOINT_ATTRIBUTES
from fusionframes.utils.media import to_uint8

# A pixel belongs to the shape when it is this far (RGB Euclidean) from the background colour.
FOREGROUND_THRESHOLD = 60.0


@dataclass
class Track:
    """Per-frame measurements: centroid (F, 2) as (x, y) pixels, area (F,) pixels, mean colour (F, 3).

    Frames where no shape pixel is found have NaN entries.
    """

    centroid: np.ndarray
    area: np.ndarray
    colour: np.ndarray


def measure(video: np.ndarray) -> Track:
    """Track the shape through uint8 frames (F, H, W, 3)."""
    frames = video.astype(np.float32)
    border = np.concatenate([frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]], axis=1)
    background = np.median(border, axis=1)  # (F, 3)
    mask = np.linalg.norm(frames - background[:, None, None], axis=-1) > FOREGROUND_THRESHOLD  # (F, H, W)
    area = mask.sum(axis=(1, 2)).astype(np.float64)
    ys, xs = np.mgrid[: video.shape[1], : video.shape[2]]
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (mask * xs).sum(axis=(1, 2)) / area
        cy = (mask * ys).sum(axis=(1, 2)) / area
        colour = (mask[..., None] * frames).sum(axis=(1, 2)) / area[:, None]
    return Track(np.stack([cx, cy], axis=1), area, colour)


def classify_colour(rgb: np.ndarray) -> str:
    """Nearest named shape colour to a mean RGB (3,)."""
    names = list(COLOURS)
    palette = np.array([COLOURS[n] for n in names], dtype=np.float64)
    return names[int(np.argmin(np.linalg.norm(palette - rgb, axis=1)))]


def first_and_last(track: Track) -> tuple[int, int] | None:
    """Indices of the first and last frames in which the shape is found; None when fewer than two are."""
    valid = np.flatnonzero(~np.isnan(track.centroid[:, 0]))
    return (int(valid[0]), int(valid[-1])) if len(valid) >= 2 else None


def centroid_shift(track: Track) -> np.ndarray:
    """(dx, dy) pixels of the centroid from the first to the last frame that shows the shape; NaN when none do."""
    ends = first_and_last(track)
    return track.centroid[ends[1]] - track.centroid[ends[0]] if ends else np.full(2, np.nan)


def classify_motion(track: Track) -> str:
    """The motion (left/right/up/down/growing/shrinking) whose signed change from first to last frame is largest.

    Translations compare centroid shifts in pixels; growth compares the change of the equivalent radius
    sqrt(area/pi), doubled because the diameter changes by twice the radius.
    """
    ends = first_and_last(track)
    if ends is None:
        return "none"
    first, last = ends
    dx, dy = track.centroid[last] - track.centroid[first]
    dr = np.sqrt(track.area[last] / np.pi) - np.sqrt(track.area[first] / np.pi)
    scores = {"left": -dx, "right": dx, "up": -dy, "down": dy, "growing": 2 * dr, "shrinking": -2 * dr}
    return max(MOTIONS, key=scores.__getitem__)


def smoothness(track: Track) -> float:
    """Mean |second difference| of the centroid over mean |first difference| (0 for constant velocity).

    Lower is smoother; a jittering or jumping shape scores near or above 1. NaN when fewer than 3 frames
    show the shape or the shape does not move.
    """
    centroid = track.centroid[~np.isnan(track.centroid[:, 0])]
    if len(centroid) < 3:
        return float("nan")
    first = np.linalg.norm(np.diff(centroid, axis=0), axis=1).mean()
    second = np.linalg.norm(np.diff(centroid, n=2, axis=0), axis=1).mean()
    return float(second / first) if first > 0 else float("nan")


def detected_fraction(track: Track) -> float:
    """Fraction of frames in which a shape was found."""
    return float((~np.isnan(track.centroid[:, 0])).mean())


_CAPTION = re.compile(
    rf"^a (?P<colour>{'|'.join(COLOURS)}) (?P<shape>{'|'.join(SHAPES)}) "
    rf"(?:moving (?P<direction>{'|'.join(DIRECTIONS)})|(?P<resize>growing|shrinking))"
    rf"(?: (?P<speed>{'|'.join(SPEEDS)}))?(?: on a (?P<background>{'|'.join(BACKGROUNDS)}) background)?$")


def caption_attributes(caption: str) -> dict[str, str]:
    """The attributes a shapes-world caption asks for: colour, shape, motion, and speed / background when named.

    ``"a red circle moving left quickly on a black background"`` -> ``{"colour": "red", "shape": "circle",
    "motion": "left", "speed": "quickly", "background": "black"}``.
    """
    match = _CAPTION.match(" ".join(caption.lower().split()))
    if match is None:
        raise ValueError(f"{caption!r} is not a shapes-world caption; expected e.g. 'a red circle moving left "
                         "quickly on a black background'.")
    found = match.groupdict()
    attributes = {"colour": found["colour"], "shape": found["shape"], "motion": found["direction"] or found["resize"]}
    return {**attributes, **{k: found[k] for k in ("speed", "background") if found[k]}}


class ShapesGroundTruthScores(Metric):
    """Colour and direction accuracy against the prompt, trajectory smoothness and shape detection, measured
    from the pixels of generated shapes-world videos (no learned model).

    ``update(videos, prompts)``: videos (B, F, 3, H, W) in [-1, 1] and their B shapes-world captions.
    ``compute()`` -> ``colour_accuracy``, ``direction_accuracy``, ``smoothness`` (mean over the videos where it
    is defined; lower is smoother), ``detected`` (fraction of frames showing a shape).
    """

    higher_is_better = None
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in ("colour_correct", "direction_correct", "smoothness_sum", "smoothness_count", "detected_sum",
                     "count"):
            self.add_state(name, torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, videos: torch.Tensor, prompts: list[str]) -> None:
        if len(prompts) != videos.shape[0]:
            raise ValueError(f"got {len(prompts)} prompts for {videos.shape[0]} videos; pass one prompt per video.")
        for video, prompt in zip(to_uint8(videos), prompts):
            wanted = caption_attributes(prompt)
            track = measure(video)
            smooth = smoothness(track)
            self.colour_correct += float(classify_colour(np.nanmean(track.colour, axis=0)) == wanted["colour"])
            self.direction_correct += float(classify_motion(track) == wanted["motion"])
            if not np.isnan(smooth):
                self.smoothness_sum += smooth
                self.smoothness_count += 1
            self.detected_sum += detected_fraction(track)
            self.count += 1

    def compute(self) -> dict[str, torch.Tensor]:
        smooth = self.smoothness_sum / self.smoothness_count if self.smoothness_count else torch.tensor(float("nan"))
        return {"colour_accuracy": self.colour_correct / self.count,
                "direction_accuracy": self.direction_correct / self.count,
                "smoothness": torch.as_tensor(smooth), "detected": self.detected_sum / self.count}


class ShapesClassifierAccuracy(Metric):
    """Text alignment from ground truth: how often the shapes-world classifier sees what the prompt asks for.

    ``update(videos, prompts)`` -> per attribute named by the prompts (colour, shape, motion, and speed /
    background where the caption gives them) the fraction of videos classified as asked, and ``all``: the
    fraction with colour, shape and motion all right.
    """

    higher_is_better = True
    full_state_update = False

    def __init__(self, classifier: nn.Module, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.classifier = classifier
        self.names = (*ATTRIBUTE_CLASSES, "all")
        self.add_state("correct", torch.zeros(len(self.names), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(len(self.names), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, videos: torch.Tensor, prompts: list[str]) -> None:
        if len(prompts) != videos.shape[0]:
            raise ValueError(f"got {len(prompts)} prompts for {videos.shape[0]} videos; pass one prompt per video.")
        with torch.autocast(videos.device.type, enabled=False):
            predicted = {k: v.argmax(-1).tolist() for k, v in self.classifier.logits(videos.float()).items()}
        correct, count = torch.zeros_like(self.correct), torch.zeros_like(self.count)
        for i, prompt in enumerate(prompts):
            wanted = caption_attributes(prompt)
            right = {k: ATTRIBUTE_CLASSES[k][predicted[k][i]] == v for k, v in wanted.items()}
            right["all"] = all(right[k] for k in JOINT_ATTRIBUTES)
            for name, ok in right.items():
                correct[self.names.index(name)] += float(ok)
                count[self.names.index(name)] += 1
        self.correct += correct
        self.count += count

    def compute(self) -> dict[str, torch.Tensor]:
        return {name: self.correct[i] / self.count[i] for i, name in enumerate(self.names) if self.count[i] > 0}
