"""Face detectors behind one protocol: a batch of BGR frames in, per frame a list of
Detections (box, 5 landmarks in the package order, score) out, in frame pixel coordinates.

yunet (default): OpenCV's FaceDetectorYN, CPU, no extra dependency.
retinaface: facexlib's RetinaFace (mobilenet0.25 or resnet50), batched on the GPU; imported only
when chosen, and needs the `retinaface` extra (facexlib, torchvision).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from .config import DetectConfig
from .errors import InputError, WeightsError
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


def _keep(dets: list[Detection], cfg: DetectConfig) -> list[Detection]:
    out = []
    for d in dets:
        w, h = d.box[2] - d.box[0], d.box[3] - d.box[1]
        if d.score >= cfg.score_threshold and min(w, h) >= cfg.min_face_size:
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
        try:
            self._net = cv2.FaceDetectorYN.create(str(model), "", (320, 320),
                                                  cfg.score_threshold, cfg.nms_threshold, 500)
        except cv2.error as exc:
            raise WeightsError(f"{model}: OpenCV cannot load this YuNet model ({exc}); "
                               "run `gpenvideo weights fetch yunet --force`") from exc
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
    """facexlib RetinaFace, batched on `device`. model_dir: folder holding its .pth file."""

    def __init__(self, model_dir: str | Path, cfg: DetectConfig, device: str) -> None:
        try:
            from facexlib.detection import init_detection_model
        except ImportError as exc:
            raise InputError(
                "the retinaface detector needs facexlib and torchvision: "
                "pip install 'gpenvideo[retinaface]' (or use --detector yunet)") from exc
        name = {"mobilenet0.25": "retinaface_mobile0.25",
                "resnet50": "retinaface_resnet50"}[cfg.retinaface_model]
        self.cfg = cfg
        self.batch_size = cfg.batch_size or (8 if str(device).startswith("cuda") else 1)
        self._net = init_detection_model(name, half=False, device=device,
                                         model_rootpath=str(model_dir))

    def detect(self, images: list[np.ndarray]) -> list[list[Detection]]:
        import torch

        smalls, scales = zip(*(_downscale(to_uint8(i), self.cfg.max_side) for i in images))
        out: list[list[Detection]] = []
        same = len({s.shape for s in smalls}) == 1
        with torch.inference_mode():
            if same:
                batch = np.stack(smalls)
                boxes, lms = self._net.batched_detect_faces(
                    batch, conf_threshold=self.cfg.score_threshold,
                    nms_threshold=self.cfg.nms_threshold)
                results = [np.concatenate([b, lm], axis=1) if len(b) else np.zeros((0, 15))
                           for b, lm in zip(boxes, lms)]
            else:
                results = [self._net.detect_faces(s, self.cfg.score_threshold) for s in smalls]
        for rows, scale in zip(results, scales):
            dets = []
            for row in np.asarray(rows, np.float32):
                box = row[:4] / scale
                lm = row[5:15].reshape(5, 2) / scale  # left eye, right eye, nose, mouth l, r
                dets.append(Detection(box=box, landmarks=lm.astype(np.float32),
                                      score=float(row[4])))
            out.append(_keep(dets, self.cfg))
        return out


def create_detector(cfg: DetectConfig, weights_dir: str | None, device: str = "cpu") -> Detector:
    """The configured detector, its model file found through the weights lookup."""
    from .models import weights

    if cfg.backend == "yunet":
        return YuNetDetector(weights.find("yunet", weights_dir), cfg)
    key = f"retinaface-{cfg.retinaface_model}"
    return RetinaFaceDetector(weights.find(key, weights_dir).parent, cfg, device)
