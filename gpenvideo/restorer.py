"""The detection and restoration stages: faces of many frames gathered into GPU batches.

DetectStage fills `frame.detections`; RestoreStage aligns every tracked face to the model's crop
size with its smoothed landmarks, runs GPEN on the faces of up to `frames_per_batch` frames at
once, and attaches each restored crop with its frame->crop transform to the frame.
"""

from __future__ import annotations

from collections.abc import Iterable
import numpy as np

from . import align
from .detector import Detector
from .frames import Frame, RestoredFace


class DetectStage:
    name = "detect"
    lookahead = 0

    def __init__(self, detector: Detector) -> None:
        self.detector = detector

    def process(self, frame: Frame) -> Iterable[Frame]:
        frame.detections = self.detector.detect([frame.image])[0]
        return (frame,)

    def flush(self) -> Iterable[Frame]:
        return ()


class RestoreStage:
    """restore_fn: (N, S, S, 3) uint8 BGR crops -> same shape restored (e.g. GPENRunner.restore).
    Results are attached as `frame.restored` (a list of RestoredFace)."""

    name = "restore"

    def __init__(self, restore_fn, size: int, batch_faces: int = 8) -> None:
        self.restore_fn = restore_fn
        self.size = size
        self.batch_faces = max(1, batch_faces)
        self.lookahead = 4 * self.batch_faces
        self._pending: list[Frame] = []
        self._faces = 0
        self.faces_done = 0

    def process(self, frame: Frame) -> Iterable[Frame]:
        self._pending.append(frame)
        self._faces += len(frame.faces)
        if self._faces >= self.batch_faces or len(self._pending) >= self.lookahead:
            return self._run()
        return ()

    def flush(self) -> Iterable[Frame]:
        return self._run()

    def _run(self) -> list[Frame]:
        frames, self._pending, self._faces = self._pending, [], 0
        jobs = []
        for frame in frames:
            frame.restored = []
            image8 = frame.image if frame.image.dtype == np.uint8 else \
                (frame.image >> 8).astype(np.uint8)
            for face in frame.faces if frame.emit else ():
                m = align.face_transform(face.smoothed, self.size)
                jobs.append((frame, face.track_id, m, align.warp(image8, m, self.size, cubic=True)))
        if jobs:
            restored = self.restore_fn(np.stack([j[3] for j in jobs]))
            for (frame, track_id, m, crop), out in zip(jobs, restored):
                frame.restored.append(RestoredFace(track_id, m, crop, out))
            self.faces_done += len(jobs)
        return frames
