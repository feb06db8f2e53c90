"""End-to-end frames/s of `gpenvideo restore`, CPU time per frame of every pipeline thread, and
the GPU's busy share. GPEN weights are randomly initialised in the released configuration of the
chosen size (the same arithmetic as the real checkpoint); faces are detected from the shared
weights folder (bench/paths.py: $GPENVIDEO_SHARED, ./shared or ../shared).

    python bench/pipeline.py                      # CPU: sample clip, GPEN-256
    python bench/pipeline.py --hd --passthrough --size 2048 --strength 0.8 --face-path both
        # the CPU side of a GPU run: everything but GPEN, 1080p, one and four faces
    python bench/pipeline.py --device cuda --size 2048 --precision fp16 --hd \\
        --codecs libx264 h264_nvenc                # GPU: end to end at 1080p

--passthrough replaces GPEN by a runner that hands back its input crop at the model's size
(the stages are built by api.restore_recipe as in a real run; only the network is
left out), so the table shows what the rest of the pipeline costs and which thread would hold a
GPU back. CPU ms/frame is each thread's own CPU time (time.thread_time) over the frames written;
"pools" is the rest of the process (FFmpeg's codec threads, OpenMP/OpenCV worker threads).
GPEN busy is the share of the wall time inside the network's batches (synchronised on CUDA);
GPU util is NVML's mean utilisation while the film ran (CUDA only).

--face-path torch on the CPU runs the restorer as a GPU run does (crops, GPEN's output, the face
path and the quality stage's shrink on the torch device; the compositor only blends patches),
with the CPU standing in for the GPU, so that work lands on the stage threads. Each such row is
followed by a "torch, less GPU work" row: every thread's CPU time less its share of the calls
that a GPU run leaves to the GPU (DeviceClock), i.e. what a GPU run keeps on the CPU threads.
With --passthrough, torch and OpenCV get one thread (--threads 1), so each stage's work is
counted on its own thread and not in "pools".
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import math
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from io_bench import plain  # noqa: E402
from gpenvideo import align, api, engine, quality, restorer, segments  # noqa: E402
from gpenvideo.compositor import Compositor  # noqa: E402
from gpenvideo.config import RestoreConfig  # noqa: E402
from gpenvideo.errors import GpenVideoError  # noqa: E402
from gpenvideo.models import retinaface as retinaface_module  # noqa: E402
from gpenvideo.models import runner as runner_module  # noqa: E402
from gpenvideo.models import weights as weights_module  # noqa: E402
from gpenvideo.models.gpen import GPEN, GPENConfig  # noqa: E402
from gpenvideo.models.runner import resolve_device, resolve_precision  # noqa: E402

from gpen import config, device_name  # noqa: E402  (bench/gpen.py)
from paths import shared_dir  # noqa: E402  (bench/paths.py)

# Where each pasted face sits (top-left corner, side) in a 1920x1080 frame, before its motion.
ONE_FACE = [((600, 180), 720)]
FOUR_FACES = [((180, 60), 480), ((1260, 60), 480), ((180, 560), 480), ((1260, 560), 480)]


def _heads(shared: Path) -> list[list[np.ndarray]]:
    """Real faces: the frames of each talking-head clip, then each photo as a one-frame
    'clip', cropped square around its face. Raises FileNotFoundError when none is there."""
    import av

    heads = []
    for src in sorted((shared / "media").glob("sadtalker_*.mp4")):
        with av.open(str(src)) as c:
            heads.append([f.to_ndarray(format="bgr24") for f in c.decode(video=0)])
    for name in ("astronaut.png", "grace_hopper.jpg"):
        img = cv2.imread(str(shared / "media" / name))
        if img is not None:
            side = min(img.shape[:2])
            heads.append([img[:side, (img.shape[1] - side) // 2:][:, :side]])
    if not heads:
        raise FileNotFoundError(f"{shared / 'media'}: no talking-head clips or photos; "
                                "set GPENVIDEO_SHARED to the shared folder")
    return heads


def hd_clip(path: Path, faces: int, seconds: float = 4.0, size: tuple[int, int] = (1920, 1080),
            shared: Path | None = None) -> Path:
    """A 25 fps clip of `size` (default 1920x1080) with `faces` real faces (1 or 4; from the
    shared media: the two talking-head clips and the two photos) on a textured background,
    each drifting slowly (up to 4% of the frame) so the tracker has motion to follow; with
    audio. Written with libx264."""
    from clips import make_clip

    heads = _heads(shared or shared_dir())
    w, h = size
    k = w / 1920
    rng = np.random.default_rng(0)
    background = cv2.resize(rng.integers(0, 255, (68, 120, 3), np.uint8), (w, h))
    spots = ONE_FACE if faces == 1 else FOUR_FACES[:faces]
    heads_used = [heads[(0 if faces == 1 else i) % len(heads)] for i in range(len(spots))]

    def image(i: int) -> np.ndarray:
        img = background.copy()
        for j, (((x, y), side), frames) in enumerate(zip(spots, heads_used)):
            side = max(8, round(side * k))
            dx = 0.04 * w * math.sin(2 * math.pi * i / 90 + j) / 2
            dy = 0.02 * h * math.cos(2 * math.pi * i / 70 + j)
            x0 = int(np.clip(round(x * k + dx), 0, w - side))
            y0 = int(np.clip(round(y * k + dy), 0, h - side))
            img[y0:y0 + side, x0:x0 + side] = cv2.resize(frames[i % len(frames)], (side, side),
                                                         interpolation=cv2.INTER_AREA)
        return img

    return make_clip(path, frames=max(2, int(seconds * 25)), size=size, audio=1, image_fn=image)


class PassThroughRunner(runner_module.GPENRunner):
    """A GPENRunner without a network: every batch comes back as it went in (on the runner's
    device, float32, the runner's own conversions and transfers included), at the model's
    size. Stands in for GPEN so the rest of the pipeline is measured alone."""

    def __init__(self, model, device="cpu", precision="auto", batch_size=0,
                 channels_last=True, compile=False) -> None:  # noqa: A002 - GPENRunner's name
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.dtype = resolve_precision(precision, self.device)
        self.size = model.cfg.size
        self.channels_last = False
        self.model = None
        self.forward = lambda x: x
        self.batch_size = batch_size or 8


@contextlib.contextmanager
def passthrough_models(size: int) -> Iterator[None]:
    """While open, api.restore_recipe builds its stages around a PassThroughRunner
    of GPEN-`size` (the checkpoint is never read)."""
    stub = SimpleNamespace(cfg=config(size))
    with mock.patch.object(runner_module, "GPENRunner", PassThroughRunner), \
            mock.patch.object(weights_module, "load_gpen", lambda *a, **k: stub):
        yield


class ThreadClock:
    """CPU seconds of each pipeline thread (by stage name), taken with time.thread_time inside
    the thread from its start to its end."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        original = engine._Workers.start

        def start(workers, name, fn):
            def timed() -> None:
                t0 = time.thread_time()
                try:
                    fn()
                finally:
                    with self._lock:
                        self.cpu[name] = self.cpu.get(name, 0.0) + time.thread_time() - t0
            original(workers, name, timed)

        with mock.patch.object(engine._Workers, "start", start):
            yield


class GpenClock:
    """Wall seconds inside GPENRunner.run_tensor (synchronised on CUDA) and, on CUDA, NVML's
    GPU utilisation sampled every 0.1 s while open."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = 0.0
        self.samples: list[float] = []
        self._stop = threading.Event()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        original = runner_module.GPENRunner.run_tensor
        clock = self

        def run_tensor(self, x, batch_size=None):
            start = time.perf_counter()
            out = original(self, x, batch_size)
            if out.is_cuda:
                torch.cuda.synchronize(out.device)
            clock.seconds += time.perf_counter() - start
            return out

        sampler = None
        if self.device.type == "cuda":
            sampler = threading.Thread(target=self._sample, daemon=True)
            sampler.start()
        try:
            with mock.patch.object(runner_module.GPENRunner, "run_tensor", run_tensor):
                yield
        finally:
            self._stop.set()
            if sampler is not None:
                sampler.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.samples.append(float(torch.cuda.utilization(self.device)))
            except Exception:  # noqa: BLE001 - NVML missing: no utilisation column
                return

    @property
    def utilisation(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def torch_face_path(factory):
    """The stage factory with the restorer built as api.restore_recipe builds it for CUDA, the
    CPU standing in for the GPU: crops cut with torch, GPEN's (or the pass-through's) output
    left on the device, and the face path (restorer.FacePath: shrink, colour match, blend,
    masks, patch warp, the quality figures' small greys) run there, so the compositor only
    blends the patches. The path a GPU run takes, on the CPU."""
    def wrapped(info):
        stages = factory(info)
        compositor = next(s for s in stages if isinstance(s, Compositor))
        cpu = torch.device("cpu")
        for k, stage in enumerate(stages):
            if isinstance(stage, restorer.RestoreStage) and stage.warp_device is None:
                runner = stage.restore_fn.__self__  # GPENRunner.restore, bound
                stages[k] = restorer.RestoreStage(
                    runner.restore_on_device, stage.size, stage.batch_faces, cpu,
                    stage.parse_fn, compositor.cfg, compositor.strength, quality.QUALITY_SIZE)
        return stages
    return wrapped


class DeviceClock:
    """CPU seconds, per pipeline thread, of the work a GPU run does on the GPU, when the torch
    face path runs on the CPU instead: time.thread_time inside the calls that only queue GPU
    work in a GPU run (cutting the crops, GPEN and its conversions, FacePath.patch, the quality
    figures' shrink of the device crops (align.grey_small_torch), RetinaFace's network and box
    decoding), less the host work nested in them (copying a frame into the upload buffer,
    RetinaFace's NMS). A thread's CPU time less this is what a GPU run leaves on that thread,
    except the launches themselves
    (some tens of microseconds per torch call) and the few torch calls outside these (torch.cat
    of a batch's crops, the patches' copy to the host), which stay counted as CPU work."""

    DEVICE = ((restorer.RestoreStage, "_warp_on_device"), (restorer.FacePath, "patch"),
              (align, "grey_small_torch"),
              (runner_module.GPENRunner, "restore_on_device"),
              (retinaface_module, "_detect_same_size"))
    HOST = ((restorer, "to_device"), (retinaface_module, "nms"))

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    def _device(self, fn, when=lambda *a, **k: True):
        def timed(*args, **kwargs):
            local = self._local
            if getattr(local, "inside", False) or not when(*args, **kwargs):
                return fn(*args, **kwargs)
            local.inside, local.host = True, 0.0
            t0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.thread_time() - t0 - local.host
                local.inside = False
                name = threading.current_thread().name.removeprefix("gpenvideo-")
                with self._lock:
                    self.cpu[name] = self.cpu.get(name, 0.0) + spent
        return timed

    def _host(self, fn):
        def timed(*args, **kwargs):
            if not getattr(self._local, "inside", False):
                return fn(*args, **kwargs)
            t0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self._local.host += time.thread_time() - t0
        return timed

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for owner, attr in self.DEVICE:
                stack.enter_context(mock.patch.object(owner, attr,
                                                      self._device(getattr(owner, attr))))
            stack.enter_context(mock.patch.object(
                quality, "grey_small",
                self._device(quality.grey_small, lambda image, *a, **k: hasattr(image, "detach"))))
            for owner, attr in self.HOST:
                stack.enter_context(mock.patch.object(owner, attr,
                                                      self._host(getattr(owner, attr))))
            yield


# pipeline threads with a column of their own; any other stage's thread is added to "other"
THREADS = ("decode", "detect", "track", "register", "restore", "quality", "composite",
           "encode")


def measure(clip: Path, out: Path, cfg: RestoreConfig, face_path: str = "opencv",
            identity: bool = False) -> dict:
    """Restore `clip` into `out` once (identity: decode and encode only, no stage); return
    frames/s, faces, CPU ms/frame per thread, the part of it that a GPU run does on the GPU
    (device_ms, DeviceClock) and the GPU figures. Raises GpenVideoError (e.g. an encoder this
    machine lacks)."""
    threads, gpen = ThreadClock(), GpenClock(resolve_device(cfg.model.device))
    device = DeviceClock()
    with segments.prepare(clip, out, cfg, overwrite=True) as plan:
        recipe = api.IDENTITY if identity else api.restore_recipe(cfg)
        if face_path == "torch" and recipe.build is not None:
            recipe = dataclasses.replace(recipe, build=torch_face_path(recipe.build))
        with threads.installed(), gpen.installed(), device.installed():
            cpu0, main0, t0 = time.process_time(), time.thread_time(), time.perf_counter()
            summary = segments.execute(plan, recipe)
            wall = time.perf_counter() - t0
        cpu, main = time.process_time() - cpu0, time.thread_time() - main0
    n = max(1, summary.frames)
    per_thread = {name: 1000 * s / n for name, s in threads.cpu.items() if name in THREADS}
    per_thread["other"] = 1000 * sum(s for name, s in threads.cpu.items()
                                     if name not in THREADS) / n
    per_thread["pools"] = 1000 * max(0.0, cpu - main - sum(threads.cpu.values())) / n
    per_thread["total"] = 1000 * cpu / n
    on_device = {name: 1000 * s / n for name, s in device.cpu.items()}
    on_device["total"] = sum(on_device.values())
    return {"frames": summary.frames, "faces": summary.faces, "fps": summary.frames / wall,
            "wall": wall, "cpu_ms": per_thread, "device_ms": on_device,
            "gpen_busy": gpen.seconds / wall,
            "gpu_util": gpen.utilisation}


def less_device(r: dict) -> str:
    """The thread columns (THREADS, then other) of a measure() result less each thread's work
    that a GPU run does on the GPU, as table cells."""
    dev = r["device_ms"]
    cells = [r["cpu_ms"].get(t, 0.0) - dev.get(t, 0.0) for t in THREADS]
    cells.append(r["cpu_ms"].get("other", 0.0) - sum(v for t, v in dev.items()
                                                      if t not in THREADS and t != "total"))
    return " | ".join(f"{c:.1f}" for c in cells)


def random_checkpoint(folder: Path, size: int, tiny: bool = False) -> Path:
    """A GPEN-`size` checkpoint with random weights of the released configuration (tiny: a
    narrow GPEN of that size, a sliver of the arithmetic, for checking the steps)."""
    torch.manual_seed(0)
    path = folder / f"random-gpen-{size}.pth"
    cfg = GPENConfig(size=size, style_dim=32, n_mlp=2, channel_multiplier=1, narrow=1 / 16) \
        if tiny else config(size)
    torch.save(GPEN(cfg).state_dict(), path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("clip", nargs="?", type=Path,
                    default=ROOT / "samples" / "grace_hopper_homemovie.mp4")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=256, help="GPEN model size (crop side)")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--tiny", action="store_true",
                    help="a narrow GPEN of --size (checks the steps, measures nothing real)")
    ap.add_argument("--hd", action="store_true", help="generated clips with 1 and 4 faces")
    ap.add_argument("--hd-size", default="1920x1080", help="frame size of the --hd clips")
    ap.add_argument("--faces", type=int, nargs="+", default=[1, 4], choices=[1, 4],
                    help="which --hd clips: with one face, with four")
    ap.add_argument("--seconds", type=float, default=4.0, help="length of the --hd clips")
    ap.add_argument("--passthrough", action="store_true",
                    help="GPEN replaced by a runner returning its input (the CPU side alone)")
    ap.add_argument("--face-path", choices=["opencv", "torch", "both"], default="opencv",
                    help="the face path with OpenCV (a CPU run's) or with torch (a GPU run's: "
                         "crops, FacePath, patches); on the CPU each torch row is followed by "
                         "one without the work a GPU run does on the GPU (DeviceClock)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch and OpenCV threads (--threads of gpenvideo); default 1 with "
                         "--passthrough, so each stage's work stays on its own thread as the "
                         "per-thread columns mean, else 0 (the cores)")
    ap.add_argument("--codecs", nargs="+", default=["libx264"])
    ap.add_argument("--presets", nargs="+", default=["default"],
                    help="encoder speed presets to try (default: the codec's own)")
    ap.add_argument("--identity", action="store_true",
                    help="decode and encode only (what the encoder costs per frame)")
    ap.add_argument("--optional-codecs", nargs="*", default=[],
                    help="codecs whose failure is recorded but not an error (e.g. h264_nvenc "
                         "on a GPU without NVENC)")
    ap.add_argument("--detector", default="auto", help="auto, yunet or retinaface")
    ap.add_argument("--strength", type=float, default=None,
                    help="blend share (the 2048 model's own default is 0.8)")
    ap.add_argument("--plain", action="store_true",
                    help="also time a plain PyAV transcode of each clip (libx264)")
    args = ap.parse_args(argv)
    shared = shared_dir()
    tmp = Path(tempfile.mkdtemp(prefix="gpenvideo-bench-"))
    ckpt = tmp / "unused.pth" if args.passthrough or args.identity else \
        random_checkpoint(tmp, args.size, args.tiny)
    cfg = RestoreConfig().replace(
        "model", weights=str(ckpt), device=args.device, precision=args.precision,
        weights_dir=str(shared / "weights")).replace(
        "pipeline", progress=False, segment_seconds=0,
        threads=(1 if args.passthrough else 0) if args.threads is None else args.threads).replace(
        "composite", strength=args.strength).replace("detect", backend=args.detector)
    if args.hd:
        w, h = map(int, args.hd_size.split("x"))
        clips = [hd_clip(tmp / f"{n}faces.mp4", n, args.seconds, (w, h), shared)
                 for n in args.faces]
    else:
        clips = [args.clip]
    paths = ["opencv", "torch"] if args.face_path == "both" else [args.face_path]
    device = resolve_device(args.device)
    gpen = "no face stages (decode and encode only)" if args.identity else \
        f"GPEN-{args.size} " + ("pass-through (no network)" if args.passthrough
                                else f"random weights, {args.precision}")
    print(f"device: {device_name(device)}; {gpen}; torch {torch.__version__}; "
          f"detector {args.detector}; strength {args.strength}\n")
    cols = " | ".join(f"{t} ms" for t in THREADS)
    print(f"| clip | codec | face path | frames | fps | {cols} | other ms | pools ms | "
          "total CPU ms | GPEN busy | GPU util |")
    print("|" + " --- |" * (len(THREADS) + 10))
    failures = 0
    for clip in clips:
        if args.plain:
            t = time.perf_counter()
            n = plain(clip, tmp / "plain.mp4")
            print(f"| {clip.name} | plain PyAV transcode | | {n} | "
                  f"{n / (time.perf_counter() - t):.1f} |" + " |" * (len(THREADS) + 5))
        for codec, preset, face_path in itertools.product(args.codecs, args.presets, paths):
            run_cfg = cfg.replace("encode", codec=codec,
                                  preset=None if preset == "default" else preset)
            name = codec if preset == "default" else f"{codec} {preset}"
            head = f"| {clip.name} | {name} | {'identity' if args.identity else face_path} |"
            models = passthrough_models(args.size) if args.passthrough \
                else contextlib.nullcontext()
            try:
                with models:
                    r = measure(clip, tmp / f"out-{clip.stem}.mp4", run_cfg, face_path,
                                args.identity)
            except (GpenVideoError, RuntimeError, OSError, ValueError) as exc:
                failures += codec not in args.optional_codecs
                reason = " ".join(str(exc).split())[:200].replace("|", "/")
                print(f"{head} failed: {type(exc).__name__}: {reason} |"
                      + " |" * (len(THREADS) + 6), flush=True)
                continue
            ms = " | ".join(f"{r['cpu_ms'].get(t, 0.0):.1f}" for t in (*THREADS, "other"))
            util = "" if r["gpu_util"] is None else f"{r['gpu_util']:.0f}%"
            print(f"{head} {r['frames']} | {r['fps']:.2f} | {ms} | "
                  f"{r['cpu_ms']['pools']:.1f} | {r['cpu_ms']['total']:.1f} | "
                  f"{100 * r['gpen_busy']:.0f}% | {util} |", flush=True)
            if face_path == "torch" and device.type == "cpu" and not args.identity:
                print(f"| {clip.name} | {name} | torch, less GPU work | {r['frames']} | | "
                      f"{less_device(r)} | {r['cpu_ms']['pools']:.1f} | "
                      f"{r['cpu_ms']['total'] - r['device_ms']['total']:.1f} | | |", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
