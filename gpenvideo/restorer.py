"""The detection and restoration stages: faces of many frames gathered into GPU batches.

DetectStage fills `frame.detections`; RestoreStage aligns every tracked face to the model's crop
size with its smoothed landmarks, runs GPEN on the faces of up to `frames_per_batch` frames at
once, and attaches each restored crop with its frame->crop transform to the frame.
"""

from __future__ import annotations

from collections.abc import Iterable
import numpy as np

from . import align
from .detector import Detector, to_uint8
from .frames import Frame, RestoredFace


class DetectStage:
    """Detects faces in batches of `detector.batch_size` frames (holding back up to one batch
    less one), attaching them as `frame.detections`."""

    name = "detect"

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self.batch = max(1, getattr(detector, "batch_size", 1))
        self.lookahead = self.batch - 1
        self._pending: list[Frame] = []

    def process(self, frame: Frame) -> Iterable[Frame]:
        self._pending.append(frame)
        return self._detect() if len(self._pending) >= self.batch else ()

    def flush(self) -> Iterable[Frame]:
        return self._detect()

    def _detect(self) -> list[Frame]:
        frames, self._pending = self._pending, []
        if frames:
            for frame, found in zip(frames, self.detector.detect([f.image for f in frames])):
                frame.detections = found
        return frames


class RestoreStage:
    """restore_fn: (N, S, S, 3) uint8 BGR crops (numpy, or a tensor on warp_device) -> the same
    shape restored, numpy (e.g. GPENRunner.restore). warp_device: a torch device to cut the crops
    on (the GPU the model runs on: each frame is uploaded once and its crops never cross the
    bus before GPEN); None cuts them with OpenCV. parse_fn: restored crops -> (N, S, S) face
    masks (parsing.FaceParser), or None for the compositor's template mask. Results are
    attached as `frame.restored`."""

    name = "restore"

    def __init__(self, restore_fn, size: int, batch_faces: int = 8, warp_device=None,
                 parse_fn=None) -> None:
        self.restore_fn = restore_fn
        self.parse_fn = parse_fn  # restored crops -> (N, S, S) face masks (FaceParser), or None
        self.warp_device = warp_device
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
        jobs, crops = [], []
        for frame in frames:
            frame.restored = []
            faces = frame.faces if frame.emit else []
            if not faces:
                continue
            image8 = to_uint8(frame.image)
            matrices = [align.face_transform(face.smoothed, self.size) for face in faces]
            jobs += [(frame, face.track_id, m) for face, m in zip(faces, matrices)]
            if self.warp_device is None:
                crops += [align.warp(image8, m, self.size, cubic=True, replicate=True)
                          for m in matrices]
            else:
                crops.append(self._warp_on_device(image8, matrices))
        if jobs:
            if self.warp_device is None:
                batch = np.stack(crops)
                batch_np = batch
            else:
                import torch

                batch = torch.cat(crops)
                batch_np = batch.cpu().numpy()  # the compositor blends with the source crop
            restored = self.restore_fn(batch)
            masks = self.parse_fn(restored) if self.parse_fn else [None] * len(jobs)
            for (frame, track_id, m), crop, out, mask in zip(jobs, batch_np, restored, masks):
                frame.restored.append(RestoredFace(track_id, m, crop, out, mask))
            self.faces_done += len(jobs)
        return frames

    def _warp_on_device(self, image8: np.ndarray, matrices: list[np.ndarray]):
        """(F, S, S, 3) uint8 tensor of one frame's crops, cut on warp_device (bicubic, the
        frame's edge pixels repeated beyond it)."""
        import torch

        t = torch.from_numpy(image8).to(self.warp_device, non_blocking=True)
        t = t.permute(2, 0, 1)[None].float()
        out = align.warp_torch(t, np.stack(matrices), self.size, cubic=True, replicate=True)
        return out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
