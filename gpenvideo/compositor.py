"""Pastes restored faces back into their frames: inverse similarity warp, a soft mask tied to
the face template (narrowed to the face's own outline by a parsing mask with --mask parsing),
blended with the decoded frame by the mask times the strength (the source's share is the
frame's own pixels, never resampled). Pixels outside every face mask are left exactly as
decoded.

The face path works at the face's size in the frame: the crop is shrunk first (by area
averaging, when the model's crop is much larger than the face), then colour-matched against the
source crop and warped into a patch over the face's bounding box. On a GPU the
restorer runs that path where the model runs (restorer.FacePath) and hands on the patch; here
only the patch is blended into the frame. CPU runs do the same steps with OpenCV."""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from . import align
from .align import COLOR_GRID, MASK_AXES, MASK_CENTER, face_mask, from_resized, scaled_transform  # noqa: F401 (re-exported)
from .config import CompositeConfig
from .frames import Frame


def match_color(restored: np.ndarray, crop: np.ndarray) -> np.ndarray:
    """`restored` (float32, (s, s, 3)) with its low frequencies (colour, shading) taken from
    `crop` (same shape), the source's aligned face: GPEN may shift a face's tint or brightness;
    its detail is kept."""
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


def face_patch(place: align.Placement, crop: np.ndarray, restored: np.ndarray,
               mask: np.ndarray, strength: float, color_match: bool
               ) -> tuple[np.ndarray, np.ndarray]:
    """The CPU (OpenCV) face path: crop, restored (S, S, 3) uint8, mask (S, S) float32 ->
    the face (h, w, 3) float32 and its alpha (h, w) float32 over the patch of `place`. The
    strength scales the alpha: the rest of each pixel stays the decoded frame's own."""
    face, src = restored.astype(np.float32), crop.astype(np.float32)
    if place.side != face.shape[0]:
        side = (place.side, place.side)
        face = cv2.resize(face, side, interpolation=cv2.INTER_AREA)
        src = cv2.resize(src, side, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, side, interpolation=cv2.INTER_AREA)
    if color_match:
        face = match_color(face, src)
    region = (place.x1 - place.x0, place.y1 - place.y0)
    face = align.warp(face, place.to_patch, region, cubic=True, replicate=True)
    alpha = align.warp(mask, place.to_patch, region)
    if strength < 1.0:  # blended with the frame's own pixels, never a resampled copy of them
        alpha *= np.float32(strength)
    return face, alpha


def blend_patch(image: np.ndarray, x0: int, y0: int, face: np.ndarray, alpha: np.ndarray
                ) -> tuple[int, int, np.ndarray, np.ndarray] | None:
    """Blend `face` ((h, w, 3) float32, 0-255) by `alpha` ((h, w) float32, 0-1) over
    image[y0:y0+h, x0:x0+w] (uint8, or uint16 at full 16-bit scale; not changed). Returns what
    Frame.paste takes: (x0, y0, pixels (h', w', 3) of the image's dtype, mask (h', w') bool of
    the pixels that change), cut to the changed pixels' box (None: none change)."""
    h, w = alpha.shape
    roi = image[y0:y0 + h, x0:x0 + w]
    level = 257.0 if image.dtype == np.uint16 else 1.0  # 8-bit face into a 16-bit frame
    top = 65535 if image.dtype == np.uint16 else 255
    # Over the whole patch at once (gathering the pixels under the mask first cost 3x more):
    # where alpha is 0 the sum is the frame's own value, exactly, so it stays unchanged.
    a = np.maximum(alpha, 0, dtype=np.float32)[..., None]
    new = a * face
    if level != 1.0:
        new *= level
    new += np.multiply(1 - a, roi, dtype=np.float32)
    np.rint(new, out=new)
    np.clip(new, 0, top, out=new)
    pixels = new.astype(image.dtype)
    differ = pixels != roi
    changed = differ[..., 0] | differ[..., 1] | differ[..., 2]  # faster than any(axis=2)
    rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
    if rows.size == 0:
        return None
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return x0 + int(c0), y0 + int(r0), pixels[r0:r1, c0:c1], changed[r0:r1, c0:c1]


class Compositor:
    """strength: share of the restored face (1 = all restored), times each face's weight.
    Upscales the frame by cfg.upscale (Lanczos) and pastes the faces from the model's
    full-resolution output (or the patches the restorer already warped on the GPU)."""

    name = "composite"
    context = 0

    def __init__(self, cfg: CompositeConfig, size: int, strength: float) -> None:
        self.cfg = cfg
        self.size = size
        self.strength = strength
        self.mask = face_mask(size, cfg.mask_feather)

    def process(self, frame: Frame) -> Iterable[Frame]:
        if self.cfg.upscale != 1:  # every pixel is new: nothing of the decoded picture is kept
            frame.replace_image(upscale(frame.image, self.cfg.upscale))
        for face in frame.restored:
            if face.patch is not None:
                patch = blend_patch(frame.image, *face.patch)
            else:
                patch = self.blend(frame.image, scaled_transform(face.matrix, self.cfg.upscale),
                                   face.crop, face.restored, face.mask, face.weight)
            if patch is not None:
                frame.paste(*patch)
        frame.restored = []
        return (frame,)

    def flush(self) -> Iterable[Frame]:
        return ()

    def paste(self, frame: Frame, matrix: np.ndarray, crop: np.ndarray,
              restored: np.ndarray, parsed: np.ndarray | None = None, weight: float = 1.0
              ) -> None:
        """Blend one restored crop into `frame` (Frame.paste: the pixels it changes are
        recorded). matrix: (2, 3) frame -> crop; crop, restored: (S, S, 3) uint8 BGR; parsed,
        weight: as for `blend`."""
        patch = self.blend(frame.image, matrix, crop, restored, parsed, weight)
        if patch is not None:
            frame.paste(*patch)

    def blend(self, image: np.ndarray, matrix: np.ndarray, crop: np.ndarray,
              restored: np.ndarray, parsed: np.ndarray | None = None, weight: float = 1.0
              ) -> tuple[int, int, np.ndarray, np.ndarray] | None:
        """The patch one restored crop makes of `image` (H, W, 3, uint8 or uint16; not
        changed), as blend_patch returns it. parsed: the face's parsing mask (S, S), which
        narrows the template mask to the face itself; weight: the face's share of the
        restoration (times the strength; 0 changes nothing)."""
        strength = self.strength * weight
        if strength <= 0:
            return None  # nothing of the restored face to show: the frame stays as decoded
        place = align.placement(matrix, self.size, image.shape[1], image.shape[0])
        if place is None:
            return None
        mask = self.mask if parsed is None else self.mask * parsed
        face, alpha = face_patch(place, crop, restored, mask, strength, self.cfg.color_match)
        return blend_patch(image, place.x0, place.y0, face, alpha)
