"""GPEN inference throughput (faces/s) by model size, batch size, precision, memory format and
torch.compile, with randomly initialised weights of the released configurations (the same
arithmetic as the real checkpoints). Prints a Markdown table for bench/RESULTS.md.

    python bench/gpen.py                               # CPU: 256 and 512, batch 1 and 4
    python bench/gpen.py --device cuda --sizes 512 2048 --batches 1 2 4 8 16 \\
        --precisions fp32 fp16 bf16 --channels-last both --compile both
"""

from __future__ import annotations

import argparse
import itertools
import platform
import time

import torch

from gpenvideo.models.gpen import GPEN, GPENConfig
from gpenvideo.models.runner import GPENRunner

# the released BFR configurations (../shared/gpen/README.md)
RELEASED = {256: dict(channel_multiplier=1, narrow=0.5)}


def config(size: int) -> GPENConfig:
    return GPENConfig(size=size, **RELEASED.get(size, dict(channel_multiplier=2, narrow=1.0)))


def measure(runner: GPENRunner, batch: int, seconds: float) -> float:
    """faces/s of `runner` at `batch` faces per call: two warm-up calls (compilation, cuDNN's
    algorithm choice), then calls for at least `seconds` (and at least two)."""
    return measure_peak(runner, batch, seconds)[0]


def measure_peak(runner: GPENRunner, batch: int, seconds: float) -> tuple[float, float | None]:
    """(faces/s, peak GPU memory in GiB during the timed calls; None on the CPU). The input
    is already on the device, as the restore stage's crops are."""
    x = (torch.rand(batch, 3, runner.size, runner.size) * 2 - 1).to(runner.device)
    cuda = runner.device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(runner.device)) if cuda else (lambda: None)
    for _ in range(2):  # warm-up (and compilation)
        runner.run_tensor(x, batch_size=batch)
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats(runner.device)
    runs, start = 0, time.perf_counter()
    while runs < 2 or time.perf_counter() - start < seconds:
        runner.run_tensor(x, batch_size=batch)
        runs += 1
    sync()
    fps = runs * batch / (time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(runner.device) / 2**30 if cuda else None
    return fps, peak


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU and its thread count, for the figures' heading."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def flags(choice: str) -> list[bool]:
    return {"on": [True], "off": [False], "both": [False, True]}[choice]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--precisions", nargs="+", default=["fp32"])
    ap.add_argument("--channels-last", choices=["on", "off", "both"], default="on",
                    help="NHWC memory format (CUDA only; the table shows what was used)")
    ap.add_argument("--compile", choices=["on", "off", "both"], default="off")
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    args = ap.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    print(f"device: {device_name(device)}; torch {torch.__version__}\n")
    print("| model | batch | precision | channels_last | compile | faces/s | ms/face |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for size in args.sizes:
        model = GPEN(config(size)).eval()
        for prec, cl, comp in itertools.product(args.precisions, flags(args.channels_last),
                                                flags(args.compile)):
            runner = GPENRunner(model, device, prec, batch_size=1, channels_last=cl,
                                compile=comp)
            for batch in args.batches:
                try:
                    fps = measure(runner, batch, args.seconds)
                except torch.OutOfMemoryError:
                    print(f"| GPEN-{size} | {batch} | {prec} | {runner.channels_last} | {comp} "
                          "| OOM | |")
                    torch.cuda.empty_cache()
                    break
                print(f"| GPEN-{size} | {batch} | {prec} | {runner.channels_last} | {comp} | "
                      f"{fps:.2f} | "
                      f"{1000 / fps:.1f} |", flush=True)
        del model


if __name__ == "__main__":
    main()
