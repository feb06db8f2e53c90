"""One prepared check of everything that needs a GPU, for the rare minutes one is lent: writes ONE
markdown file of results, part by part as they come (a killed run still leaves what was done).

    python3 bench/gpu_check.py --out gpu_check.md          # on a CUDA machine, <= 8 minutes
    python3 bench/gpu_check.py --dry-run --out /tmp/x.md   # every step on the CPU, tiny sizes

Parts, in this order, each in its own subprocess with its own time budget (a part whose budget
or the whole run's is spent is stopped or skipped with a note; a failing part never stops the
rest):

  env         Python, torch, CUDA, the packages and shared files each part needs
  exactness   GPEN on the GPU against the golden vectors (gpen_tiny64/128.npz): fp32 < 1e-3,
              the max error in fp16 and bf16, a batch of 4 against single faces
  gpen        bench/gpen.py: GPEN-2048 and GPEN-512 (random weights, released shapes), fp32
              batch 1 (the naive way) against fp16/bf16, batch 1-16, channels_last, torch.compile:
              faces/s, speed-up and peak memory
  pipeline    bench/pipeline.py: 1080p clips with 1 and 4 real faces, GPEN-2048 fp16, libx264
              and h264_nvenc (a GPU without NVENC is a finding, not a crash): frames/s, CPU
              ms/frame per thread, GPEN busy share, NVML GPU utilisation
  tests       pytest -m gpu (the gpu-marked tests)
  detect      bench/detect.py: RetinaFace batched on the GPU at 1080p (and YuNet on the CPU)
  passthrough bench/pipeline.py --passthrough: the CPU side alone on this machine's cores

The shared test data (golden vectors, detector weights, clips) is looked for in --shared,
$GPENVIDEO_SHARED, ./shared, then ../shared (bench/paths.py). Exit status: 0 when every part ran
and passed, 1 otherwise (the markdown file says which and why).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"

# part: (seconds it may take on the GPU, what it needs: modules, then files under shared/)
PARTS: dict[str, tuple[int, tuple[str, ...], tuple[str, ...]]] = {
    "env": (20, (), ()),
    "exactness": (45, ("torch", "numpy"), ("gpen/gpen_tiny64.npz", "gpen/gpen_tiny128.npz")),
    "gpen": (170, ("torch",), ()),
    "pipeline": (110, ("torch", "av", "cv2", "scipy"),
                 ("media/sadtalker_WDA_KatieHill_000.mp4", "weights")),
    "tests": (80, ("pytest", "torch", "av", "cv2", "scipy"), ()),
    "detect": (35, ("torch", "av", "cv2"),
               ("media/sadtalker_WDA_KatieHill_000.mp4",
                "weights/face_detection_yunet_2026may.onnx",
                "weights/detection_mobilenet0.25_Final.pth")),
    "passthrough": (60, ("torch", "av", "cv2", "scipy"),
                    ("media/sadtalker_WDA_KatieHill_000.mp4", "weights")),
}
MIN_SECONDS = 8  # a part is skipped when less than this is left of the whole run
# a dry run's GPEN: real code, a sliver of the arithmetic (like the golden gpen_tiny64)
TINY = dict(style_dim=32, n_mlp=2, channel_multiplier=1, narrow=1 / 16)
MODULES_NEEDED = ("torch", "numpy", "av", "cv2", "scipy", "pytest", "facexlib")
HINT = ("a package missing on a machine without internet travels as a wheel, shared data as a "
        "./shared copy: README.md, 'Checking a GPU machine'")


def shared_dir(given: str | None) -> Path:
    """--shared, else bench/paths.py's choice (bench/ is on sys.path: this script's folder)."""
    if given:
        return Path(given)
    from paths import shared_dir as find

    return find()


# --------------------------------------------------------------------------- parts (run in a
# child process: `gpu_check.py --part NAME`), each printing markdown to stdout


def part_env(args: argparse.Namespace) -> int:
    print("| what | found |\n| --- | --- |")
    print(f"| python | {sys.version.split()[0]} ({sys.executable}) |")
    print(f"| machine | {platform.machine()}, {os.cpu_count()} cores |")
    for name in MODULES_NEEDED:
        spec = importlib.util.find_spec(name)
        if spec is None:
            print(f"| {name} | MISSING |")
            continue
        version = ""
        if name != "facexlib":  # importing facexlib's package needs torchvision; not used here
            try:
                version = getattr(__import__(name), "__version__", "")
            except Exception as exc:  # noqa: BLE001 - report, go on
                version = f"import fails: {exc}"
        print(f"| {name} | {version or 'present'} |")
    try:
        import torch

        cuda = torch.cuda.is_available()
        print(f"| CUDA | {torch.version.cuda if cuda else 'not available'} |")
        if cuda:
            p = torch.cuda.get_device_properties(0)
            print(f"| GPU | {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count}"
                  f" SMs, bf16 {torch.cuda.is_bf16_supported()} |")
    except ImportError:
        pass
    shared = Path(args.shared)
    for rel in sorted({f for _, _, files in PARTS.values() for f in files}):
        print(f"| shared/{rel} | {'present' if (shared / rel).exists() else 'MISSING'} "
              f"({shared}) |")
    missing = [m for m in MODULES_NEEDED if importlib.util.find_spec(m) is None]
    if missing:
        print(f"\nMissing: {', '.join(missing)} ({HINT}).")
    try:
        import av

        codecs = [c for c in ("libx264", "h264_nvenc", "hevc_nvenc") if c in av.codecs_available]
        print(f"| FFmpeg encoders in PyAV | {', '.join(codecs)} |")
    except ImportError:
        pass
    return 0


def part_exactness(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from gpenvideo.models import weights
    from gpenvideo.models.runner import GPENRunner

    device = "cpu" if args.dry_run else "cuda"
    print("| golden | precision asked | precision used | max abs error | mean abs error | "
          "batch of 4 vs one (max) | verdict |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    failed = 0
    for name in ("gpen_tiny64",) if args.dry_run else ("gpen_tiny64", "gpen_tiny128"):
        data = np.load(Path(args.shared) / "gpen" / f"{name}.npz")
        sd = {k.removeprefix("param/"): torch.from_numpy(data[k]) for k in data.files
              if k.startswith("param/")}
        x, ref = torch.from_numpy(data["input"]), torch.from_numpy(data["output"])
        # fp32 as a run does it (torch's defaults: cuDNN may use TF32 for convolutions), then
        # with TF32 off everywhere
        defaults = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        for precision, tf32 in (("fp32", True), ("fp32", False), ("fp16", True),
                                ("bf16", True)):
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = \
                defaults if tf32 else (False, False)
            runner = GPENRunner(weights.load_gpen(sd), device, precision, batch_size=4)
            out = runner.run_tensor(x).cpu()
            err = (out - ref).abs()
            batch = runner.run_tensor(x[:1].repeat(4, 1, 1, 1)).cpu()
            spread = (batch - out[:1]).abs().max().item()
            used = str(runner.dtype).removeprefix("torch.") + ("" if tf32 else ", TF32 off")
            if runner.dtype == torch.float32:
                ok = err.max().item() < 1e-3 and bool(torch.isfinite(out).all())
                verdict = "pass (< 1e-3)" if ok else "FAIL (>= 1e-3)"
                failed += not ok
            else:
                verdict = "reported" if torch.isfinite(out).all() else "FAIL (not finite)"
                failed += not bool(torch.isfinite(out).all())
            print(f"| {name} | {precision} | {used} | {err.max().item():.2e} | "
                  f"{err.mean().item():.2e} | {spread:.2e} | {verdict} |", flush=True)
    return 1 if failed else 0


def gpen_plan(dry_run: bool) -> list[tuple[int, str, bool, bool, list[int]]]:
    """(size, precision, channels_last, compile, batches) rows, most telling first: the naive
    way (fp32, batch 1, NCHW) as the baseline, then what a run uses, then the alternatives."""
    if dry_run:
        return [(64, "fp32", False, False, [1]), (64, "fp16", True, False, [1, 2]),
                (64, "bf16", True, False, [2]), (64, "fp16", True, True, [2]),
                (128, "fp32", False, False, [1])]
    plan = []
    for size in (2048, 512):
        plan += [(size, "fp32", False, False, [1]),
                 (size, "fp16", True, False, [1, 2, 4, 8, 16]),
                 (size, "bf16", True, False, [1, 4, 8, 16]),
                 (size, "fp16", False, False, [8]),
                 (size, "fp32", True, False, [8])]
    plan += [(2048, "fp16", True, True, [8, 16]), (512, "fp16", True, True, [16])]
    return plan


def part_gpen(args: argparse.Namespace) -> int:
    import copy
    import functools

    import torch
    from gpen import config, measure_peak

    from gpenvideo.models.gpen import GPEN, GPENConfig
    from gpenvideo.models.runner import GPENRunner

    device = torch.device("cpu" if args.dry_run else "cuda")
    if args.dry_run:  # inductor would compile C++ for minutes on this CPU: check the path only
        torch.compile = functools.partial(torch.compile, backend="eager")
    deadline = time.monotonic() + args.budget - 5
    seconds = 0.05 if args.dry_run else 1.0
    print("| model | precision | channels_last | compile | batch | faces/s | ms/face | "
          "x naive (fp32, batch 1) | peak GiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    models: dict[int, GPEN] = {}
    baseline: dict[int, float] = {}
    failed = 0
    for size, precision, cl, comp, batches in gpen_plan(args.dry_run):
        if time.monotonic() > deadline:
            print(f"| GPEN-{size} | {precision} | {cl} | {comp} | {batches} | skipped: the "
                  "part's time budget is spent | | | |", flush=True)
            continue
        if size not in models:
            torch.manual_seed(0)
            cfg = GPENConfig(size=size, **TINY) if args.dry_run else config(size)
            models = {size: GPEN(cfg).eval()}  # one model in memory at a time
        try:  # a copy: the runner converts its model's dtype and memory format in place
            runner = GPENRunner(copy.deepcopy(models[size]), device, precision, batch_size=1,
                                channels_last=cl, compile=comp)
        except Exception as exc:  # noqa: BLE001 - one configuration failing is a finding
            print(f"| GPEN-{size} | {precision} | {cl} | {comp} | | failed: {exc} | | | |")
            failed += 1
            continue
        for batch in batches:
            if time.monotonic() > deadline:
                print(f"| GPEN-{size} | {precision} | {cl} | {comp} | {batch} | skipped: "
                      "budget spent | | | |", flush=True)
                continue
            try:
                fps, peak = measure_peak(runner, batch, seconds)
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                print(f"| GPEN-{size} | {precision} | {cl} | {comp} | {batch} | OOM | | | |")
                break
            except Exception as exc:  # noqa: BLE001
                failed += 1
                reason = " ".join(str(exc).split())[:200].replace("|", "/")
                print(f"| GPEN-{size} | {precision} | {cl} | {comp} | {batch} | failed: "
                      f"{type(exc).__name__}: {reason} | | | |", flush=True)
                break
            if (precision, cl, comp, batch) == ("fp32", False, False, 1):
                baseline[size] = fps
            gain = f"{fps / baseline[size]:.1f}" if size in baseline else ""
            used = str(runner.dtype).removeprefix("torch.")
            peak_text = "" if peak is None else f"{peak:.2f}"
            print(f"| GPEN-{size} | {used} | {runner.channels_last} | {comp} | {batch} | "
                  f"{fps:.2f} | {1000 / fps:.1f} | {gain} | {peak_text} |", flush=True)
        del runner
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return 1 if failed else 0


def _child(args: argparse.Namespace, argv: list[str]) -> int:
    """Run another script of the repository in this process (stdout is the markdown file)."""
    import runpy

    sys.argv = argv
    try:
        runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


def part_pipeline(args: argparse.Namespace, passthrough: bool = False) -> int:
    if args.dry_run:
        common = ["--hd-size", "320x180", "--seconds", "0.12", "--size", "64", "--tiny"]
    else:  # the CPU-side part comes last and gets what is left: shorter clips
        common = ["--seconds", "2" if passthrough else "3", "--size", "2048"]
    argv = [str(BENCH / "pipeline.py"), "--hd", "--strength", "0.8", *common]
    if passthrough:
        argv += ["--passthrough", "--device", "cuda" if not args.dry_run else "cpu",
                 "--codecs", "libx264"]
    else:
        argv += ["--device", "cpu" if args.dry_run else "cuda",
                 "--precision", "fp32" if args.dry_run else "fp16",
                 "--codecs", "libx264", "h264_nvenc", "--optional-codecs", "h264_nvenc"]
    code = _child(args, argv)
    if passthrough:  # what the encoder alone costs per frame, by preset
        print()
        presets = ["default"] if args.dry_run else ["default", "faster", "veryfast"]
        code |= _child(args, [str(BENCH / "pipeline.py"), "--hd", "--identity", *common,
                              "--codecs", "libx264", "--presets", *presets])
    else:
        print("\n(h264_nvenc failing is expected where the GPU has no NVENC, e.g. an H100, or "
              "FFmpeg was built without it: a finding, not a failure of the check.)")
    return code


def part_detect(args: argparse.Namespace) -> int:
    if args.dry_run:
        extra = ["--size", "320x180", "--frames", "2", "--batches", "1", "2", "--device", "cpu"]
    else:
        extra = ["--size", "1920x1080", "--frames", "64", "--batches", "1", "8", "16", "32",
                 "--device", "cuda"]
    return _child(args, [str(BENCH / "detect.py"), *extra])


def part_tests(args: argparse.Namespace) -> int:
    import pytest

    budget = max(5, args.budget - 10)
    argv = ["-q", "-m", "gpu", "-p", "no:cacheprovider", str(ROOT / "tests")]
    if importlib.util.find_spec("pytest_timeout") is not None:
        argv += ["--timeout", str(budget)]
    print("```text", flush=True)
    code = pytest.main(argv)
    sys.stdout.flush()
    print("```")
    # 5: nothing collected/selected (a dry run on a CPU skips them all, which pytest counts fine)
    return 0 if code in (0, 5) else int(code)


def part_passthrough(args: argparse.Namespace) -> int:
    return part_pipeline(args, passthrough=True)


RUNNERS = {"env": part_env, "exactness": part_exactness, "gpen": part_gpen,
           "pipeline": part_pipeline, "detect": part_detect, "tests": part_tests,
           "passthrough": part_passthrough}
TITLES = {
    "env": "Environment",
    "exactness": "GPEN exactness against the golden vectors",
    "gpen": "GPEN throughput (bench/gpen.py functions)",
    "pipeline": "End to end at 1080p (bench/pipeline.py)",
    "detect": "Face detection (bench/detect.py)",
    "tests": "gpu-marked tests (pytest -m gpu)",
    "passthrough": "The CPU side alone on this machine (bench/pipeline.py --passthrough)",
}


# --------------------------------------------------------------------------- the driver


def missing_for(part: str, shared: Path) -> list[str]:
    _, modules, files = PARTS[part]
    out = [f"the Python package {m}" for m in modules if importlib.util.find_spec(m) is None]
    out += [f"{shared / f}" for f in files if not (shared / f).exists()]
    return out


def child_env(shared: Path, dry_run: bool) -> dict[str, str]:
    """The parts' environment: the repository, tests/ and bench/ importable, the shared folder
    named for tests/conftest.py; a dry run on one thread per pool (it checks steps, not speed,
    and a busy CI machine then finishes sooner)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", GPENVIDEO_SHARED=str(shared))
    if dry_run:
        env.setdefault("OMP_NUM_THREADS", "1")
    paths = [str(ROOT), str(ROOT / "tests"), str(BENCH)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def run_part(part: str, budget: float, args: argparse.Namespace, shared: Path,
             md: Path) -> tuple[str, float]:
    """Run one part in a child process, its markdown appended to `md` as it is printed.
    Returns (status, seconds)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", part, "--budget",
           str(int(budget)), "--shared", str(shared)] + (["--dry-run"] if args.dry_run else [])
    log = md.with_name(f".{md.name}.{part}.stderr")
    start = time.monotonic()
    with md.open("a") as out, log.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT,
                                env=child_env(shared, args.dry_run),
                                start_new_session=True)
        try:
            code = proc.wait(timeout=budget)
            status = "ok" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            status = f"stopped: its {budget:.0f} s budget ran out"
    seconds = time.monotonic() - start
    tail = log.read_text(errors="replace").strip().splitlines()
    log.unlink(missing_ok=True)
    with md.open("a") as out:
        if status != "ok" and tail:
            lines = [t for t in tail if "WARN:" not in t][-25:]
            out.write("\n```text\n" + "\n".join(lines) + "\n```\n")
        out.write(f"\n_{part}: {status}, {seconds:.0f} s_\n")
    return status, seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dry-run", action="store_true",
                    help="every step on the CPU with tiny sizes (what CI runs)")
    ap.add_argument("--out", type=Path, default=Path("gpu_check.md"),
                    help="the markdown file written (default ./gpu_check.md)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for the whole run (default 450; dry run 90)")
    ap.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    ap.add_argument("--shared", default=None, help="the shared data folder (see above)")
    ap.add_argument("--part", choices=list(PARTS), help=argparse.SUPPRESS)  # child process
    args = ap.parse_args(argv)
    shared = shared_dir(args.shared)
    args.shared = str(shared)
    if args.part:
        return RUNNERS[args.part](args)

    total = args.budget or (90.0 if args.dry_run else 450.0)
    deadline = time.monotonic() + total
    md = args.out.resolve()
    md.parent.mkdir(parents=True, exist_ok=True)
    cuda = False
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        pass
    mode = "DRY RUN on the CPU, tiny sizes (checks the steps, not the speed)" if args.dry_run \
        else "GPU run"
    md.write_text(f"# gpenvideo GPU check\n\n{time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {mode}; "
                  f"budget {total:.0f} s; shared data: {shared}\n")
    if not args.dry_run and not cuda:
        with md.open("a") as out:
            out.write("\nNo CUDA GPU is usable here (torch.cuda.is_available() is False): "
                      "nothing measured. Use --dry-run to check the steps on the CPU.\n")
        print(f"{md}: no CUDA GPU here; nothing measured (use --dry-run)", file=sys.stderr)
        return 1
    results = []
    for part in args.parts:
        with md.open("a") as out:
            out.write(f"\n## {TITLES[part]}\n\n")
        left = deadline - time.monotonic()
        missing = missing_for(part, shared)
        if missing:
            status = "skipped: needs " + "; ".join(missing) + f" ({HINT})"
            with md.open("a") as out:
                out.write(f"_{part}: {status}_\n")
        elif left < MIN_SECONDS:
            status = f"skipped: the run's {total:.0f} s budget is spent"
            with md.open("a") as out:
                out.write(f"_{part}: {status}_\n")
        else:  # a dry run's parts share the whole budget: their speed here is not the point
            budget = left if args.dry_run else min(PARTS[part][0], left)
            status, _ = run_part(part, budget, args, shared, md)
        results.append((part, status))
        print(f"{part}: {status}", file=sys.stderr, flush=True)
    with md.open("a") as out:
        out.write("\n## Summary\n\n| part | status |\n| --- | --- |\n")
        out.writelines(f"| {p} | {s} |\n" for p, s in results)
    print(f"wrote {md}", file=sys.stderr)
    return 0 if all(s == "ok" for _, s in results) else 1


if __name__ == "__main__":
    sys.exit(main())
