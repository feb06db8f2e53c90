"""Stability of the aligned face crops and of the tracker's landmarks on real footage
(../shared/media) and on a synthetic clip with a known path.

in-crop motion (always): the RMS shift between consecutive aligned crops over the brows, eyes
and nose (phase correlation, template eye distances) for crops from the raw landmarks, a
9-frame Savitzky-Golay filter of them, the tracker's smoother alone and the full alignment
(smoother + crop registration), and the registration's cost per face.

With --landmarks, also the landmark table:
jitter: RMS of the second difference of the landmarks over time, in inter-ocular distances
(IOD); what remains after smoothing, relative to the raw detections, is the jitter reduction.
bias: mean distance between smoothed and raw landmarks, in IOD (how far smoothing moves the
points; part of it is the detector noise removed, part is real motion cut off).
Compared: raw detections, a 9-frame Savitzky-Golay filter (quadratic), and ours.
picture motion: the jitter of the picture itself around the eyes and nose, from phase
correlation of consecutive frames (no detector involved): the share of the raw jitter that is
genuine motion of the footage, which no smoother can remove without moving the points.

    python bench/stability.py [--detector yunet|retinaface] [--landmarks] [clip ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from scipy.signal import savgol_filter

from gpenvideo import align
from gpenvideo.config import DetectConfig, RegisterConfig, TrackConfig
from gpenvideo.decoder import Decoder
from gpenvideo.detector import Detector, RetinaFaceDetector, YuNetDetector
from gpenvideo.frames import Frame
from gpenvideo.pipeline import run_chain
from gpenvideo.register import TEMPLATE_EYE_DISTANCE, Registrar, crop_motion
from gpenvideo.restorer import DetectStage
from gpenvideo.tracker import Tracker, eye_distance, smooth_path

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


def alignments(frames: list[Frame], register: RegisterConfig) -> tuple[dict, float]:
    """Frame -> 512 crop matrices of the clip's main face track, four ways: raw landmarks,
    Savitzky-Golay 9 of them, the tracker's smoother alone and the full alignment (tracker +
    registration); and the registration's cost in ms per face."""
    import time

    tracker, registrar = Tracker(TrackConfig()), Registrar(register)
    tracked = list(run_chain(frames, [tracker]))
    started = time.perf_counter()
    done = list(run_chain(tracked, [registrar]))
    cost = 1000 * (time.perf_counter() - started) / max(1, sum(len(f.faces) for f in done))
    ids = [f.track_id for fr in done for f in fr.faces]
    main = max(set(ids), key=ids.count)
    faces = [next((f for f in fr.faces if f.track_id == main), None) for fr in done]
    raw = np.array([np.full((5, 2), np.nan) if f is None or f.raw is None else f.raw
                    for f in faces], np.float64)
    known = ~np.isnan(raw[:, 0, 0])
    t = np.arange(len(raw))
    flat = raw.reshape(len(raw), 10)
    for k in range(10):  # fill the frames without a detection by interpolation
        flat[:, k] = np.interp(t, t[known], flat[known, k])
    sg = savgol_filter(raw, 9, 2, axis=0, mode="interp")

    def of(points):
        return [None if f is None else align.face_transform(p, 512) for f, p in zip(faces, points)]

    return {"raw landmarks": of(raw), "Savitzky-Golay 9": of(sg),
            "landmark smoother alone": of([None if f is None else f.smoothed for f in faces]),
            "full alignment (smoother + registration)": [None if f is None else f.matrix
                                                         for f in faces]}, cost


