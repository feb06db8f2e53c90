"""Registration of the aligned face crop over time (numpy/OpenCV only).

Landmark smoothing leaves low-frequency landmark error that no filter of the points can remove:
the face still drifts and wobbles inside its aligned crop, and a generative model turns that
motion into texture that boils from frame to frame. This stage measures the motion of the
picture itself. For every tracked face it cuts a small grey patch of the rigid part of the face
(eyes, brows, nose bridge) through the landmark transform, measures by phase correlation how far
that patch moved against each of its neighbours in the same track within +-`window // 2` frames,
and moves the crop so the patch sits where a zero-phase local line through the neighbours' places
puts it. Every correction is relative to the landmark transform of its own frame (never chained
from frame to frame), so it cannot drift over a long track; it is clamped to `max_shift`; and
each neighbour counts by the phase correlation's own confidence, so a hand passing in front,
motion blur or a head turn (no confident neighbours) falls back to the landmark transform.

The result is TrackedFace.matrix: (2, 3) frame -> aligned 512-px template crop; a crop of S
pixels is cut with matrix * (S / 512). The stage holds back `lookahead` frames (the neighbours
after a frame) like the Tracker does.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable

import cv2
import numpy as np

from . import align
from .config import RegisterConfig
from .frames import Frame, TrackedFace

TEMPLATE_SIZE = 512  # TrackedFace.matrix maps to a crop of this size
# the rigid part of the face in the 512 template (x0, y0, x1, y1): brows, eyes, nose bridge
# down to the nose tip; the mouth (which moves while talking) stays out
RIGID_BOX = (148.0, 160.0, 364.0, 320.0)
TEMPLATE_EYE_DISTANCE = float(np.linalg.norm(align.TEMPLATE_512[1] - align.TEMPLATE_512[0]))


def rigid_patch(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The grey patch over RIGID_BOX of the crop `matrix` cuts, at `size` px per 512 template.

    image: (H, W, 3) BGR uint8 or uint16 frame; matrix: (2, 3) frame -> 512 template crop.
    Returns (h, w) float32 on a 0..255 scale (h, w = RIGID_BOX's extent * size / 512). A frame
    much larger than the patch is cut at up to 4x and reduced by area (no aliasing).
    """
    x0, y0, x1, y1 = RIGID_BOX
    k = size / TEMPLATE_SIZE
    w, h = round((x1 - x0) * k), round((y1 - y0) * k)
    m = np.asarray(matrix, np.float64) * k
    m[:, 2] -= (x0 * k, y0 * k)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))  # patch px per frame px
    over = int(min(4, max(1, np.ceil(1.0 / max(scale, 1e-6) - 0.25))))
    if over > 1:
        m *= over
    patch = cv2.warpAffine(image, m, (w * over, h * over), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    if patch.ndim == 3:  # grey after the warp: only the patch's pixels are converted
        patch = cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY)
    if over > 1:
        patch = cv2.resize(patch, (w, h), interpolation=cv2.INTER_AREA)
    patch = patch.astype(np.float32)
    if image.dtype == np.uint16:
        patch *= 1.0 / 257.0
    return patch


def kernel(half: int) -> np.ndarray:
    """(2*half+1,) weights of the neighbours at offsets -half..half: a raised cosine."""
    n = np.arange(-half, half + 1, dtype=np.float64)
    return 0.5 + 0.5 * np.cos(np.pi * n / (half + 1))


