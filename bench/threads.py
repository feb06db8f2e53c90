"""Restore frames/s with torch's default OpenMP settings ("before") against gpenvideo's thread
settings ("after": passive OpenMP waiting, threads from the cores; gpenvideo/threads.py), for the
small test model and GPEN-256 / GPEN-512 (random weights of the released shapes), restoring the
sample clip alone, beside busy processes, and as several restores at once. Before and after run
in the same invocation, interleaved, so their ratio holds on a machine shared with other jobs.

    python bench/threads.py                              # tiny and 256, every scenario
    python bench/threads.py --models 512 --frames 12 --scenarios alone busy2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # bench scripts are run from a checkout
sys.path.insert(0, str(ROOT / "tests"))

from gpen import config

SAMPLE = ROOT / "samples" / "grace_hopper_homemovie.mp4"
# "before": torch's defaults (empty values are ignored by OpenMP and MKL and keep gpenvideo's
# defaults out); "after": what gpenvideo sets itself
SETTINGS = {"before": {"OMP_WAIT_POLICY": "", "OMP_DYNAMIC": "", "MKL_DYNAMIC": "",
                       "KMP_BLOCKTIME": ""},
            "after": {}}
SCENARIOS = {"alone": (1, 0), "busy2": (1, 2), "two": (2, 0), "three": (3, 0)}


def checkpoint(model: str, folder: Path) -> Path:
    """The golden tiny checkpoint, or random weights of the released GPEN-256 / 512 shapes."""
    if model == "tiny":
        from conftest import tiny_gpen

        return tiny_gpen(folder)
    from gpenvideo.models.gpen import GPEN

    torch.manual_seed(0)
    path = folder / f"gpen{model}.pth"
    torch.save(GPEN(config(int(model))).state_dict(), path)
    return path


def short_clip(frames: int, folder: Path) -> Path:
    """The sample clip's first `frames` frames, re-encoded (the sample has one keyframe, so a
    stream copy cannot stop early)."""
    out = folder / f"sample{frames}.mp4"
    with av.open(str(SAMPLE)) as src, av.open(str(out), "w") as dst:
        stream = dst.add_stream("libx264", rate=src.streams.video[0].average_rate)
        stream.width, stream.height = src.streams.video[0].width, src.streams.video[0].height
        stream.pix_fmt, stream.options = "yuv420p", {"crf": "12"}
        for i, frame in enumerate(src.decode(video=0)):
            if i == frames:
                break
            dst.mux(stream.encode(frame.reformat(format="yuv420p")))
        dst.mux(stream.encode())
    return out


def restore(clip: Path, ckpt: Path, out: Path, env: dict[str, str]) -> subprocess.Popen:
    weights_dir = Path(os.environ.get("GPENVIDEO_WEIGHTS", "/work/shared/weights"))
    return subprocess.Popen([sys.executable, "-m", "gpenvideo", "restore", str(clip), "-o",
                             str(out), "--weights", str(ckpt), "--weights-dir", str(weights_dir),
                             "--overwrite", "--quiet", "--segment-seconds", "0"], env=env)


def run(clip: Path, ckpt: Path, folder: Path, setting: str, scenario: str,
        limit: float) -> float | None:
    """Mean restore frames/s of the restores running at once (from their manifests); None when
    they did not finish within `limit` seconds (they are killed)."""
    runs, busy = SCENARIOS[scenario]
    env = dict(os.environ, PYTHONPATH=str(ROOT), **SETTINGS[setting])
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    procs: list[subprocess.Popen] = []
    deadline = time.monotonic() + limit
    try:
        outs = [folder / f"{setting}-{scenario}-{i}.mp4" for i in range(runs)]
        procs = [restore(clip, ckpt, out, env) for out in outs]
        for p in procs:
            try:
                code = p.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                return None
            if code != 0:
                raise SystemExit(f"restore failed ({setting}, {scenario})")
    finally:
        for p in load + procs:
            p.kill()
            p.wait()
    fps = []
    for out in outs:
        summary = json.loads(Path(f"{out}.gpenvideo.json").read_text())["summary"]
        fps.append(summary["frames"] / summary["seconds"])
    return sum(fps) / len(fps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["tiny", "256"], help="tiny, 256, 512")
    ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    ap.add_argument("--frames", type=int, default=50, help="frames of the sample clip restored")
    ap.add_argument("--limit", type=float, default=600,
                    help="seconds a scenario may take before it is killed and reported unfinished")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="gpenvideo-threads-") as tmp:
        folder = Path(tmp)
        clip = short_clip(args.frames, folder)
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start; "
              "restore frames/s per run (mean of the runs at once)")
        print("| model | scenario | before | after | after / before |")
        print("|---|---|---|---|---|")
        for model in args.models:
            ckpt = checkpoint(model, folder)
            alone: dict[str, float | None] = {}
            for scenario in args.scenarios:
                fps = {s: run(clip, ckpt, folder, s, scenario, args.limit)
                       for s in ("before", "after")}
                if scenario == "alone":
                    alone = fps
                cells = [f"{fps[s]:.2f}" if fps[s] else f"unfinished in {args.limit:.0f} s"
                         for s in ("before", "after")]
                ratio = f"{fps['after'] / fps['before']:.2f}" if all(fps.values()) else "-"
                slow = "".join(f" ({s} {alone[s] / fps[s]:.2f}x slower than alone)"
                               for s in fps if alone.get(s) and fps[s] and scenario != "alone")
                print(f"| {model} | {scenario} | {cells[0]} | {cells[1]} | {ratio} |{slow}",
                      flush=True)
        print(f"load average {os.getloadavg()[0]:.1f} at the end ({time.strftime('%H:%M')})")


if __name__ == "__main__":
    main()
