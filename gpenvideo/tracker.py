"""Follows every face through time, smooths its landmarks without lag and says how much of each
face to restore (numpy/scipy only).

Per frame: detections are matched to live tracks by optimal assignment on a score mixing box
overlap and landmark distance. A track is confirmed after `min_hits` detections, or, cut short by
the film's end, with one detection scoring `keep_score` (a one-frame false positive never shows; a
one-frame film's face does). Confirmation is retroactive: a confirmed track covers every frame
from its first detection on. A track ends after `max_misses` frames without a detection; frames
missed inside a track are filled in by interpolation, and so are frames whose detection lost the
face's shape (a hand half over it: SHAPE_TOLERANCE), for up to SET_ASIDE_FRAMES frames.

Scene cuts: frames are compared on brightness-normalised grey thumbnails, so a flash, a fade or an
exposure jump changes nothing. A run of up to MAX_GLITCH frames unlike the shot on both sides of it
is a glitch (tape noise, dropout lines, a rolled frame), not a cut: the tracker judges a frame only
once it has seen MAX_GLITCH frames after it. Detections in a glitch frame continue tracks but start
none. At a cut every track ends, unless the same face (its brightness-normalised thumbnail) is
found at nearly the same place within CUT_GRACE frames after it.

Each face carries a weight, the share of the restoration it gets: 1 where the face is seen, and a
smooth ramp over `ramp_frames` frames down to 0 where a track starts or ends (except at the film's
ends and at scene cuts, where the picture changes anyway) and deep inside a gap of filled-in
frames (more than `hold_frames` from a detection), so the restoration fades in and out. A short
gap (RAMP_BRIDGE) near a track's start or end does not fade: the weight rises monotonically from
the track's first frame and falls to its last across it, instead of blinking down and up. A face
filled in across a glitch frame gets 0 there alone (the broken picture may have moved it), and so
does a face filled in where its box holds no face to restore: a blown-out flash, a black frame
(its contrast against that of the track's detections around it: BLANK_CONTRAST, FULL_CONTRAST;
a flash that only brightens the face keeps its contrast and is restored in full).

Each track's landmarks are smoothed by a centered (zero-phase), motion-adaptive low-pass filter
over a window of past and future frames, so the tracker holds back `lookahead` frames before it
hands a frame on.
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

PREDICT_FRAMES = 5  # latest detections a track's motion is extrapolated from
THUMB = 32  # side of the grey thumbnail frames are compared on
FACE_THUMB = 16  # side of the grey thumbnail of a face's box
THUMB_SHIFT = 2  # thumbnail pixels of shift tried when comparing frames (shake, slow pans)
BLANK_STD = 1.0  # grey levels (8-bit scale): a flatter thumbnail is blank (black, as in a fade)
MAX_GLITCH = 2  # a run of up to this many frames unlike the shot on both sides is a glitch
CUT_GRACE = MAX_GLITCH + 1  # frames after a cut in which a track may find its face again
CUT_DISTANCE = 0.5  # eye distances from its expected place that a face after a cut may be
FACE_MATCH = 0.8  # face thumbnail correlation above which a face after a cut is the same face
TENTATIVE_MISSES = 1  # frames in a row a track not yet confirmed may go without a detection
SHAPE_TOLERANCE = 0.1  # eye distances: a detection whose 5 points, fitted by a similarity to
# the track's recent ones, are further off than this is set aside (a half-hidden face) and the
# frame filled in
SCALE_TOLERANCE = 1.4  # a detection this much larger or smaller than the track's is set aside
SET_ASIDE_FRAMES = 3  # frames after its last kept detection in which a track sets detections
# aside; past them the face has really changed (a fast turn) and its detections are kept again
BLANK_CONTRAST = 0.1  # a filled-in face whose box has less than this share of the contrast
# (grey level spread) of the track's detections around it shows no face: weight 0 there
FULL_CONTRAST = 0.3  # from this share on it is restored in full; in between its weight eases
RAMP_BRIDGE = 4  # missed frames in a row, while a face fades in or out at a track's ends, that
# the fade goes on across (restored along it) instead of fading back out and in: a blink


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def eye_distance(landmarks: np.ndarray) -> float:
    return float(max(np.linalg.norm(landmarks[1] - landmarks[0]), 1.0))


def thumbnail(image: np.ndarray, size: int = THUMB) -> np.ndarray:
    """(size, size) float64 grey thumbnail of an (H, W, 3) uint8 or uint16 picture: the mean of
    each cell of a size x size grid, on the 8-bit scale. Pictures smaller than the grid repeat
    pixels. Raises ValueError for an empty picture."""
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError("thumbnail of an empty picture")
    step = max(1, min(image.shape[:2]) // (4 * size))  # subsample first: ~4 samples per cell
    grey = image[::step, ::step].astype(np.float64).mean(axis=2)
    if image.dtype == np.uint16:
        grey /= 257.0
    if grey.shape[0] < size or grey.shape[1] < size:  # a tiny crop: repeat its pixels
        grey = grey.repeat(-(-size // grey.shape[0]), 0).repeat(-(-size // grey.shape[1]), 1)
    h, w = grey.shape
    ys, xs = (np.arange(size + 1) * h) // size, (np.arange(size + 1) * w) // size
    total = np.pad(grey, ((1, 0), (1, 0))).cumsum(0).cumsum(1)  # integral image
    sums = (total[ys[1:]][:, xs[1:]] - total[ys[:-1]][:, xs[1:]]
            - total[ys[1:]][:, xs[:-1]] + total[ys[:-1]][:, xs[:-1]])
    return sums / np.outer(ys[1:] - ys[:-1], xs[1:] - xs[:-1])


def is_blank(thumb: np.ndarray) -> bool:
    """True for a thumbnail with no content to compare (a black or flat picture)."""
    return float(thumb.std()) < BLANK_STD


def similarity(a: np.ndarray, b: np.ndarray, shift: int = THUMB_SHIFT) -> float:
    """Brightness-normalised likeness of two (N, N) thumbnails: the best Pearson correlation
    (-1..1) over shifts of up to `shift` cells, so gain and offset (a flash, a fade, an exposure
    change) and a little motion do not count. 0 when either is flat."""
    n = a.shape[0]
    best = 0.0
    for dy in range(-shift, shift + 1):
        for dx in range(-shift, shift + 1):
            p = a[max(0, dy):n + min(0, dy), max(0, dx):n + min(0, dx)]
            q = b[max(0, -dy):n + min(0, -dy), max(0, -dx):n + min(0, -dx)]
            p, q = p - p.mean(), q - q.mean()
            norm = np.sqrt((p * p).sum() * (q * q).sum())
            if norm > 1e-9:
                best = max(best, float((p * q).sum() / norm))
    return best


def shot_change(shot: np.ndarray | None, thumb: np.ndarray, ahead: list[np.ndarray],
                threshold: float) -> str:
    """What a frame is to the shot before it.

    shot: thumbnail of the shot's latest frame (None before the first); thumb: this frame's;
    ahead: the thumbnails of up to MAX_GLITCH frames after it. Returns "blank" (nothing to
    compare), "same" (likeness above 1 - threshold), "glitch" (unlike the shot, but a frame
    after it is like the shot again) or "cut".
    """
    if is_blank(thumb):
        return "blank"
    if shot is None or 1.0 - similarity(shot, thumb) <= threshold:
        return "same"
    if any(not is_blank(t) and 1.0 - similarity(shot, t) <= threshold
           for t in ahead[:MAX_GLITCH]):
        return "glitch"
    return "cut"


def face_thumbnail(image: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """(FACE_THUMB, FACE_THUMB) thumbnail of the part of `image` inside `box` (x1, y1, x2, y2);
    None when the box lies outside the picture."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (round(float(v)) for v in box[:4])
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    return thumbnail(image[y1:y2, x1:x2], FACE_THUMB)


