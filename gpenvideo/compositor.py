"""Pastes restored faces back into their frames: inverse similarity warp, a soft mask tied to
the face template (narrowed to the face's own outline by a parsing mask with --mask parsing),
and a blend with the original crop (strength). Pixels outside every face mask are left exactly
as decoded."""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from . import align
from .config import CompositeConfig
from .frames import Frame

# Face region in crop units (fractions of the crop size): the ellipse on which the mask reaches
# 0, around the template's eyes (y 0.47), nose and mouth (y 0.72), reaching the forehead and
# past the chin, and ending well inside the crop on all four sides (x 0.10-0.90, y 0.07-0.95),
# so neither the crop's edge nor anything beyond it (padding) can reach the frame.
MASK_CENTER = (0.5, 0.51)
MASK_AXES = (0.40, 0.44)


def face_mask(size: int, feather: float) -> np.ndarray:
    """(size, size) float32 mask in [0, 1]: 0 on and outside the face ellipse (MASK_CENTER,
    MASK_AXES), rising inwards over `feather` * size pixels along a smootherstep (flat at
    both ends of the ramp, so the change starts with fractions of a level), 1 further in. It is exactly 0 on a band along every side of the
    crop (at least 5% of its size)."""
    centre = (np.arange(size, dtype=np.float64) + 0.5) / size  # pixel centres, crop units
    u = (centre - MASK_CENTER[0]) / MASK_AXES[0]  # (size,) along x
    v = (centre - MASK_CENTER[1]) / MASK_AXES[1]  # (size,) along y
    r = np.sqrt(u[None, :] ** 2 + v[:, None] ** 2)  # (size, size) 1 on the ellipse
    # distance to the ellipse in crop units, to first order: (1 - r) / |grad r|
    grad = np.sqrt((u[None, :] / MASK_AXES[0]) ** 2 + (v[:, None] / MASK_AXES[1]) ** 2)
    dist = (1 - r) * r / np.maximum(grad, 1e-9)
    t = np.clip(dist / max(feather, 1e-6), 0.0, 1.0)
    return (t * t * t * (t * (6 * t - 15) + 10)).astype(np.float32)


COLOR_GRID = 16  # colour matching keeps the source's colour over cells of crop/16 and larger


def match_color(restored: np.ndarray, crop: np.ndarray) -> np.ndarray:
    """`restored` (float32) with its low frequencies (colour, shading) taken from `crop`, the
    source's aligned face: GPEN may shift a face's tint or brightness; its detail is kept."""
    size = restored.shape[0]
    grid = (COLOR_GRID, COLOR_GRID)
    diff = cv2.resize(crop.astype(np.float32), grid, interpolation=cv2.INTER_AREA) - \
        cv2.resize(restored, grid, interpolation=cv2.INTER_AREA)
    return restored + cv2.resize(diff, (size, size), interpolation=cv2.INTER_CUBIC)


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """The frame at `factor` times its size, Lanczos-resampled."""
    if factor == 1:
        return image
    h, w = image.shape[:2]
    return cv2.resize(image, (w * factor, h * factor), interpolation=cv2.INTER_LANCZOS4)


def from_resized(factor: float) -> np.ndarray:
    """(3, 3) map from the pixel coordinates of an image resized by `factor` to those of the
    image itself, pixel centres kept aligned: x_resized + 0.5 = factor * (x + 0.5)."""
    return np.array([[1 / factor, 0, (1 / factor - 1) / 2],
                     [0, 1 / factor, (1 / factor - 1) / 2],
                     [0, 0, 1]], np.float64)


def scaled_transform(matrix: np.ndarray, factor: int) -> np.ndarray:
    """frame->crop matrix for the frame upscaled by `factor`."""
    if factor == 1:
        return matrix
    return np.asarray(matrix, np.float64) @ from_resized(factor)


class Compositor:
    """strength: share of the restored face (1 = all restored). Upscales the frame by
    cfg.upscale (Lanczos) and pastes the faces from the model's full-resolution output."""

    name = "composite"
    lookahead = 0

    def __init__(self, cfg: CompositeConfig, size: int, strength: float) -> None:
        self.cfg = cfg
        self.size = size
        self.strength = strength
        self.mask = face_mask(size, cfg.mask_feather)

    def process(self, frame: Frame) -> Iterable[Frame]:
        if self.cfg.upscale != 1:
            frame.image = upscale(frame.image, self.cfg.upscale)
            frame.source = None  # every pixel is new: nothing of the decoded picture to keep
        for face in frame.restored:
            region = self.paste(frame.image, scaled_transform(face.matrix, self.cfg.upscale),
                                face.crop, face.restored, face.mask)
            if region is not None:
                frame.changed.append(region)
        frame.restored = []
        return (frame,)

    def flush(self) -> Iterable[Frame]:
        return ()

    def paste(self, image: np.ndarray, matrix: np.ndarray, crop: np.ndarray,
              restored: np.ndarray, parsed: np.ndarray | None = None
              ) -> tuple[int, int, np.ndarray] | None:
        """Blend one restored crop into `image` (H, W, 3, uint8 or uint16) in place. parsed: the
        face's parsing mask (S, S), which narrows the template mask to the face itself.
        Returns the pixels it changed as (x0, y0, mask), as Frame.changed holds them (None:
        none)."""
        if self.strength <= 0:
            return None  # nothing of the restored face to show: the frame stays as decoded
        h, w = image.shape[:2]
        inv = align.invert(matrix)
        corners = np.array([[0, 0, 1], [self.size, 0, 1], [0, self.size, 1],
                            [self.size, self.size, 1]], np.float64) @ inv.T
        x0, y0 = np.floor(corners.min(0)).astype(int)
        x1, y1 = np.ceil(corners.max(0)).astype(int)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 <= x0 or y1 <= y0:
            return None
        face = restored.astype(np.float32)
        if self.cfg.color_match:
            face = match_color(face, crop)
        if self.strength < 1.0:
            face = self.strength * face + (1 - self.strength) * crop.astype(np.float32)
        mask = self.mask if parsed is None else self.mask * parsed
        # A crop much larger than its place in the frame is first shrunk by area averaging
        # (a warp alone would alias the model's fine detail into noise).
        scale = float(np.sqrt(abs(np.linalg.det(inv[:, :2]))))
        side = int(np.ceil(self.size * scale))
        if side < self.size // 2:
            face = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
            mask = cv2.resize(mask, (side, side), interpolation=cv2.INTER_AREA)
            inv = inv @ from_resized(side / self.size)
        shifted = inv.copy()
        shifted[:, 2] -= (x0, y0)
        region = (x1 - x0, y1 - y0)
        face = align.warp(face, shifted, region, cubic=True, replicate=True)
        alpha = align.warp(mask, shifted, region)[..., None]
        inside = alpha[..., 0] > 0
        if not inside.any():
            return None
        roi = image[y0:y1, x0:x1]
        level = 257.0 if image.dtype == np.uint16 else 1.0  # 8-bit face into a 16-bit frame
        top = 65535 if image.dtype == np.uint16 else 255
        blended = alpha * face * level + (1 - alpha) * roi.astype(np.float32)
        new = np.clip(np.rint(blended[inside]), 0, top).astype(image.dtype)
        changed = np.zeros(inside.shape, bool)
        changed[inside] = np.any(new != roi[inside], axis=1)
        roi[inside] = new
        rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
        if rows.size == 0:
            return None
        return (x0 + int(cols[0]), y0 + int(rows[0]),
                changed[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1])
