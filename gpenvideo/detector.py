"""Face detectors behind one protocol: a batch of BGR frames in, per frame a list of
Detections (box, 5 landmarks in the package order, score) out, in frame pixel coordinates.

yunet (default): OpenCV's FaceDetectorYN, CPU, no extra dependency.
retinaface: facexlib's RetinaFace (mobilenet0.25 or resnet50), batched on the GPU (or the CPU);
imported only when chosen, and needs the `retinaface` extra (facexlib; torchvision is not used).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from .config import DetectConfig
from .errors import WeightsError
from .frames import Detection


class Detector(Protocol):
    batch_size: int  # frames per call that run fastest

    def detect(self, images: list[np.ndarray]) -> list[list[Detection]]:
        """images: (H, W, 3) BGR uint8 or uint16. Returns one list of Detections per image."""
        ...


def to_uint8(image: np.ndarray) -> np.ndarray:
    return image if image.dtype == np.uint8 else (image >> 8).astype(np.uint8)


def _downscale(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """The image shrunk so its long side is at most max_side, and the factor used."""
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        image = cv2.resize(image, (round(w * scale), round(h * scale)),
                           interpolation=cv2.INTER_AREA)
    return image, scale


# Default score thresholds. RetinaFace's softmax scores sit far higher than YuNet's: real faces
# down to 28 px wide score >= 0.97 on the sample footage, its false positives (the badge on
# the sample clip's cap) up to 0.78, which a YuNet-style 0.6 would track and restore.
SCORE_THRESHOLDS = {"yunet": 0.6, "retinaface": 0.9}


def score_threshold(cfg: DetectConfig) -> float:
    """--score-threshold, or the backend's default."""
    if cfg.score_threshold is not None:
        return cfg.score_threshold
    return SCORE_THRESHOLDS[cfg.backend]


def _keep(dets: list[Detection], cfg: DetectConfig) -> list[Detection]:
    out = []
    threshold = score_threshold(cfg)
    for d in dets:
        w, h = d.box[2] - d.box[0], d.box[3] - d.box[1]
        if d.score >= threshold and min(w, h) >= cfg.min_face_size:
            out.append(d)
    return out


class YuNetDetector:
    """OpenCV YuNet. model: path of face_detection_yunet_*.onnx.

    Frames are detected one at a time: OpenCV's DNN runs a batch slower per frame than single
    frames (measured at 1280x720 on 2 cores: 21 ms at 1, 32 ms at 4, 56 ms at 8 per frame), and
    it already spreads one frame over all cores."""

    def __init__(self, model: str | Path, cfg: DetectConfig) -> None:
        self.cfg = cfg
        self.batch_size = cfg.batch_size or 1
        # OpenCV 5 warns on stderr, on every run, that its new graph engine ignores the
        # preferred target (the CPU here anyway): keep its log to errors while the net is made
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        try:
            self._net = cv2.FaceDetectorYN.create(str(model), "", (320, 320),
                                                  score_threshold(cfg), cfg.nms_threshold, 500)
        except cv2.error as exc:
            raise WeightsError(f"{model}: OpenCV cannot load this YuNet model ({exc}); "
                               "run `gpenvideo weights fetch yunet --force`") from exc
        finally:
            cv2.utils.logging.setLogLevel(level)
        self._size: tuple[int, int] | None = None

    def detect(self, images: list[np.ndarray]) -> list[list[Detection]]:
        return [self._detect_one(img) for img in images]

    def _detect_one(self, image: np.ndarray) -> list[Detection]:
        small, scale = _downscale(to_uint8(image), self.cfg.max_side)
        size = (small.shape[1], small.shape[0])
        if size != self._size:
            self._net.setInputSize(size)
            self._size = size
        _, rows = self._net.detect(np.ascontiguousarray(small))
        dets = []
        for row in rows if rows is not None else ():
            x, y, w, h = row[:4] / scale
            # YuNet gives the image-left eye first, as the package does
            landmarks = (row[4:14].reshape(5, 2) / scale).astype(np.float32)
            box = np.array([x, y, x + w, y + h], np.float32)
            dets.append(Detection(box=box, landmarks=landmarks, score=float(row[14])))
        return _keep(dets, self.cfg)


class RetinaFaceDetector:
    """facexlib's RetinaFace (mobilenet0.25 or resnet50), batched on `device`.
    checkpoint: its detection_*_Final.pth file. Needs facexlib, not torchvision."""

    def __init__(self, checkpoint: str | Path, cfg: DetectConfig, device: str) -> None:
        from .models.retinaface import load_retinaface

        self.cfg = cfg
        self.batch_size = cfg.batch_size or (8 if str(device).startswith("cuda") else 1)
        self._net = load_retinaface(checkpoint, cfg.retinaface_model, device)

    def detect(self, images: list[np.ndarray]) -> list[list[Detection]]:
        from .models.retinaface import detect_batch

        smalls, scales = zip(*(_downscale(to_uint8(i), self.cfg.max_side) for i in images))
        results = detect_batch(self._net, list(smalls), score_threshold(self.cfg),
                               self.cfg.nms_threshold)
        out: list[list[Detection]] = []
        for rows, scale in zip(results, scales):
            dets = []
            for row in rows:
                # landmarks: image-left eye, image-right eye, nose, mouth left, right (as ours)
                dets.append(Detection(box=row[:4] / scale,
                                      landmarks=(row[5:15].reshape(5, 2) / scale),
                                      score=float(row[4])))
            out.append(_keep(dets, self.cfg))
        return out


def weights_name(cfg: DetectConfig) -> str:
    """The name of the configured detector's model file in the weights list."""
    return "yunet" if cfg.backend == "yunet" else f"retinaface-{cfg.retinaface_model}"


def create_detector(cfg: DetectConfig, weights_dir: str | None, device: str = "cpu") -> Detector:
    """The configured detector, its model file found through the weights lookup. device: auto,
    cpu, cuda or cuda:N, for retinaface (yunet runs on the CPU, and torch is not imported)."""
    from .models import weights

    path = weights.find(weights_name(cfg), weights_dir)
    if cfg.backend == "yunet":
        return YuNetDetector(path, cfg)
    from .models.runner import resolve_device

    return RetinaFaceDetector(path, cfg, str(resolve_device(device)))
