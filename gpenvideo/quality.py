"""Per-track quality figures measured while restoring, and the choice of which faces to restore.

Two small stages share one `TrackLedger` per run (or segment):

    detect -> track -> SelectStage -> restore -> QualityStage -> composite

SelectStage hands the restorer only the faces chosen with --faces / --skip-faces and keeps the
others aside (they are passed through bit for bit: the compositor never sees them);
QualityStage puts them back into `frame.faces` and measures, per track, on aligned crops
downscaled to QUALITY_SIZE pixels (cheap next to GPEN):

- frames: the track's frames written; frames_restored: of those, how many were restored;
- face_size: the median eye distance in frame pixels (a face under ~20 px has little for GPEN
  to work with; one over ~150 px is smaller in the model's crop than in the frame);
- motion: the mean in-crop residual motion, in eye distances per frame: how far the face moves
  inside its aligned crop from one frame to the next (phase correlation of consecutive source
  crops); high values mean the tracking or smoothing let the face jitter in the crop;
- flicker: the frame-to-frame change of the restored face over that of the source face, both
  in aligned space with the previous frame shifted by the measured motion first. 1: the
  restoration changes as much as the source does; above 1 it adds flicker; below 1 it steadies.

A frame pair whose phase correlation is unsure (its peak response under MIN_RESPONSE: one of
the crops shows no face, as in a blown-out flash or a black frame, or a broken picture) says
nothing about the face's motion and is left out of both figures; so is a face not pasted
(weight 0: the frame is written as decoded), which counts as not restored.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import cv2
import numpy as np

from . import align
from .frames import Frame, TrackedFace

QUALITY_SIZE = 64  # side of the downscaled aligned crops the figures are measured on (pixels)
# eye distance of the face template in a QUALITY_SIZE crop (pixels): motion is given in these
TEMPLATE_EYES = float(np.linalg.norm(align.template(QUALITY_SIZE)[1]
                                     - align.template(QUALITY_SIZE)[0]))
FLICKER_FLOOR = 0.25  # grey levels: the least source change a track's flicker is divided by
MIN_RESPONSE = 0.3  # phase correlation peak (0..1) under which a pair's shift is not trusted:
# consecutive crops of a face give 0.9 or more, a blank crop against a face about 0
TRACK_FIELDS = ["track", "first", "last", "frames", "frames_restored", "face_size", "motion",
                "flicker"]


def region_mask(size: int) -> np.ndarray:
    """(size, size) float32 weights of the inner face (eyes, nose, mouth) in an aligned crop:
    where a change is a change of the face, not of hair or background."""
    pts = align.template(size)
    mask = np.zeros((size, size), np.float32)
    center = (int(round(pts[:, 0].mean())), int(round(pts[:, 1].mean())))
    axes = (int(round(0.32 * size)), int(round(0.36 * size)))
    cv2.ellipse(mask, center, axes, 0, 0, 360, 1.0, -1)
    return mask


def grey_small(image, size: int = QUALITY_SIZE) -> np.ndarray:
    """An aligned crop as (size, size) float32 grey, from a (S, S, 3) BGR array (uint8 or any
    scale) or a torch tensor on any device ((S, S, 3) or (3, S, S)).

    The area average runs before the channel mean (both are linear: the same grey to float
    rounding), on the crop's own integers where S is a multiple of `size`: a 2048 crop costs
    about 1 ms instead of 85 (bench/RESULTS.md, "The CPU side of a GPU run"). A tensor is
    shrunk on its own device (a GPU run keeps the crops there) and only the small grey crosses
    back."""
    if hasattr(image, "detach"):
        return _grey_small_tensor(image, size)
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[-1] != 3:
        arr = arr.transpose(1, 2, 0)
    if arr.shape[:2] == (size, size):
        arr = arr.astype(np.float32, copy=False)
        return np.ascontiguousarray(arr.mean(axis=2) if arr.ndim == 3 else arr, np.float32)
    if arr.ndim == 3 and arr.shape[0] == arr.shape[1] and arr.shape[0] % size == 0 \
            and arr.dtype in (np.uint8, np.uint16):
        return _block_mean(arr, size)
    arr = cv2.resize(arr.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(arr.mean(axis=2) if arr.ndim == 3 else arr, np.float32)


def _block_mean(image: np.ndarray, size: int) -> np.ndarray:
    """(S, S, C) uint8/uint16 with S a multiple of `size` -> (size, size) float32: the mean of
    each (S/size)-pixel square over all its channels (what INTER_AREA and a channel mean give),
    summed exactly (int32 / float32 row sums below 2**24, then float64)."""
    side, _, channels = image.shape
    k = side // size
    rows = np.ascontiguousarray(image).reshape(side * size, k * channels)  # one block's row each
    depth = cv2.CV_32S if image.dtype == np.uint8 else cv2.CV_32F  # what OpenCV sums fast
    sums = cv2.reduce(rows, 1, cv2.REDUCE_SUM, dtype=depth).astype(np.float64)
    return (sums.reshape(size, k, size).sum(axis=1) / (k * k * channels)).astype(np.float32)


def _grey_small_tensor(image, size: int) -> np.ndarray:
    """grey_small of a (S, S, 3) or (3, S, S) tensor, computed on its device when S is a
    multiple of `size` (torch's area average is INTER_AREA's only there)."""
    import torch

    if image.shape[-2] % size:
        return grey_small(image.detach().cpu().numpy(), size)
    with torch.inference_mode():
        x = image.detach()
        x = x[None, :, :, None] if x.ndim == 2 else x[None]  # (1, S, S, C) or (1, 3, S, S)
        return align.grey_small_torch(x, size)[0].cpu().numpy()


def crop_matrix(face: TrackedFace, size: int = QUALITY_SIZE) -> np.ndarray:
    """(2, 3) frame -> aligned crop of `size` px: the registered transform where the face has
    one (TrackedFace.matrix, for a 512 crop), else the smoothed landmarks' similarity."""
    matrix = getattr(face, "matrix", None)
    if matrix is None:
        return align.face_transform(face.smoothed, size, getattr(face, "aspect", (1.0, 1.0)))
    return np.asarray(matrix, np.float64) * (size / 512.0)


