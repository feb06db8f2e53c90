"""Build samples/grace_hopper_homemovie.mp4: a 6 s 'old home movie' of a real face in motion.

Source picture: Grace Hopper's public-domain US Navy portrait, as shipped in the matplotlib
wheel (mpl-data/sample_data/grace_hopper.jpg). Run: python samples/make_sample.py [path.jpg]
(without a path it is taken from an installed matplotlib). The face moves along a smooth
natural-looking path (slow drift, small nods and a slight turn); each frame is degraded like a
VHS capture: low resolution, blur, noise and grain, a warm colour cast, slight frame wobble,
and heavy compression. A mono tone track is added so that the audio path is exercised.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

OUT = Path(__file__).with_name("grace_hopper_homemovie.mp4")
FPS, SECONDS, SIZE = 25, 6, (320, 240)


def source_image(arg: str | None) -> np.ndarray:
    if arg is None:
        import matplotlib

        arg = str(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    img = cv2.imread(arg)
    if img is None:
        sys.exit(f"cannot read {arg}")
    return img


def frame_at(src: np.ndarray, t: float, rng: np.random.Generator) -> np.ndarray:
    h, w = src.shape[:2]
    angle = 4 * np.sin(2 * np.pi * t / 3.1) + 1.5 * np.sin(2 * np.pi * t / 1.3)
    scale = 0.62 + 0.05 * np.sin(2 * np.pi * t / 5.0)
    cx = w / 2 + 30 * np.sin(2 * np.pi * t / 4.3) + rng.normal(0, 0.6)  # wobble
    cy = h * 0.42 + 12 * np.sin(2 * np.pi * t / 2.2) + rng.normal(0, 0.6)
    m = cv2.getRotationMatrix2D((cx, cy), angle, scale * SIZE[0] / w * 1.6)
    m[:, 2] += (SIZE[0] / 2 - cx, SIZE[1] / 2 - cy)
    img = cv2.warpAffine(src, m, SIZE, flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
    small = cv2.resize(img, (SIZE[0] // 2, SIZE[1] // 2), interpolation=cv2.INTER_AREA)
    img = cv2.resize(small, SIZE, interpolation=cv2.INTER_LINEAR)  # lost resolution
    img = cv2.GaussianBlur(img, (0, 0), 1.0).astype(np.float32)
    img = img * np.array([0.85, 0.97, 1.12]) + np.array([5, 8, 18])  # warm, faded cast
    img += rng.normal(0, 6, img.shape) + rng.normal(0, 4, img.shape[:2])[..., None]  # grain
    return np.clip(img, 0, 255).astype(np.uint8)


def main() -> None:
    src = source_image(sys.argv[1] if len(sys.argv) > 1 else None)
    rng = np.random.default_rng(1994)
    with av.open(str(OUT), "w") as out:
        v = out.add_stream("libx264", rate=FPS, options={"crf": "34", "preset": "slow"})
        v.width, v.height, v.pix_fmt = *SIZE, "yuv420p"
        a = out.add_stream("aac", rate=16000)
        a.codec_context.layout = "mono"
        for i in range(FPS * SECONDS):
            vf = av.VideoFrame.from_ndarray(frame_at(src, i / FPS, rng), format="bgr24")
            out.mux(v.encode(vf))
        out.mux(v.encode(None))
        n = 16000 * SECONDS
        t = np.arange(n) / 16000
        tone = (0.2 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * t))).astype(
            np.float32)
        for start in range(0, n, 1024):
            af = av.AudioFrame.from_ndarray(tone[None, start:start + 1024], format="fltp",
                                            layout="mono")
            af.sample_rate, af.pts, af.time_base = 16000, start, Fraction(1, 16000)
            out.mux(a.encode(af))
        out.mux(a.encode(None))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
