"""Face detection speed per frame: YuNet through cv2.FaceDetectorYN one frame at a time (what
the yunet backend does) against OpenCV's DNN fed batches of 1-8 frames (why it does not batch),
and the retinaface backend at batch 1-16 (on CUDA when present, else the CPU; needs facexlib).

    python bench/detect.py [--frames 32] [--size 1280x720]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from gpenvideo.config import DetectConfig
from gpenvideo.media import Decoder
from gpenvideo.detector import YuNetDetector

SHARED = Path(__file__).resolve().parents[2] / "shared"
CLIP = SHARED / "media" / "sadtalker_WDA_KatieHill_000.mp4"
YUNET = SHARED / "weights" / "face_detection_yunet_2026may.onnx"
RETINA = SHARED / "weights" / "detection_mobilenet0.25_Final.pth"


def per_frame_ms(fn, frames: list[np.ndarray], batch: int) -> float:
    fn(frames[:batch])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(frames), batch):
        fn(frames[i:i + batch])
    return 1000 * (time.perf_counter() - start) / len(frames)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--size", default="1280x720")
    args = ap.parse_args()
    w, h = map(int, args.size.split("x"))
    with Decoder(CLIP) as dec:
        frames = [cv2.resize(f.image, (w, h)) for f, _ in zip(dec.frames(), range(args.frames))]
    print(f"| detector | batch | ms/frame ({w}x{h}) |")
    print("| --- | --- | --- |")
    yunet = YuNetDetector(YUNET, DetectConfig())
    print(f"| yunet backend (cv2.FaceDetectorYN) | 1 | {per_frame_ms(yunet.detect, frames, 1):.1f} |")
    net = cv2.dnn.readNet(str(YUNET))
    names = net.getUnconnectedOutLayersNames()

    def dnn(batch):
        net.setInput(cv2.dnn.blobFromImages(batch))
        net.forward(names)

    for b in (1, 2, 4, 8):
        print(f"| YuNet through cv2.dnn, batched | {b} | {per_frame_ms(dnn, frames, b):.1f} |")
    try:
        import torch

        from gpenvideo.detector import RetinaFaceDetector
        from gpenvideo.errors import InputError

        device = "cuda" if torch.cuda.is_available() else "cpu"
        name = (torch.cuda.get_device_name() if device == "cuda"
                else f"CPU, {torch.get_num_threads()} threads")
        for b in (1, 4, 8, 16):
            retina = RetinaFaceDetector(RETINA, DetectConfig(backend="retinaface", batch_size=b),
                                        device)

            def run(batch, retina=retina):
                retina.detect(batch)
                if device == "cuda":
                    torch.cuda.synchronize()

            print(f"| retinaface mobilenet0.25 ({name}) | {b} | "
                  f"{per_frame_ms(run, frames, b):.1f} |")
    except InputError as exc:
        print(f"(retinaface not measured: {exc})")

if __name__ == "__main__":
    main()