@dataclass
class _TrackFigures:
    """What one track accumulates (private to TrackLedger)."""

    first: float = 0.0  # seconds, first frame written
    last: float = 0.0  # seconds, last frame written
    frames: int = 0
    restored: int = 0
    eyes: list[float] = field(default_factory=list)  # eye distance per frame, pixels
    motion: list[float] = field(default_factory=list)  # in-crop shift per frame pair, eyes
    change_src: float = 0.0  # summed motion-compensated change of the source crops
    change_out: float = 0.0  # the same of the restored crops
    pairs: int = 0  # frame pairs that went into the change sums
    prev_index: int = -2
    prev_src: np.ndarray | None = None  # own QUALITY_SIZE source crop of the previous frame
    prev_pair: tuple[np.ndarray, np.ndarray] | None = None  # (source, restored) of the previous


class TrackLedger:
    """Per-track figures of one run (or segment), shared by SelectStage and QualityStage.

    wanted: track id -> restore this face (None: all). seconds: pts -> seconds.
    """

    def __init__(self, wanted: Callable[[int], bool] | None = None,
                 seconds: Callable[[int], float] = float) -> None:
        self.wanted = wanted
        self.seconds = seconds
        self._aside: dict[int, list[TrackedFace]] = {}  # frame index -> faces left alone
        self._lock = threading.Lock()  # the two stages run on different threads
        self._tracks: dict[int, _TrackFigures] = {}
        self._window = align.hanning((QUALITY_SIZE, QUALITY_SIZE))
        self._region = region_mask(QUALITY_SIZE)

    # -- selection -----------------------------------------------------------------------
    def set_aside(self, frame: Frame) -> None:
        """Keep in frame.faces only the faces to restore; hold the others for put_back."""
        if self.wanted is None:
            return
        kept = [f for f in frame.faces if self.wanted(f.track_id)]
        if len(kept) != len(frame.faces):
            with self._lock:
                self._aside[frame.index] = [f for f in frame.faces if f not in kept]
            frame.faces = kept

    def put_back(self, frame: Frame) -> None:
        """Return the faces set aside to frame.faces (in track id order)."""
        with self._lock:
            aside = self._aside.pop(frame.index, [])
        if aside:
            frame.faces = sorted(frame.faces + aside, key=lambda f: f.track_id)

    # -- measuring -----------------------------------------------------------------------
    def measure(self, frame: Frame) -> None:
        """Add one frame's faces (frame.faces) and restored crops (frame.restored) to the
        figures. Frames not written (frame.emit False) are left out."""
        if not frame.emit or not frame.faces:
            return
        restored = {r.track_id: r for r in frame.restored}
        for face in frame.faces:
            fig = self._tracks.get(face.track_id)
            if fig is None:
                fig = self._tracks[face.track_id] = _TrackFigures(
                    first=self.seconds(frame.pts))
            fig.last = self.seconds(frame.pts)
            fig.frames += 1
            fig.eyes.append(float(np.linalg.norm(face.smoothed[1] - face.smoothed[0])))
            own = grey_small(align.warp(frame.image, crop_matrix(face), QUALITY_SIZE))
            following = fig.prev_index == frame.index - 1
            if following and fig.prev_src is not None:
                shift, response = align.phase_shift(fig.prev_src, own, self._window)
                if response >= MIN_RESPONSE:
                    fig.motion.append(float(np.hypot(*shift)) / TEMPLATE_EYES)
            fig.prev_src, fig.prev_index = own, frame.index
            out = restored.get(face.track_id)
            if out is None or out.weight <= 0:  # left alone, or not pasted: as decoded
                fig.prev_pair = None
                continue
            fig.restored += 1
            pair = out.greys or (grey_small(out.crop), grey_small(out.restored))
            shift, response = (0.0, 0.0), 0.0
            if following and fig.prev_pair is not None:
                shift, response = align.phase_shift(fig.prev_pair[0], pair[0], self._window)
            if response >= MIN_RESPONSE:
                fig.change_src += self._change(fig.prev_pair[0], pair[0], shift)
                fig.change_out += self._change(fig.prev_pair[1], pair[1], shift)
                fig.pairs += 1
            fig.prev_pair = pair

    def _change(self, prev: np.ndarray, cur: np.ndarray, shift: np.ndarray) -> float:
        """Mean absolute change over the inner face, `prev` moved by `shift` (dx, dy) first
        (edges repeated)."""
        moved = align.warp(prev, np.array([[1, 0, shift[0]], [0, 1, shift[1]]], np.float64),
                           prev.shape[::-1], replicate=True)
        diff = np.abs(cur - moved) * self._region
        return float(diff.sum() / self._region.sum())

    def rows(self) -> list[dict]:
        """One dict per track (TRACK_FIELDS), in track id order; flicker None where no two
        consecutive frames were restored."""
        out = []
        for track_id in sorted(self._tracks):
            fig = self._tracks[track_id]
            flicker = None
            if fig.pairs:
                floor = FLICKER_FLOOR * fig.pairs
                flicker = round(fig.change_out / max(fig.change_src, floor), 3)
            out.append({
                "track": track_id, "first": round(fig.first, 3), "last": round(fig.last, 3),
                "frames": fig.frames, "frames_restored": fig.restored,
                "face_size": round(float(np.median(fig.eyes)), 1),
                "motion": round(float(np.mean(fig.motion)), 4) if fig.motion else None,
                "flicker": flicker})
        return out


