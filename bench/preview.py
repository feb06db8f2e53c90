"""How long `gpenvideo preview` takes on a long film: a 6-moment contact sheet of a 10-minute
640x480 film, with a GPEN-256 of random weights (the arithmetic of the released checkpoint) and
with the tiny 64-px model, in the same run. The cost should grow with the moments, not the film.

    python bench/preview.py [--minutes 10] [--count 6] [--film /tmp/film.mp4]

The film is made once (the two talking-head clips of ../shared/media, looped on a 640x480
canvas with a cut every 8 s, x264 with a keyframe every 250 frames, as x264 makes by default).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from gpenvideo.config import RestoreConfig
from gpenvideo.models.gpen import GPEN, GPENConfig
from gpenvideo.preview import preview

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CLIPS = ("sadtalker_WDA_KatieHill_000.mp4", "sadtalker_WDA_AlexandriaOcasioCortez_000.mp4")


def make_film(path: Path, minutes: float) -> None:
    pictures = []
    for name in CLIPS:
        with av.open(str(SHARED / "media" / name)) as c:
            pictures.append([cv2.resize(f.to_ndarray(format="bgr24"), (400, 400),
                                        interpolation=cv2.INTER_AREA)
                             for f in c.decode(video=0)])
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        stream.codec_context.gop_size = 250
        stream.codec_context.options = {"preset": "ultrafast"}
        canvas = np.full((480, 640, 3), 90, np.uint8)
        for i in range(int(minutes * 60 * 25)):
            clip = pictures[(i // 200) % 2]
            canvas[40:440, 120:520] = clip[i % 200]
            for packet in stream.encode(av.VideoFrame.from_ndarray(canvas, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def random_gpen256(path: Path) -> None:
    torch.manual_seed(0)
    model = GPEN(GPENConfig(size=256, channel_multiplier=1, narrow=0.5))
    torch.save(model.state_dict(), path)


def calibrate(weights: Path) -> float:
    """ms per face of GPEN-256 at batch 1 now (after a warm-up): how loaded the machine is
    (bench/gpen.py measured 97.7 ms with 2 threads on this machine alone)."""
    from gpenvideo.models import weights as lookup
    from gpenvideo.models.runner import GPENRunner

    runner = GPENRunner(lookup.load_gpen(weights), "cpu", "fp32", 1, True, False)
    crop = np.zeros((1, 256, 256, 3), np.uint8)
    runner.restore(crop)
    start = time.perf_counter()
    for _ in range(5):
        runner.restore(crop)
    return (time.perf_counter() - start) / 5 * 1000


def tiny(path: Path) -> None:
    data = np.load(SHARED / "gpen" / "gpen_tiny64.npz")
    torch.save({k[6:]: torch.from_numpy(data[k]) for k in data.files if k.startswith("param/")},
               path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--count", type=int, default=6)
    ap.add_argument("--film", type=Path, default=Path("/tmp/gpenvideo-bench-film.mp4"))
    args = ap.parse_args()
    if not args.film.exists():
        start = time.monotonic()
        make_film(args.film, args.minutes)
        print(f"made {args.film} in {time.monotonic() - start:.0f} s")
    folder = args.film.parent
    models = {"gpen-256 (random weights)": folder / "gpen256-random.pth",
              "tiny 64 px": folder / "gpen-tiny64.pth"}
    random_gpen256(models["gpen-256 (random weights)"])
    tiny(models["tiny 64 px"])
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads; "
          f"{args.film.name}, {args.count} moments")
    before = calibrate(models["gpen-256 (random weights)"])
    rows = []
    for name, weights in models.items():
        cfg = RestoreConfig().replace("model", weights=str(weights),
                                      weights_dir=str(SHARED / "weights"))
        result = preview(args.film, folder / f"bench-preview-{weights.stem}.png", cfg,
                         count=args.count, overwrite=True)
        faces = sum(len(m.faces) for m in result.moments)
        rows.append((name, result, faces))
    after = calibrate(models["gpen-256 (random weights)"])
    print(f"GPEN-256 alone in this run: {before:.0f} and {after:.0f} ms/face (before and after "
          "the previews)")
    print("| model | sheet, s (model load included) | windows | frames decoded | faces | "
          "estimate of a full restore |")
    print("|---|---|---|---|---|---|")
    for name, result, faces in rows:
        print(f"| {name} | {result.seconds:.1f} | {result.windows} | {result.decoded} | "
              f"{faces} | {result.estimate / 60:.0f} min |")


if __name__ == "__main__":
    main()
