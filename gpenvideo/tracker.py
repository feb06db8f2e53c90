"""Follows every face through time and smooths its landmarks without lag (numpy/scipy only).

Per frame: detections are matched to live tracks by optimal assignment on a score mixing box
overlap and landmark distance; a track is confirmed after `min_hits` detections (one-frame false
positives never show), ends after `max_misses` frames without one, and every track ends at a
scene cut. Frames missed inside a track are filled in by interpolation. Each track's landmarks
are smoothed by a centered, motion-adaptive local-linear fit over a window of past and future
frames, so the tracker holds back `lookahead` frames before it hands a frame on.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from .config import TrackConfig
from .frames import Detection, Frame, TrackedFace

HIST_BINS = 32
HIST_STEP = 8  # pixel stride when computing the scene-cut histogram


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def eye_distance(landmarks: np.ndarray) -> float:
    return float(max(np.linalg.norm(landmarks[1] - landmarks[0]), 1.0))


def histogram(image: np.ndarray) -> np.ndarray:
    """(3, HIST_BINS) normalized per-channel histogram of a subsampled frame."""
    small = image[::HIST_STEP, ::HIST_STEP]
    top = 256 if small.dtype == np.uint8 else 65536
    hist = np.stack([np.histogram(small[..., c], HIST_BINS, (0, top))[0] for c in range(3)])
    return hist / max(1, small.shape[0] * small.shape[1])


def is_scene_cut(prev: np.ndarray | None, cur: np.ndarray, threshold: float) -> bool:
    """True when the histograms differ by more than `threshold` (mean total variation, 0..1)."""
    if prev is None:
        return False
    return float(0.5 * np.abs(prev - cur).sum(axis=1).mean()) > threshold


def smooth_path(points: np.ndarray, window: int, motion_scale: float) -> np.ndarray:
    """Zero-lag, motion-adaptive smoothing of one track's landmarks.

    points: (T, 5, 2) landmarks of consecutive frames. At each frame a straight line is fitted
    (weighted least squares) to the points of a centered window of `window` frames with Gaussian
    weights, and evaluated at that frame: a straight-line fit has no lag, even at a track's ends.
    The Gaussian narrows where the face moves fast (speed measured in eye distances per frame
    against `motion_scale`), so genuine motion is followed while detector noise is averaged away.
    Returns (T, 5, 2) float64.
    """
    pts = np.asarray(points, np.float64)
    t_len = len(pts)
    half = window // 2
    if half == 0 or t_len < 3:
        return pts.copy()
    iod = np.array([eye_distance(p) for p in pts])
    center = pts.mean(axis=1)  # (T, 2)
    k = 2
    idx = np.arange(t_len)
    ahead, behind = np.minimum(idx + k, t_len - 1), np.maximum(idx - k, 0)
    speed = np.linalg.norm(center[ahead] - center[behind], axis=1) / np.maximum(
        ahead - behind, 1) / iod
    sigma = np.maximum(0.6, (half / 1.5) / (1.0 + (speed / motion_scale) ** 2))
    out = np.empty_like(pts)
    flat = pts.reshape(t_len, -1)
    for t in range(t_len):
        lo, hi = max(0, t - half), min(t_len, t + half + 1)
        dt = np.arange(lo, hi) - t
        w = np.exp(-0.5 * (dt / sigma[t]) ** 2)
        # weighted fit of a + b*dt; the value at dt = 0 is a
        sw, swt, swtt = w.sum(), (w * dt).sum(), (w * dt * dt).sum()
        y = flat[lo:hi]
        swy, swty = w @ y, (w * dt) @ y
        det = sw * swtt - swt * swt
        a = (swtt * swy - swt * swty) / det if det > 1e-12 else swy / sw
        out[t] = a.reshape(5, 2)
    return out


@dataclass
class _Track:
    id: int
    first: int  # frame index of the first detection
    obs: dict[int, Detection] = field(default_factory=dict)  # frame index -> detection
    hits: int = 0
    last: int = 0  # frame index of the last detection
    confirmed: bool = False
    ended: bool = False

    def predict(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """Box and landmarks expected at `frame` (constant velocity from the last two)."""
        last = self.obs[self.last]
        earlier = [i for i in sorted(self.obs) if i < self.last][-1:]
        if not earlier:
            return last.box, last.landmarks
        prev = self.obs[earlier[0]]
        step = (frame - self.last) / (self.last - earlier[0])
        return (last.box + (last.box - prev.box) * step,
                last.landmarks + (last.landmarks - prev.landmarks) * step)


class Tracker:
    """The tracking stage: takes frames in order with their detections and hands them on
    `lookahead` frames later with `faces` filled in."""

    name = "track"

    def __init__(self, cfg: TrackConfig | None = None) -> None:
        self.cfg = cfg or TrackConfig()
        half = self.cfg.smoothing_window // 2
        self.lookahead = max(self.cfg.max_misses, self.cfg.min_hits) + half + 1
        self.context = self.lookahead  # frames before and after a frame that shape its faces
        self._ids = itertools.count(1)
        self._live: list[_Track] = []
        self._all: list[_Track] = []
        self._buffer: deque[Frame] = deque()
        self._prev_hist: np.ndarray | None = None
        self.tracks_confirmed = 0
        self.faces_tracked = 0

    # -- association ---------------------------------------------------------------------
    def _similarity(self, track: _Track, det: Detection, frame: int) -> float:
        box, lms = track.predict(frame)
        dist = np.linalg.norm(lms - det.landmarks, axis=1).mean() / eye_distance(lms)
        return 0.5 * iou(box, det.box) + 0.5 * max(0.0, 1.0 - dist)

    def observe(self, index: int, detections: list[Detection], image: np.ndarray) -> bool:
        """Associate one frame's detections. Returns True when a scene cut ended all tracks."""
        cfg = self.cfg
        hist = histogram(image)
        cut = is_scene_cut(self._prev_hist, hist, cfg.scene_cut_threshold)
        self._prev_hist = hist
        if cut:
            for track in self._live:
                track.ended = True
            self._live = []
        live = self._live
        matched: set[int] = set()
        if live and detections:
            sim = np.array([[self._similarity(t, d, index) for d in detections] for t in live])
            rows, cols = linear_sum_assignment(-sim)
            for r, c in zip(rows, cols):
                if sim[r, c] >= cfg.match_threshold:
                    self._add(live[r], index, detections[c])
                    matched.add(c)
        for c, det in enumerate(detections):
            if c not in matched:
                track = _Track(id=next(self._ids), first=index)
                self._add(track, index, det)
                self._live.append(track)
                self._all.append(track)
        for track in self._live:
            misses = index - track.last
            if misses > cfg.max_misses or (not track.confirmed and misses > 0):
                track.ended = True  # a tentative track must be seen in consecutive frames
        self._live = [t for t in self._live if not t.ended]
        return cut

    def _add(self, track: _Track, index: int, det: Detection) -> None:
        track.obs[index] = det
        track.last = index
        track.hits += 1
        if not track.confirmed and track.hits >= self.cfg.min_hits:
            track.confirmed = True
            self.tracks_confirmed += 1

    # -- output --------------------------------------------------------------------------
    def _faces_at(self, index: int) -> list[TrackedFace]:
        half = self.cfg.smoothing_window // 2
        faces = []
        for track in self._all:
            if not track.confirmed or not track.first <= index <= track.last:
                continue
            lo, hi = max(track.first, index - half), min(track.last, index + half)
            path = np.stack([self._landmarks_at(track, i) for i in range(lo, hi + 1)])
            smoothed = smooth_path(path, self.cfg.smoothing_window, self.cfg.motion_scale)
            det = track.obs.get(index)
            box, score = self._box_at(track, index)
            faces.append(TrackedFace(
                track_id=track.id, box=box.astype(np.float32),
                raw=None if det is None else det.landmarks.astype(np.float32),
                smoothed=smoothed[index - lo].astype(np.float32), score=score))
        if self.cfg.max_faces:
            faces.sort(key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
            faces = faces[: self.cfg.max_faces]
        return faces

    @staticmethod
    def _neighbours(track: _Track, index: int) -> tuple[int, int]:
        before = max(i for i in track.obs if i <= index)
        after = min(i for i in track.obs if i >= index)
        return before, after

    def _landmarks_at(self, track: _Track, index: int) -> np.ndarray:
        if index in track.obs:
            return track.obs[index].landmarks
        a, b = self._neighbours(track, index)
        w = (index - a) / (b - a)
        return (1 - w) * track.obs[a].landmarks + w * track.obs[b].landmarks

    def _box_at(self, track: _Track, index: int) -> tuple[np.ndarray, float]:
        if index in track.obs:
            return track.obs[index].box, track.obs[index].score
        a, b = self._neighbours(track, index)
        w = (index - a) / (b - a)
        box = (1 - w) * track.obs[a].box + w * track.obs[b].box
        return box, (1 - w) * track.obs[a].score + w * track.obs[b].score

    def _release(self, frame: Frame) -> Frame:
        frame.faces = self._faces_at(frame.index)
        self.faces_tracked += len(frame.faces)
        # forget what no later frame can need
        horizon = frame.index - self.cfg.smoothing_window // 2 - self.cfg.max_misses - 2
        self._all = [t for t in self._all if t.last >= horizon and (t.confirmed or not t.ended)]
        for track in self._all:
            for i in [i for i in track.obs if i < horizon]:
                if len(track.obs) > 2 and i != track.first:
                    del track.obs[i]
        return frame

    def process(self, frame: Frame) -> Iterable[Frame]:
        """Take one frame with `frame.detections` set and return the frames that are now final
        (those `lookahead` frames back), with `faces` filled in."""
        frame.scene_cut = self.observe(frame.index, frame.detections, frame.image)
        self._buffer.append(frame)
        out = []
        while len(self._buffer) > self.lookahead:
            out.append(self._release(self._buffer.popleft()))
        return out

    def flush(self) -> Iterable[Frame]:
        out = [self._release(f) for f in self._buffer]
        self._buffer.clear()
        return out