def synthetic_clip(seed: int = 0, frames: int = 200, size: int = 320) -> tuple[list, list]:
    """A textured face moving, turning and nodding on a known path (like `synthetic`) with
    detector-like landmarks: white noise of 0.02 eye distances plus a slow wander of 0.03 (the
    low-frequency error no landmark filter removes). Returns the frames (with detections) and
    the true frame -> 512 crop matrices."""
    from gpenvideo.frames import Detection

    rng = np.random.default_rng(seed)
    tex = sum(cv2.resize(rng.random((n, n)).astype(np.float32), (512, 512),
                         interpolation=cv2.INTER_CUBIC) / (1 + i)
              for i, n in enumerate((8, 32, 128)))
    tex = cv2.normalize(tex, None, 30, 225, cv2.NORM_MINMAX)
    for x, y in align.TEMPLATE_512[:3]:
        cv2.circle(tex, (int(x), int(y)), 14, 20.0, -1)
    tex = cv2.cvtColor(tex.astype(np.uint8), cv2.COLOR_GRAY2BGR)
    t = np.arange(frames) / 25.0
    iod = 60.0
    k = iod / TEMPLATE_EYE_DISTANCE
    wander = np.cumsum(rng.normal(0, 1, (frames, 5, 2)), 0)
    wander = savgol_filter(wander, 25, 1, axis=0)
    wander *= 0.03 * iod / wander.std()
    out, truth = [], []
    for i in range(frames):
        a = 0.12 * np.sin(2 * np.pi * 0.4 * t[i])
        s = k * (1 + 0.08 * np.sin(2 * np.pi * 0.2 * t[i]))
        c = (size / 2 + 30 * np.sin(2 * np.pi * 0.3 * t[i]),
             size / 2 + 15 * np.sin(2 * np.pi * 0.5 * t[i]))
        crop_to_frame = cv2.getRotationMatrix2D((256.0, 256.0), np.degrees(a), s)
        crop_to_frame[:, 2] += np.asarray(c) - 256.0
        image = cv2.warpAffine(tex, crop_to_frame, (size, size), flags=cv2.INTER_CUBIC,
                               borderMode=cv2.BORDER_REFLECT)
        lm = align.TEMPLATE_512 @ crop_to_frame[:, :2].T + crop_to_frame[:, 2]
        lm = lm + wander[i] + rng.normal(0, 0.02 * iod, lm.shape)
        box = np.array([lm[:, 0].min() - 20, lm[:, 1].min() - 30, lm[:, 0].max() + 20,
                        lm[:, 1].max() + 20], np.float32)
        det = Detection(box=box, landmarks=lm.astype(np.float32), score=0.9)
        out.append(Frame(index=i, pts=i, duration=1, image=image, detections=[det]))
        truth.append(align.invert(crop_to_frame))
    return out, truth


def decode(clip: Path, detector: Detector) -> list[Frame]:
    """Every frame of `clip` with its detections."""
    with Decoder(clip) as dec:
        return list(run_chain(dec.frames(), [DetectStage(detector)]))


def crop_motion_table(clips: list[Path], detector: Detector) -> None:
    """The in-crop residual motion table (and the registration's cost)."""
    register = RegisterConfig()
    print("| clip | alignment | in-crop motion (eye distances) | vs Savitzky-Golay 9 | "
          "pairs left out |")
    print("| --- | --- | --- | --- | --- |")
    frames, truth = synthetic_clip()
    runs = [("synthetic (known path)", frames)] + [
        (c.stem.replace("sadtalker_WDA_", ""), decode(c, detector)) for c in clips]
    costs = []
    for name, frames in runs:
        images = [f.image for f in frames]
        found, cost = alignments(frames, register)
        costs.append(cost)
        if name.startswith("synthetic"):
            found["true path"] = truth
        ref, _ = crop_motion(images, found["Savitzky-Golay 9"])
        for label, matrices in found.items():
            motion, left_out = crop_motion(images, matrices)
            print(f"| {name} | {label} | {motion:.4f} | {motion / ref:.2f}x | {left_out} |",
                  flush=True)
    print(f"\nregistration: {np.mean(costs):.2f} ms per face (patch at {register.size} px, "
          f"window {register.window})")
    image = frames[0].image
    m = found["full alignment (smoother + registration)"][0]
    for size in (256, 2048):
        import time

        started = time.perf_counter()
        for _ in range(5):
            align.warp(image, m * (size / 512), size, cubic=True)
        print(f"for scale: cutting the {size}-px model crop: "
              f"{1000 * (time.perf_counter() - started) / 5:.2f} ms per face")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--detector", choices=["yunet", "retinaface"], default="yunet")
    ap.add_argument("--landmarks", action="store_true", help="also the landmark jitter table")
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
    crop_motion_table(clips, detector)
    if not args.landmarks:
        return
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
