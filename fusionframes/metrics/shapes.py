"""Shapes-world ground-truth scores: colour, motion direction and smoothness measured from pixels.

No learned feature extractor: a frame's shape is the set of pixels far from the background colour
(estimated from the frame border, which the world keeps free of shapes). Videos are uint8 (F, H, W, 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fusionframes.data.shapes import COLOURS, MOTIONS

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


def classify_motion(track: Track) -> str:
    """The motion (left/right/up/down/growing/shrinking) whose signed change from first to last frame is largest.

    Translations compare centroid shifts in pixels; growth compares the change of the equivalent radius
    sqrt(area/pi), doubled because the diameter changes by twice the radius.
    """
    valid = ~np.isnan(track.centroid[:, 0])
    if valid.sum() < 2:
        return "none"
    first, last = np.flatnonzero(valid)[[0, -1]]
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
