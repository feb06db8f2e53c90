"""End-to-end frames/s of `gpenvideo restore` against a plain PyAV transcode of the same clip
in the same run. GPEN weights are randomly initialised in the released configuration of the
chosen size (the same arithmetic as the real checkpoint); faces are detected with YuNet from
../shared/weights.

    python bench/pipeline.py                      # CPU: sample clip, GPEN-256
    python bench/pipeline.py --device cuda --size 2048 --precision fp16 --hd
        # GPU: generated 1080p clips with one and with four faces

GPU busy time is the share of the wall time spent inside GPEN batches (synchronised).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from io_bench import plain  # noqa: E402
import gpenvideo  # noqa: E402
from gpenvideo.config import RestoreConfig  # noqa: E402
from gpenvideo.models import runner as runner_module  # noqa: E402
from gpenvideo.models.gpen import GPEN  # noqa: E402

from gpen import config, device_name  # noqa: E402  (bench/gpen.py)

SHARED = ROOT.parent / "shared"


def hd_clip(path: Path, faces: int, seconds: float = 4.0) -> Path:
    """1920x1080 25 fps clip with `faces` talking heads (from ../shared/media) on a textured
    background, with audio."""
    import av
    from clips import make_clip

    sources = sorted((SHARED / "media").glob("sadtalker_*.mp4"))
    heads = []
    for src in sources:
        with av.open(str(src)) as c:
            heads.append([f.to_ndarray(format="bgr24") for f in c.decode(video=0)])
    n = int(seconds * 25)
    rng = np.random.default_rng(0)
    background = cv2.resize(rng.integers(0, 255, (68, 120, 3), np.uint8), (1920, 1080))
    side = 480 if faces > 1 else 720
    spots = [(180, 60), (1260, 60), (180, 560), (1260, 560)] if faces > 1 else [(600, 180)]

    def image(i: int) -> np.ndarray:
        img = background.copy()
        for k, (x, y) in enumerate(spots[:faces]):
            frames = heads[k % len(heads)]
            head = cv2.resize(frames[i % len(frames)], (side, side))
            img[y:y + side, x:x + side] = head
        return img

    return make_clip(path, frames=n, size=(1920, 1080), audio=1, image_fn=image)


def timed_runner():
    """Wrap GPENRunner.restore to add up the time spent in GPEN (GPU synchronised)."""
    busy = {"seconds": 0.0}
    original = runner_module.GPENRunner.restore

    def restore(self, crops):
        start = time.perf_counter()
        out = original(self, crops)  # returns numpy: the GPU work is finished
        busy["seconds"] += time.perf_counter() - start
        return out

    runner_module.GPENRunner.restore = restore
    return busy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("clip", nargs="?", type=Path,
                    default=ROOT / "samples" / "grace_hopper_homemovie.mp4")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--hd", action="store_true", help="generated 1080p clips, 1 and 4 faces")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    ckpt = tmp / f"random-gpen-{args.size}.pth"
    torch.save(GPEN(config(args.size)).state_dict(), ckpt)
    cfg = RestoreConfig().replace("model", weights=str(ckpt), device=args.device,
                                  precision=args.precision,
                                  weights_dir=str(SHARED / "weights")).replace(
        "pipeline", progress=False)
    clips = [hd_clip(tmp / "one.mp4", 1), hd_clip(tmp / "four.mp4", 4)] if args.hd else [args.clip]
    busy = timed_runner()
    name = device_name(torch.device(args.device))
    print(f"device: {name}; GPEN-{args.size} {args.precision}; torch {torch.__version__}\n")
    print("| clip | frames | plain transcode fps | restore fps | faces/s | GPEN busy | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for clip in clips:
        t = time.perf_counter()
        n = plain(clip, tmp / "plain.mp4")
        t_plain = time.perf_counter() - t
        busy["seconds"] = 0.0
        t = time.perf_counter()
        summary = gpenvideo.restore_video(clip, tmp / f"out-{clip.stem}.mp4", config=cfg,
                                          overwrite=True)
        t_ours = time.perf_counter() - t
        print(f"| {clip.name} | {n} | {n / t_plain:.1f} | {summary.frames / t_ours:.2f} | "
              f"{summary.faces / t_ours:.2f} | {100 * busy['seconds'] / t_ours:.0f}% | "
              f"{t_plain / t_ours:.3f} |", flush=True)


if __name__ == "__main__":
    main()
