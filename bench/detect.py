"""Face detection speed per frame: YuNet through cv2.FaceDetectorYN one frame at a time (what
the yunet backend does) against OpenCV's DNN fed batches of 1-8 frames (why it does not batch),
and the retinaface backend at batch 1-16 (on CUDA when present, else the CPU; needs facexlib).
With --tracks, the detectors a GPU run could use are compared on generated 1080p clips with one
and four real faces (bench/pipeline.py's hd_clip): ms per frame, and whether the tracks are the
same (track count, faces per frame, landmark distance to the first detector's, in eye distances).

    python bench/detect.py [--frames 32] [--size 1280x720] [--device cuda]
    python bench/detect.py --tracks [--seconds 4]
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

from paths import shared_dir  # bench/paths.py

SHARED = shared_dir()
CLIP = SHARED / "media" / "sadtalker_WDA_KatieHill_000.mp4"
YUNET = SHARED / "weights" / "face_detection_yunet_2026may.onnx"
RETINA = SHARED / "weights" / "detection_mobilenet0.25_Final.pth"
# (label, detect settings) compared by --tracks; the first is the reference
TRACK_CHOICES = [
    ("retinaface mobilenet0.25, cap 1280", dict(backend="retinaface", max_side=1280)),
    ("yunet, cap 1280", dict(backend="yunet", max_side=1280)),
    ("yunet, cap 960", dict(backend="yunet", max_side=960)),
    ("yunet, cap 640", dict(backend="yunet", max_side=640)),
]


def per_frame_ms(fn, frames: list[np.ndarray], batch: int) -> float:
    fn(frames[:batch])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(frames), batch):
        fn(frames[i:i + batch])
    return 1000 * (time.perf_counter() - start) / len(frames)


def compare_tracks(seconds: float, size: tuple[int, int], device: str) -> None:
    """Print, per generated clip and detector choice: ms per frame of the detector alone, the
    tracks found, frames whose face count differs from the reference's and the mean distance of
    the smoothed landmarks to the reference's (inter-ocular distances)."""
    import tempfile

    from gpenvideo.config import RestoreConfig
    from gpenvideo.detector import create_detector
    from gpenvideo.api import track_video
    from pipeline import hd_clip  # bench/pipeline.py

    tmp = Path(tempfile.mkdtemp(prefix="gpenvideo-detect-"))
    print(f"| clip | detector ({device}) | wall ms/frame | CPU ms/frame | tracks | frames with "
          "another face count than the first | landmark distance to the first (IOD) | "
          "to the second (IOD) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for faces in (1, 4):
        clip = hd_clip(tmp / f"{faces}faces.mp4", faces, seconds, size, SHARED)
        with Decoder(clip) as dec:
            frames = [f.image for f in dec.frames()]
        docs: list[dict] = []
        for label, settings in TRACK_CHOICES:
            cfg = RestoreConfig().replace("detect", **settings).replace(
                "model", weights_dir=str(SHARED / "weights"), device=device)
            try:
                det = create_detector(cfg.detect, cfg.model.weights_dir, device)
            except Exception as exc:  # noqa: BLE001 - e.g. facexlib missing: say so, go on
                print(f"| {clip.name} | {label} | not measured: {exc} | | | | | |")
                docs.append({})
                continue
            cpu = time.process_time()
            ms = per_frame_ms(det.detect, frames, det.batch_size)
            cpu_ms = 1000 * (time.process_time() - cpu) / (len(frames) + det.batch_size)
            doc = track_video(clip, config=cfg)
            docs.append(doc)
            tracks = len({x["track"] for f in doc["frames"] for x in f["faces"]})
            diffs = [_difference(ref, doc) if ref else (None, float("nan")) for ref in docs[:2]]
            print(f"| {clip.name} | {label} | {ms:.1f} | {cpu_ms:.1f} | {tracks} | "
                  f"{diffs[0][0]} | {diffs[0][1]:.4f} | "
                  f"{diffs[1][1] if len(diffs) > 1 else float('nan'):.4f} |", flush=True)


def _difference(ref: dict, doc: dict) -> tuple[int, float]:
    """(frames whose face count differs, mean distance of matched faces' smoothed landmarks in
    inter-ocular distances; faces matched by nearest landmark centre)."""
    count, dists = 0, []
    for a, b in zip(ref["frames"], doc["frames"]):
        if len(a["faces"]) != len(b["faces"]):
            count += 1
        for fa in a["faces"]:
            pa = np.array(fa["smoothed"])
            if not b["faces"]:
                continue
            pb = min((np.array(fb["smoothed"]) for fb in b["faces"]),
                     key=lambda p: np.linalg.norm(p.mean(0) - pa.mean(0)))
            iod = max(1e-6, float(np.linalg.norm(pa[0] - pa[1])))
            dists.append(float(np.linalg.norm(pa - pb, axis=1).mean()) / iod)
    return count, float(np.mean(dists)) if dists else float("nan")


def measure_yunet(frames: list[np.ndarray]) -> None:
    """Print YuNet's ms per frame: the backend, then OpenCV's DNN in batches."""
    yunet = YuNetDetector(YUNET, DetectConfig())
    ms = per_frame_ms(yunet.detect, frames, 1)
    print(f"| yunet backend (cv2.FaceDetectorYN) | 1 | {ms:.1f} |")
    net = cv2.dnn.readNet(str(YUNET))
    names = net.getUnconnectedOutLayersNames()

    def dnn(batch):
        net.setInput(cv2.dnn.blobFromImages(batch))
        net.forward(names)

    for b in (1, 2, 4, 8):
        print(f"| YuNet through cv2.dnn, batched | {b} | {per_frame_ms(dnn, frames, b):.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--size", default="1280x720", help="frame size (--tracks: 1920x1080)")
    ap.add_argument("--device", default=None, help="retinaface's device (default: cuda if any)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16],
                    help="retinaface batch sizes")
    ap.add_argument("--tracks", action="store_true", help="compare detectors' tracks at 1080p")
    ap.add_argument("--seconds", type=float, default=4.0, help="--tracks clip length")
    args = ap.parse_args()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.tracks:
        size = (1920, 1080) if args.size == "1280x720" else tuple(map(int, args.size.split("x")))
        compare_tracks(args.seconds, size, device)
        return
    w, h = map(int, args.size.split("x"))
    with Decoder(CLIP) as dec:
        frames = [cv2.resize(f.image, (w, h)) for f, _ in zip(dec.frames(), range(args.frames))]
    print(f"| detector | batch | ms/frame ({w}x{h}) |")
    print("| --- | --- | --- |")
    try:
        measure_yunet(frames)
    except Exception as exc:  # noqa: BLE001 - e.g. an OpenCV too old for this YuNet: go on
        print(f"| yunet (OpenCV {cv2.__version__}) | | failed: {exc} |")
    try:
        import torch

        from gpenvideo.detector import RetinaFaceDetector
        from gpenvideo.errors import InputError

        name = (torch.cuda.get_device_name() if device.startswith("cuda")
                else f"CPU, {torch.get_num_threads()} threads")
        for b in args.batches:
            retina = RetinaFaceDetector(RETINA, DetectConfig(backend="retinaface", batch_size=b),
                                        device)

            def run(batch, retina=retina):
                retina.detect(batch)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()

            print(f"| retinaface mobilenet0.25 ({name}) | {b} | "
                  f"{per_frame_ms(run, frames, b):.1f} |")
    except InputError as exc:
        print(f"(retinaface not measured: {exc})")


if __name__ == "__main__":
    main()