def local_offset(offsets: np.ndarray, shifts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Where a weighted straight line through the neighbours' places puts this frame's patch,
    relative to where it is: offsets (K,) frame offsets of the neighbours (this frame at 0 with
    shift 0 included), shifts (K, 2) their patches' places relative to this one, weights (K,).
    A line (not a mean) so a one-sided window at a track's end does not lag. Returns (2,)."""
    sw = weights.sum()
    swt, swtt = weights @ offsets, weights @ (offsets * offsets)
    swy, swty = weights @ shifts, (weights * offsets) @ shifts
    det = sw * swtt - swt * swt
    if det <= 1e-9 * max(sw * swtt, 1e-12):
        return swy / sw
    return (swtt * swy - swt * swty) / det


def register_track(patches: list[np.ndarray | None],
                   cfg: RegisterConfig) -> tuple[np.ndarray, np.ndarray]:
    """Corrections of one track's consecutive frames, offline (what the stage computes frame
    by frame): patches from `rigid_patch` (None where the face is absent). Returns (T, 2)
    float64 shifts in 512-template pixels to add to each frame's crop translation, and (T,)
    confidence 0..1 (the share of the neighbours' weight that was trusted)."""
    pairs: dict[tuple[int, int], tuple[np.ndarray, float]] = {}
    window = None
    half = cfg.window // 2
    out = np.zeros((len(patches), 2))
    conf = np.zeros(len(patches))
    for t in range(len(patches)):
        if patches[t] is None:
            continue
        if window is None:
            window = align.hanning(patches[t].shape)
        near = {s - t: patches[s]
                for s in range(max(0, t - half), min(len(patches), t + half + 1))}
        out[t], conf[t] = correction(t, near, cfg, pairs, window)
    return out, conf


def correction(t: int, near: dict[int, np.ndarray | None], cfg: RegisterConfig,
               pairs: dict[tuple[int, int], tuple[np.ndarray, float]],
               window: np.ndarray) -> tuple[np.ndarray, float]:
    """The shift (2,) in 512-template pixels to add to frame t's crop translation, and its
    confidence. near: offset -> the same face's patch in the frame at t + offset (0 is t
    itself); pairs caches measurements by (frame, frame) and is filled in."""
    half = cfg.window // 2
    k = kernel(half)
    scale = TEMPLATE_SIZE / cfg.size  # template px per patch px
    limit = cfg.max_shift * TEMPLATE_EYE_DISTANCE
    offsets, shifts, weights = [0.0], [np.zeros(2)], [k[half]]
    total = k[half]
    for off, patch in near.items():
        if off == 0 or patch is None:
            continue
        total += k[half + off]
        key = (t, t + off) if off > 0 else (t + off, t)
        if key not in pairs:
            lo, hi = (near[0], patch) if off > 0 else (patch, near[0])
            shift, response = align.phase_shift(lo, hi, window)
            pairs[key] = (shift * scale, response)
        shift, response = pairs[key]
        if off < 0:
            shift = -shift
        trust = np.clip((response - cfg.min_response) / (cfg.full_response - cfg.min_response),
                        0.0, 1.0)
        if trust <= 0 or np.linalg.norm(shift) > 2 * limit + abs(off) * cfg.max_motion * \
                TEMPLATE_EYE_DISTANCE:
            continue
        offsets.append(float(off))
        shifts.append(shift)
        weights.append(k[half + off] * trust)
    w = np.asarray(weights)
    confidence = float((w.sum() - k[half]) / max(total - k[half], 1e-9))
    if len(w) < 3:
        return np.zeros(2), confidence
    move = local_offset(np.asarray(offsets), np.asarray(shifts), w)
    # fewer trusted neighbours: a shorter way from the landmark transform
    move *= min(1.0, 2.0 * confidence)
    norm = float(np.linalg.norm(move))
    if norm > limit:
        move *= limit / norm
    return move, confidence


def refined(matrix: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """(2, 3) float64 `matrix` (frame -> 512 crop) with the crop moved by `shift` (2,) pixels."""
    out = np.array(matrix, np.float64)
    out[:, 2] += shift
    return out


def landmark_matrix(face: TrackedFace) -> np.ndarray:
    """(2, 3) float64 frame -> 512 template crop from the face's smoothed landmarks."""
    return align.face_transform(face.smoothed, TEMPLATE_SIZE, face.aspect)


def crop_motion(images: list[np.ndarray], matrices: list[np.ndarray | None],
                size: int = 256, min_response: float = 0.1,
                max_step: float = 0.25) -> tuple[float, int]:
    """How much the face still moves inside its aligned crop: the RMS shift between
    consecutive crops over the rigid part of the face (RIGID_BOX), by phase correlation at
    `size` px per template, in template eye distances. images: the frames; matrices: frame ->
    512 crop per frame (None: no face there; the pairs with it are skipped). Pairs whose
    correlation failed (response < min_response, or a peak more than `max_step` eye distances
    away: a wrong peak, seen with raw landmarks' rotation jumps) are left out. Returns the RMS
    and how many pairs were left out. Raises ValueError when no pair is left."""
    unit = TEMPLATE_EYE_DISTANCE * size / 512
    shifts, prev, window, left_out = [], None, None, 0
    for image, m in zip(images, matrices):
        patch = None if m is None else rigid_patch(image, m, size)
        if patch is not None and prev is not None:
            window = align.hanning(patch.shape) if window is None else window
            shift, response = align.phase_shift(prev, patch, window)
            if response >= min_response and np.linalg.norm(shift) <= max_step * unit:
                shifts.append(shift)
            else:
                left_out += 1
        prev = patch
    if not shifts:
        raise ValueError("no two consecutive crops to compare")
    d = np.asarray(shifts)
    return float(np.sqrt((d ** 2).sum(1).mean()) / unit), left_out


class Registrar:
    """The registration stage: takes the Tracker's frames (image and faces) in order and hands
    them on `lookahead` frames later with each face's `matrix` set (frame -> 512 crop)."""

    name = "register"

    def __init__(self, cfg: RegisterConfig | None = None) -> None:
        self.cfg = cfg or RegisterConfig()
        half = self.cfg.window // 2 if self.cfg.enabled else 0
        self.half = half
        self.lookahead = half
        self.context = half  # frames before and after a frame that shape its matrices
        self._buffer: deque[Frame] = deque()
        self._patches: dict[int, dict[int, np.ndarray]] = {}  # frame -> track -> patch
        self._pairs: dict[int, dict[tuple[int, int], tuple[np.ndarray, float]]] = {}
        self._window: np.ndarray | None = None
        self.faces_registered = 0  # faces whose crop the registration moved

    def process(self, frame: Frame) -> Iterable[Frame]:
        """Take one frame with `faces` set; return the frames now final (`lookahead` back)."""
        if not self.cfg.enabled:
            return (frame,)
        self._patches[frame.index] = {
            f.track_id: rigid_patch(frame.image, landmark_matrix(f), self.cfg.size)
            for f in frame.faces}
        self._buffer.append(frame)
        return self._release_down_to(self.lookahead)

    def flush(self) -> Iterable[Frame]:
        out = self._release_down_to(0)
        self._patches.clear()
        self._pairs.clear()
        return out

    def _release_down_to(self, held: int) -> list[Frame]:
        """Release the oldest frames until `held` are left."""
        return [self._release(self._buffer.popleft()) for _ in range(len(self._buffer) - held)]

    def _release(self, frame: Frame) -> Frame:
        t = frame.index
        faces = []
        for face in frame.faces:
            near = {}
            for s in range(t - self.half, t + self.half + 1):
                patch = self._patches.get(s, {}).get(face.track_id)
                if patch is not None:
                    near[s - t] = patch
            if self._window is None:
                self._window = align.hanning(near[0].shape)
            pairs = self._pairs.setdefault(face.track_id, {})
            shift, _ = correction(t, near, self.cfg, pairs, self._window)
            if np.any(shift):
                self.faces_registered += 1
            faces.append(dataclasses.replace(face, matrix=refined(landmark_matrix(face), shift)))
        frame.faces = faces
        # forget what no later frame can need
        horizon = t - self.half
        for index in [i for i in self._patches if i < horizon]:
            del self._patches[index]
        for track_id, pairs in list(self._pairs.items()):
            for key in [k for k in pairs if k[0] < horizon]:
                del pairs[key]
            if not pairs:
                del self._pairs[track_id]
        return frame