def shape_error(landmarks: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """How unlike `reference` the shape of (5, 2) `landmarks` is: the mean distance left after
    the best similarity fit (in eye distances of the reference), and the fit's scale."""
    z = landmarks[:, 0].astype(np.float64) + 1j * landmarks[:, 1]
    r = reference[:, 0].astype(np.float64) + 1j * reference[:, 1]
    z, r = z - z.mean(), r - r.mean()
    a = (np.conj(z) * r).sum() / max(float((np.abs(z) ** 2).sum()), 1e-9)  # scale * rotation
    return float(np.abs(a * z - r).mean()) / eye_distance(reference), float(abs(a))


def ease(x: float) -> float:
    """Smooth step from 0 (x <= 0) to 1 (x >= 1), flat at both ends (raised cosine)."""
    x = min(max(x, 0.0), 1.0)
    return 0.5 - 0.5 * float(np.cos(np.pi * x))


KAISER_BETA = 5.0  # window of the low-pass taps: about 1% ripple, no visible ringing


def lowpass_taps(half: int, cutoff: np.ndarray) -> np.ndarray:
    """(T, 2*half+1) zero-phase low-pass taps, one row per cutoff (fraction of the Nyquist
    frequency, 1 = pass everything): a Kaiser-windowed ideal low-pass, normalized to sum 1."""
    n = np.arange(-half, half + 1)
    c = np.clip(np.asarray(cutoff, np.float64), 1e-3, 1.0)[:, None]
    taps = c * np.sinc(c * n) * np.kaiser(2 * half + 1, KAISER_BETA)
    return taps / taps.sum(axis=1, keepdims=True)


def smooth_path(points: np.ndarray, window: int, cutoff: float,
                motion_scale: float) -> np.ndarray:
    """Zero-lag, motion-adaptive smoothing of one track's landmarks.

    points: (T, 5, 2) landmarks of consecutive frames. Each frame is the centre of a symmetric
    low-pass filter over `window` frames (zero phase: no lag): a Kaiser-windowed sinc with its
    cutoff at `cutoff` (a fraction of the Nyquist frequency; 0.2 is 2.5 Hz at 25 fps), flat
    where heads move slowly and falling off through the cutoff, so the frame-to-frame detector
    noise above it goes. Measured on real clips (bench/stability.py) it removes more jitter for
    the same displacement of the points than a Savitzky-Golay or Gaussian local-line fit.
    Where the face moves fast (speed measured in eye distances per frame against
    `motion_scale`) the cutoff opens towards 1, so a fast genuine move keeps its shape. Past the
    ends of the track the path is continued by odd reflection (its line continued), so the ends
    are not pulled back either. Returns (T, 5, 2) float64.
    """
    pts = np.asarray(points, np.float64)
    t_len = len(pts)
    half = window // 2
    if half == 0 or t_len < 3 or cutoff >= 1.0:
        return pts.copy()
    iod = np.array([eye_distance(p) for p in pts])
    center = pts.mean(axis=1)  # (T, 2)
    idx = np.arange(t_len)
    ahead, behind = np.minimum(idx + 2, t_len - 1), np.maximum(idx - 2, 0)
    speed = np.linalg.norm(center[ahead] - center[behind], axis=1) / np.maximum(
        ahead - behind, 1) / iod
    fast = (speed / motion_scale) ** 2
    taps = lowpass_taps(half, cutoff + (1.0 - cutoff) * fast / (1.0 + fast))
    # values at t + n for n in -half..half, continued past the ends by odd reflection about
    # each end's smoothed value (a straight-line fit: a raw end point would pass unsmoothed)
    at = idx[:, None] + np.arange(-half, half + 1)[None]
    flat = pts.reshape(t_len, -1)
    first, last = _line_fit_end(flat, half), _line_fit_end(flat[::-1], half)
    before, after = at < 0, at > t_len - 1
    mirror = np.clip(np.where(before, -at, np.where(after, 2 * (t_len - 1) - at, at)),
                     0, t_len - 1)
    values = flat[mirror]  # (T, window, 10)
    values = np.where(before[..., None], 2 * first - values, values)
    values = np.where(after[..., None], 2 * last - values, values)
    out = np.einsum("tn,tnk->tk", taps, values)
    out[0], out[-1] = first, last
    return out.reshape(pts.shape)


def _line_fit_end(flat: np.ndarray, half: int) -> np.ndarray:
    """The value at frame 0 of a straight line fitted to frames 0..half (Gaussian weights)."""
    dt = np.arange(min(half + 1, len(flat)), dtype=np.float64)
    w = np.exp(-0.5 * (dt / max(1.0, half / 2)) ** 2)
    sw, swt, swtt = w.sum(), (w * dt).sum(), (w * dt * dt).sum()
    y = flat[: len(dt)]
    swy, swty = w @ y, (w * dt) @ y
    det = sw * swtt - swt * swt
    return (swtt * swy - swt * swty) / det if det > 1e-12 else swy / sw


@dataclass
class _Track:
    id: int
    first: int  # frame index of the first detection
    hard_start: bool  # began on the film's first frame or right at a scene cut: no fade-in
    obs: dict[int, Detection] = field(default_factory=dict)  # frame index -> detection
    hits: int = 0
    last: int = 0  # frame index of the last detection
    best: float = 0.0  # highest detection score
    face: np.ndarray | None = None  # face thumbnail at the last detection (see face_thumbnail)
    contrast: dict[int, float] = field(default_factory=dict)  # frame index -> grey level spread
    # of the face thumbnail at each detection (see Tracker._content)
    cut_at: int | None = None  # first frame after a scene cut the track has not got over yet
    shape_from: int = 0  # detections from this frame on give the face's shape (see keeps)
    hard_end: bool = False  # ended by a scene cut right after its last detection: no fade-out
    confirmed: bool = False
    ended: bool = False

    def predict(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """Box and landmarks expected at `frame`: a straight line through the last
        PREDICT_FRAMES detections, continued (a line through the last two alone would carry
        their noise, doubled, into every frame of a gap)."""
        recent = sorted(self.obs)[-PREDICT_FRAMES:]
        if len(recent) < 2:
            last = self.obs[self.last]
            return last.box, last.landmarks
        t = np.asarray(recent, np.float64)
        y = np.stack([np.concatenate([self.obs[i].box, self.obs[i].landmarks.ravel()])
                      for i in recent]).astype(np.float64)
        slope, intercept = np.polyfit(t - t[-1], y, 1)
        at = intercept + slope * (frame - t[-1])
        return at[:4], at[4:].reshape(5, 2)

    def recent(self) -> tuple[np.ndarray, np.ndarray]:
        """Box and landmarks of the last PREDICT_FRAMES detections, their median (robust to a
        detection or two thrown off by a hand passing in front)."""
        recent = sorted(self.obs)[-PREDICT_FRAMES:]
        box = np.median(np.stack([self.obs[i].box for i in recent]), axis=0)
        return box, np.median(np.stack([self.obs[i].landmarks for i in recent]), axis=0)

    def expected(self, frame: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Where the face may be at `frame`: moving on as it did, or where it has lately been."""
        return [self.predict(frame), self.recent()]

    def keeps(self, frame: int, det: Detection) -> bool:
        """Whether `det`, at `frame`, is to be kept: it has the face's recent shape and size
        (see SHAPE_TOLERANCE), or the track has set detections aside for long enough, and then
        the face's shape is taken afresh from this detection on."""
        if frame - self.last > SET_ASIDE_FRAMES:
            self.shape_from = frame
            return True
        shaped = [i for i in sorted(self.obs) if i >= self.shape_from][-PREDICT_FRAMES:]
        if len(shaped) < 3:
            return True
        reference = np.median(np.stack([self.obs[i].landmarks for i in shaped]), axis=0)
        error, scale = shape_error(det.landmarks, reference)
        return error <= SHAPE_TOLERANCE and 1 / SCALE_TOLERANCE <= scale <= SCALE_TOLERANCE


class Tracker:
    """The tracking stage: takes frames in order with their detections and hands them on
    `lookahead` frames later with `faces` filled in."""

    name = "track"

    def __init__(self, cfg: TrackConfig | None = None,
                 aspect: tuple[float, float] = (1.0, 1.0)) -> None:
        self.cfg = cfg or TrackConfig()
        self.aspect = aspect  # (x, y) display size of a frame pixel, given to every face
        half = self.cfg.smoothing_window // 2
        # frames seen past a frame before its faces are final: its track's future must be
        # known over the smoothing window or the ramp, plus a gap, a cut's grace period or the
        # hits that confirm a new track
        # (a frame's ramp reaches ramp_frames ahead, to a missed frame that may lie in its
        # track's fade-out, up to ramp_frames - 1 before the track's end: see _bridged)
        settle = max(self.cfg.max_misses, CUT_GRACE, self.cfg.min_hits * (1 + TENTATIVE_MISSES))
        reach = settle + max(half, 2 * self.cfg.ramp_frames - 1) + 1
        self.lookahead = reach + MAX_GLITCH  # a frame is judged MAX_GLITCH frames late
        self.context = self.lookahead  # frames before and after a frame that shape its faces
        self._ids = itertools.count(1)
        self._live: list[_Track] = []
        self._all: list[_Track] = []
        self._buffer: deque[Frame] = deque()  # frames not handed on yet
        self._unjudged: deque[tuple[Frame, np.ndarray]] = deque()  # frames not observed yet
        self._shot: np.ndarray | None = None  # thumbnail of the current shot's latest frame
        self._glitches: set[int] = set()  # indices of glitch frames still in reach
        self._start: int | None = None  # index of the first frame seen
        self._end: int | None = None  # index of the last frame, once flush() knows it
        self.tracks_confirmed = 0
        self.faces_tracked = 0

    # -- association ---------------------------------------------------------------------
    @staticmethod
    def _similarity(box: np.ndarray, lms: np.ndarray, det: Detection) -> float:
        """How well `det` matches a track expected at `box` with landmarks `lms`."""
        dist = np.linalg.norm(lms - det.landmarks, axis=1).mean() / eye_distance(lms)
        return 0.5 * iou(box, det.box) + 0.5 * max(0.0, 1.0 - dist)

    def observe(self, index: int, detections: list[Detection], image: np.ndarray,
                change: str = "same") -> bool:
        """Associate one frame's detections; `change` is what the frame is to the shot before
        it (see shot_change). Returns True when a scene cut came before this frame."""
        cfg = self.cfg
        if self._start is None:
            self._start = index
        cut = change == "cut"
        if cut:
            for track in self._live:
                if track.cut_at is None:
                    track.cut_at = index
        free = list(range(len(detections)))
        free = self._continue_after_cut(index, detections, image, free)
        live = [t for t in self._live if t.cut_at is None]
        if live and free:
            sim = np.array([[max(self._similarity(box, lms, detections[c])
                                 for box, lms in t.expected(index)) for c in free]
                            for t in live])
            rows, cols = linear_sum_assignment(-sim)
            taken = set()
            for r, c in zip(rows, cols):
                if sim[r, c] >= cfg.match_threshold:
                    taken.add(free[c])  # this face's, even when set aside as misshapen
                    if live[r].keeps(index, detections[free[c]]):
                        self._add(live[r], index, detections[free[c]], image)
            free = [c for c in free if c not in taken]
        if change != "glitch":  # a face seen only in a glitch frame is noise
            for c in free:
                track = _Track(id=next(self._ids), first=index,
                               hard_start=cut or index == self._start)
                self._add(track, index, detections[c], image)
                self._live.append(track)
                self._all.append(track)
        for track in self._live:
            misses = index - track.last
            if track.cut_at is not None and index + 1 - track.cut_at >= CUT_GRACE:
                track.ended = True  # its face was not found again after the cut
                track.hard_end = track.last == track.cut_at - 1
            if misses > cfg.max_misses or (not track.confirmed and misses > TENTATIVE_MISSES):
                track.ended = True
        self._live = [t for t in self._live if not t.ended]
        return cut

    def _continue_after_cut(self, index: int, detections: list[Detection], image: np.ndarray,
                            free: list[int]) -> list[int]:
        """Continue the tracks waiting after a scene cut whose face is found again at nearly
        the same place; return the detections left over."""
        waiting = [t for t in self._live if t.cut_at is not None]
        if not waiting or not free:
            return free
        cost = np.full((len(waiting), len(free)), np.inf)
        for r, track in enumerate(waiting):
            for k, c in enumerate(free):
                det = detections[c]
                dist = min(np.linalg.norm(lms - det.landmarks, axis=1).mean() / eye_distance(lms)
                           for _, lms in track.expected(index))
                if dist > CUT_DISTANCE or track.face is None:
                    continue
                face = face_thumbnail(image, det.box)
                if face is not None and similarity(track.face, face, 1) >= FACE_MATCH:
                    cost[r, k] = dist
        if not np.isfinite(cost).any():
            return free
        rows, cols = linear_sum_assignment(np.where(np.isfinite(cost), cost, 1e6))
        taken = set()
        for r, k in zip(rows, cols):
            if np.isfinite(cost[r, k]):
                waiting[r].cut_at = None
                self._add(waiting[r], index, detections[free[k]], image)
                taken.add(free[k])
        return [c for c in free if c not in taken]

    def _add(self, track: _Track, index: int, det: Detection, image: np.ndarray) -> None:
        track.obs[index] = det
        track.last = index
        track.hits += 1
        track.best = max(track.best, float(det.score))
        track.face = face_thumbnail(image, det.box)
        if track.face is not None:
            track.contrast[index] = float(track.face.std())
        if not track.confirmed and track.hits >= self.cfg.min_hits:
            self._confirm(track)

    def _confirm(self, track: _Track) -> None:
        track.confirmed = True
        self.tracks_confirmed += 1

    # -- output --------------------------------------------------------------------------
    def _faces_at(self, index: int, image: np.ndarray) -> list[TrackedFace]:
        """The faces of frame `index` (its picture `image`, (H, W, 3))."""
        half = self.cfg.smoothing_window // 2
        faces = []
        for track in self._all:
            if not track.confirmed or not track.first <= index <= track.last:
                continue
            lo, hi = max(track.first, index - half), min(track.last, index + half)
            path = np.stack([self._at(track, i).landmarks for i in range(lo, hi + 1)])
            smoothed = smooth_path(path, self.cfg.smoothing_window, self.cfg.smoothing_cutoff,
                                   self.cfg.motion_scale)
            det = track.obs.get(index)
            at = self._at(track, index)
            faces.append(TrackedFace(
                track_id=track.id, box=at.box.astype(np.float32),
                raw=None if det is None else det.landmarks.astype(np.float32),
                smoothed=smoothed[index - lo].astype(np.float32), score=at.score,
                weight=self._weight(track, index) * self._content(track, index, at.box,
                                                                  image),
                aspect=self.aspect))
        if self.cfg.max_faces:
            # the largest faces that are restored at all (weight above 0) first
            faces.sort(key=lambda f: (f.weight <= 0,
                                      -float((f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))))
            faces = faces[: self.cfg.max_faces]
        return faces

    def _weight(self, track: _Track, index: int) -> float:
        """The share of the restoration the track's face gets at `index`: a raised-cosine
        ramp of the distance (in frames) to the nearest frame where the face is not shown."""
        if index in self._glitches and index not in track.obs:
            return 0.0  # filled in across a broken picture (a rolled frame): the face may lie
            # anywhere in it, and the glitch hides a one-frame gap in the restoration
        ramp = self.cfg.ramp_frames
        for d in range(ramp + 1):
            if not (self._shown(track, index - d) and self._shown(track, index + d)):
                return ease(d / (ramp + 1))
        return 1.0

    def _content(self, track: _Track, index: int, box: np.ndarray, image: np.ndarray) -> float:
        """0..1: how much face there is to restore in `box`, at `index` of `image`. 1 where
        the face is detected; where it is filled in, a smooth step of its thumbnail's contrast
        over that of the track's detections around it, from BLANK_CONTRAST (0: a blown-out
        flash or a black frame, where GPEN would paste a face onto nothing) to FULL_CONTRAST."""
        if index in track.obs:
            return 1.0
        near = sorted(track.contrast, key=lambda i: abs(i - index))[:2 * PREDICT_FRAMES]
        face = face_thumbnail(image, box)
        if not near or face is None:
            return 1.0
        typical = float(np.median([track.contrast[i] for i in near]))
        if typical < BLANK_STD:
            return 1.0  # the track's own face is that flat: nothing to compare with
        share = float(face.std()) / typical
        return ease((share - BLANK_CONTRAST) / (FULL_CONTRAST - BLANK_CONTRAST))

    def _shown(self, track: _Track, index: int) -> bool:
        """Whether the track's face counts as shown at `index` for the ramp: detected, filled
        in within `hold_frames` of a detection, or past a track's end where the picture
        changes anyway (the film's ends, a scene cut)."""
        if index < track.first:
            return track.hard_start
        if index > track.last:
            return track.hard_end or track.last == self._end
        if index in track.obs:
            return True
        before = max(i for i in track.obs if i < index)
        after = min(i for i in track.obs if i > index)
        return (min(index - before, after - index) <= self.cfg.hold_frames
                or self._bridged(track, index, before, after))

    def _bridged(self, track: _Track, index: int, before: int, after: int) -> bool:
        """Whether the missed frame `index`, in the gap between detections `before` and
        `after`, is part of its track's fade in or out and counts as shown (the fade goes on
        across the gap instead of fading down and back up: a blink). It is when the gap is
        short (RAMP_BRIDGE) and fading across it would overlap the fade-in (the gap's first
        frame more than hold_frames from a detection lies within 2 ramp_frames of the track's
        first frame: the weight rises monotonically from it to 1), or `index` lies in the
        fade-out (less than ramp_frames before the track's last frame, when the track fades
        out there: the weight falls monotonically to it)."""
        if after - before - 1 > RAMP_BRIDGE:
            return False  # a hand in front: faded out there, as anywhere in the track
        ramp = self.cfg.ramp_frames
        if not track.hard_start and before + self.cfg.hold_frames + 1 - track.first <= 2 * ramp:
            return True
        # the track's end is known once it has ended or the film has (lookahead: see __init__)
        known = track.ended or self._end is not None
        soft_end = known and not (track.hard_end or track.last == self._end)
        return soft_end and track.last - index < ramp

    @staticmethod
    def _at(track: _Track, index: int) -> Detection:
        """The track's detection at `index`, or one interpolated between the detections
        around it (a frame filled in)."""
        if index in track.obs:
            return track.obs[index]
        before = max(i for i in track.obs if i <= index)
        after = min(i for i in track.obs if i >= index)
        a, b = track.obs[before], track.obs[after]
        w = (index - before) / (after - before)
        return Detection(box=(1 - w) * a.box + w * b.box,
                         landmarks=(1 - w) * a.landmarks + w * b.landmarks,
                         score=(1 - w) * a.score + w * b.score)

    def _release(self, frame: Frame) -> Frame:
        frame.faces = self._faces_at(frame.index, frame.image)
        self.faces_tracked += len(frame.faces)
        # forget what no later frame can need
        reach = max(self.cfg.smoothing_window // 2, self.cfg.ramp_frames)
        horizon = frame.index - reach - self.cfg.max_misses - 2
        self._all = [t for t in self._all if t.last >= horizon and (t.confirmed or not t.ended)]
        self._glitches = {i for i in self._glitches if i >= horizon}
        for track in self._all:
            for i in [i for i in track.obs if i < horizon]:
                if len(track.obs) > 2 and i != track.first:
                    del track.obs[i]
                    track.contrast.pop(i, None)
        return frame

    def _judge(self) -> None:
        """Observe the oldest frame not yet observed, judged against the shot before it and
        the frames after it that have arrived."""
        frame, thumb = self._unjudged.popleft()
        change = shot_change(self._shot, thumb, [t for _, t in self._unjudged],
                             self.cfg.scene_cut_threshold)
        if change in ("same", "cut"):
            self._shot = thumb
        elif change == "glitch":
            self._glitches.add(frame.index)
        frame.scene_cut = self.observe(frame.index, frame.detections, frame.image, change)

    def process(self, frame: Frame) -> Iterable[Frame]:
        """Take one frame with `frame.detections` set and return the frames that are now final
        (those `lookahead` frames back), with `faces` filled in."""
        self._unjudged.append((frame, thumbnail(frame.image)))
        self._buffer.append(frame)
        while len(self._unjudged) > MAX_GLITCH:
            self._judge()
        out = []
        while len(self._buffer) > self.lookahead:
            out.append(self._release(self._buffer.popleft()))
        return out

    def flush(self) -> Iterable[Frame]:
        """Hand on the frames held back: the film (or segment) has ended. A live track too
        short to be confirmed is kept when it has a detection scoring `keep_score`."""
        while self._unjudged:
            self._judge()
        if self._buffer:
            self._end = self._buffer[-1].index
        for track in self._live:
            if not track.confirmed and track.best >= self.cfg.keep_score:
                self._confirm(track)
        out = [self._release(f) for f in self._buffer]
        self._buffer.clear()
        return out
