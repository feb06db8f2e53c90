"""Landmark stability of the tracker's smoothing on real footage (../shared/media).

jitter: RMS of the second difference of the landmarks over time, in inter-ocular distances
(IOD); what remains after smoothing, relative to the raw detections, is the jitter reduction.
bias: mean distance between smoothed and raw landmarks, in IOD (how far smoothing moves the
points; part of it is the detector noise removed, part is real motion cut off).
Compared: raw detections, a 9-frame Savitzky-Golay filter (quadratic), and ours.
picture motion: the jitter of the picture itself around the eyes and nose, from phase
correlation of consecutive frames (no detector involved): the share of the raw jitter that is
genuine motion of the footage, which no smoother can remove without moving the points.

    python bench/stability.py [--detector yunet|retinaface] [clip ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from scipy.signal import savgol_filter

from gpenvideo.config import DetectConfig, TrackConfig
from gpenvideo.decoder import Decoder
from gpenvideo.detector import Detector, RetinaFaceDetector, YuNetDetector
from gpenvideo.tracker import eye_distance, smooth_path

SHARED = Path(__file__).resolve().parents[2] / "shared"


def raw_track(clip: Path, detector: Detector) -> tuple[np.ndarray, list[np.ndarray]]:
    """(T, 5, 2) landmarks of the largest face in the frames where it was found, and every
    frame in grey (for picture_jitter: the clip is decoded once)."""
    points, greys = [], []
    with Decoder(clip) as dec:
        for frame in dec.frames():
            greys.append(cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY).astype(np.float32))
            dets = detector.detect([frame.image])[0]
            if dets:
                best = max(dets, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
                points.append(best.landmarks)
    return np.asarray(points, np.float64), greys


def picture_jitter(greys: list[np.ndarray], raw: np.ndarray, iod: float) -> float:
    """Jitter (IOD) of the picture's own motion in a fixed window over the eyes and nose."""
    cx, cy = raw[:, :3].mean(axis=(0, 1)).astype(int)
    h = int(0.9 * iod)
    window = cv2.createHanningWindow((2 * h, 2 * h), cv2.CV_32F)
    path, prev = [np.zeros(2)], None
    for grey in greys:
        patch = grey[max(0, cy - h):cy + h, max(0, cx - h):cx + h]
        if prev is not None and patch.shape == prev.shape == window.shape:
            (dx, dy), _ = cv2.phaseCorrelate(prev, patch, window)
            path.append(path[-1] + (dx, dy))
        prev = patch
    return jitter(np.asarray(path)[:, None], iod)


def jitter(points: np.ndarray, iod: float) -> float:
    second = points[2:] - 2 * points[1:-1] + points[:-2]
    return float(np.sqrt((second ** 2).sum(-1).mean()) / iod)


def bias(points: np.ndarray, raw: np.ndarray, iod: float) -> float:
    return float(np.linalg.norm(points - raw, axis=-1).mean() / iod)


def synthetic(seed: int = 0, frames: int = 250, noise: float = 0.025) -> tuple[np.ndarray, ...]:
    """A face template moving, turning and nodding smoothly (truth) plus detector-like noise
    of `noise` IOD per coordinate (raw): shows how far each smoother lands from the truth."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / 25.0
    base = np.array([[-0.5, 0], [0.5, 0], [0, 0.55], [-0.4, 1.05], [0.4, 1.05]]) * 60.0
    x = 200 + 40 * np.sin(2 * np.pi * 0.3 * t) + 15 * np.sin(2 * np.pi * 1.1 * t)
    y = 150 + 20 * np.sin(2 * np.pi * 0.5 * t + 1)
    angle = 0.15 * np.sin(2 * np.pi * 0.4 * t)
    scale = 1 + 0.1 * np.sin(2 * np.pi * 0.2 * t)
    rot = np.stack([np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle)], -1)
    truth = np.einsum("tij,kj->tki", rot.reshape(-1, 2, 2), base) * scale[:, None, None]
    truth += np.stack([x, y], -1)[:, None, :]
    raw = truth + rng.normal(0, noise * 60.0, truth.shape)
    return truth, raw


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--detector", choices=["yunet", "retinaface"], default="yunet")
    ap.add_argument("clips", nargs="*", type=Path)
    args = ap.parse_args()
    clips = args.clips or sorted((SHARED / "media").glob("sadtalker_*.mp4"))
    if args.detector == "yunet":
        detector: Detector = YuNetDetector(SHARED / "weights" / "face_detection_yunet_2026may.onnx",
                                           DetectConfig())
    else:
        detector = RetinaFaceDetector(SHARED / "weights" / "detection_mobilenet0.25_Final.pth",
                                      DetectConfig(backend="retinaface"), "cpu")
    print(f"detector: {args.detector}")
    cfg = TrackConfig()
    print("| clip | smoother | jitter (IOD) | jitter reduction | bias (IOD) |")
    print("| --- | --- | --- | --- | --- |")
    truth, noisy = synthetic()
    for name, pts in {"raw detections": noisy,
                      "Savitzky-Golay 9 (quadratic)": savgol_filter(noisy, 9, 2, axis=0,
                                                                    mode="interp"),
                      "ours": smooth_path(noisy, cfg.smoothing_window, cfg.smoothing_cutoff,
                                          cfg.motion_scale)}.items():
        print(f"| synthetic (error against the truth) | {name} | {jitter(pts, 60.0):.4f} | "
              f"{jitter(noisy, 60.0) / jitter(pts, 60.0):.1f}x | "
              f"{100 * bias(pts, truth, 60.0):.1f}% |")
    for clip in clips:
        raw, greys = raw_track(clip, detector)
        iod = float(np.median([eye_distance(p) for p in raw]))
        candidates = {
            "raw detections": raw,
            "Savitzky-Golay 9 (quadratic)": savgol_filter(raw, 9, 2, axis=0, mode="interp"),
            f"ours (window {cfg.smoothing_window}, cutoff {cfg.smoothing_cutoff}, "
            f"motion_scale {cfg.motion_scale})": smooth_path(
                raw, cfg.smoothing_window, cfg.smoothing_cutoff, cfg.motion_scale),
        }
        base = jitter(raw, iod)
        for name, pts in candidates.items():
            j = jitter(pts, iod)
            print(f"| {clip.stem.replace('sadtalker_WDA_', '')} | {name} | {j:.4f} | "
                  f"{base / j:.1f}x | {100 * bias(pts, raw, iod):.1f}% |", flush=True)
        moving = picture_jitter(greys, raw, iod)
        print(f"| {clip.stem.replace('sadtalker_WDA_', '')} | picture motion (phase correlation, "
              f"{100 * (moving / base) ** 2:.0f}% of the raw jitter power) | {moving:.4f} | "
              f"| |", flush=True)


if __name__ == "__main__":
    main()