class SelectStage:
    """Between tracker and restorer: the restorer sees only the faces chosen (ledger.wanted)."""

    name = "select"
    context = 0

    def __init__(self, ledger: TrackLedger) -> None:
        self.ledger = ledger

    def process(self, frame: Frame) -> Iterable[Frame]:
        self.ledger.set_aside(frame)
        return (frame,)

    def flush(self) -> Iterable[Frame]:
        return ()


class QualityStage:
    """Between restorer and compositor: faces set aside come back to frame.faces, and every
    face's figures are added to the ledger. `track_rows()` gives them at the end."""

    name = "quality"
    context = 0

    def __init__(self, ledger: TrackLedger) -> None:
        self.ledger = ledger

    def process(self, frame: Frame) -> Iterable[Frame]:
        self.ledger.put_back(frame)
        self.ledger.measure(frame)
        return (frame,)

    def flush(self) -> Iterable[Frame]:
        return ()

    def track_rows(self) -> list[dict]:
        return self.ledger.rows()


def chooser(faces: Iterable[int] = (), skip: Iterable[int] = ()) -> Callable[[int], bool] | None:
    """The `wanted` test for --faces (restore only these ids) and --skip-faces (leave these
    alone); None when neither is given (every face is restored)."""
    only, skipped = frozenset(faces), frozenset(skip)
    if not only and not skipped:
        return None
    return lambda track_id: (not only or track_id in only) and track_id not in skipped


def format_track_table(rows: list[dict], flicker: bool = True, indent: str = "  ") -> str:
    """The per-track table of the end-of-run summary (and of `gpenvideo track`)."""
    if not rows:
        return f"{indent}no face tracks"
    head = ["track", "from", "to", "frames", "restored", "face px", "motion"]
    if flicker:
        head.append("flicker")
    lines = [head]
    for r in rows:
        line = [str(r["track"]), _clock(r["first"]), _clock(r["last"]), str(r["frames"]),
                str(r.get("frames_restored", "-")), f"{r['face_size']:.0f}",
                "-" if r.get("motion") is None else f"{r['motion']:.3f}"]
        if flicker:
            line.append("-" if r.get("flicker") is None else f"{r['flicker']:.2f}")
        if not flicker:
            line.pop(4)
        lines.append(line)
    if not flicker:
        lines[0].remove("restored")
    widths = [max(len(row[i]) for row in lines) for i in range(len(lines[0]))]
    return "\n".join(indent + "  ".join(c.rjust(w) for c, w in zip(row, widths)).rstrip()
                     for row in lines)


def _clock(seconds: float) -> str:
    """m:ss.s, with a minus sign before zero (a film whose timestamps start below it)."""
    minutes, rest = divmod(round(abs(seconds), 1), 60)
    return f"{'-' if seconds < 0 else ''}{int(minutes)}:{rest:04.1f}"
