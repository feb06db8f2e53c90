"""CPU cost of the face path per frame: one face pasted into a 1080p frame, crop size 2048 and
512, the compositor of this checkout (OpenCV; and the torch path on the CPU) against a baseline
compositor.py given with --baseline (e.g. `git show REV:gpenvideo/compositor.py > old.py`),
measured in the same run. Prints CPU-ms per frame (thread CPU time) and the machine."""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import time

import numpy as np

from gpenvideo import align
from gpenvideo.compositor import Compositor, blend_patch
from gpenvideo.config import CompositeConfig
from gpenvideo.frames import Frame, RestoredFace, TrackedFace
from gpenvideo.restorer import FacePath

FRAME = (1080, 1920)
FACE_WIDTH = 260  # eye-to-eye about 75 px: a face of a 1080p home movie
STRENGTH = 0.8  # the authors' default for GPEN-2048


def landmarks() -> np.ndarray:
    """(5, 2) landmarks of a face FACE_WIDTH wide in the middle of the frame."""
    pts = align.TEMPLATE_512 - 256
    return (pts * FACE_WIDTH / 300 + (960, 540)).astype(np.float32)


def load_baseline(path: str):
    spec = importlib.util.spec_from_file_location("gpenvideo._baseline_compositor", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cpu_ms(fn, repeat: int) -> float:
    fn()  # warm up
    start = time.thread_time()
    for _ in range(repeat):
        fn()
    return (time.thread_time() - start) / repeat * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--baseline", help="a compositor.py to compare with")
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)  # one stage thread
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*FRAME, 3), np.uint8)
    pts = landmarks()
    cfg = CompositeConfig()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"1080p frame, one face {FACE_WIDTH} px wide, strength {STRENGTH}, colour match on")
    for size in (2048, 512):
        m = align.face_transform(pts, size)
        crop = align.warp(image, m, size, cubic=True, replicate=True)
        restored = np.clip(crop.astype(np.int16) + 20, 0, 255).astype(np.uint8)
        rows = {}
        if args.baseline:
            old = load_baseline(args.baseline).Compositor(cfg, size, STRENGTH)
            rows["baseline (before)"] = lambda: old.paste(image.copy(), m, crop, restored)
        new = Compositor(cfg, size, STRENGTH)
        rows["OpenCV path (after)"] = lambda: new.paste(Frame(0, 0, 1, image.copy()), m, crop,
                                                        restored)
        path = FacePath(cfg, size, STRENGTH, torch.device("cpu"))
        face = TrackedFace(0, np.zeros(4, np.float32), pts, pts, 1.0)
        frame = Frame(0, 0, 1, image)
        tc, tr = torch.from_numpy(crop[None]), torch.from_numpy(restored[None])

        def torch_path():
            (patch,) = path(tc, tr, [None], [(frame, face, m)])
            new_frame = Frame(0, 0, 1, image.copy(),
                              restored=[RestoredFace(0, m, None, None, patch=patch)])
            new.process(new_frame)

        rows["torch path on CPU + blend (after)"] = torch_path
        (ready,) = path(tc, tr, [None], [(frame, face, m)])
        rows["blend of a ready patch (GPU run)"] = lambda: blend_patch(image.copy(), *ready)
        for name, fn in rows.items():
            print(f"crop {size}: {name:36s} {cpu_ms(fn, args.repeat):7.1f} CPU-ms/frame")


if __name__ == "__main__":
    main()
