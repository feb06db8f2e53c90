"""Batched GPEN inference: device and precision choice, channels_last, inference mode, optional
torch.compile, a fixed batch size (every call padded to it, so results do not depend on how faces
are grouped), and halving the batch on out-of-memory."""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..errors import DeviceError, GpenVideoError
from .gpen import GPEN

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MAX_BATCH = 32
GPU_MEMORY_SHARE = 0.5  # share of the GPU's total memory the batch may take
CPU_MAX_BATCH = 1  # bench/gpen.py, 2-core CPU: GPEN-256 10.2 faces/s at batch 1, 5.2 at 4


def resolve_device(spec: str) -> torch.device:
    """auto (CUDA when available, else CPU), cpu, cuda or cuda:N. Raises DeviceError."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise DeviceError(f"--device {spec!r} is not valid: give auto, cpu, cuda or cuda:N") \
            from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {spec}: no CUDA GPU is usable here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {spec}: only {torch.cuda.device_count()} GPU(s) present")
    elif device.type != "cpu":
        raise DeviceError(f"--device {spec!r} is not supported: give auto, cpu, cuda or cuda:N")
    return device


def resolve_precision(spec: str, device: torch.device) -> torch.dtype:
    """auto: fp16 on CUDA, fp32 on CPU. Half precisions on CPU fall back to fp32 with a
    warning; bf16 on a GPU without bf16 falls back to fp16 with a warning."""
    if spec == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    dtype = DTYPES[spec]
    if device.type == "cpu" and dtype != torch.float32:
        log.warning("--precision %s is not used on CPU (slow or unsupported there); using fp32",
                    spec)
        return torch.float32
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        log.warning("this GPU has no bf16 support; using fp16")
        return torch.float16
    return dtype


class GPENRunner:
    """Runs a GPEN network over batches of aligned face crops.

    model: a GPEN in eval mode (moved to `device` here); batch_size: faces per call, 0 to
    choose from the device (see _auto_batch). Results depend on the input, the model, the
    device, the precision and the batch size, not on the thread count or the machine's load.
    """

    def __init__(self, model: GPEN, device: str | torch.device = "cpu",
                 precision: str = "auto", batch_size: int = 0, channels_last: bool = True,
                 compile: bool = False) -> None:
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.dtype = resolve_precision(precision, self.device)
        self.size = model.cfg.size
        self.channels_last = channels_last and self.device.type == "cuda"
        model = model.to(self.device, self.dtype)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.forward = torch.compile(model) if compile else model
        self.batch_size = batch_size or self._auto_batch()

    def _auto_batch(self) -> int:
        """The batch size when none is given. It shapes the results (every call is padded to
        it), so it comes from what the machine is, never from what is free at the moment:
        CPU_MAX_BATCH on the CPU, and on a GPU what GPU_MEMORY_SHARE of its total memory holds
        (one face measured)."""
        if self.device.type == "cpu":
            return CPU_MAX_BATCH
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        base = torch.cuda.memory_allocated(self.device)
        probe = torch.zeros(1, 3, self.size, self.size, device=self.device)
        self.run_tensor(probe, batch_size=1)
        per_face = max(1, torch.cuda.max_memory_allocated(self.device) - base)
        total = torch.cuda.get_device_properties(self.device).total_memory
        batch = int(max(1, min(MAX_BATCH, total * GPU_MEMORY_SHARE // per_face)))
        log.info("GPEN batch size %d (%.0f MB per face)", batch, per_face / 2**20)
        return batch

    @torch.inference_mode()
    def run_tensor(self, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """x: (N, 3, S, S) RGB in [-1, 1] on any device, any float dtype.
        Returns (N, 3, S, S) float32 in [-1, 1] (unclipped) on this runner's device.

        The faces run in calls of exactly `batch_size` (the last one padded with zeros):
        convolution libraries choose their kernels by the batch shape, and a face's result
        depends on that shape but not on the other faces in the call, so a face comes out the
        same however the faces of a film are grouped (segments, resumed runs). Raises
        GpenVideoError when one face does not fit in GPU memory."""
        batch = batch_size or self.batch_size
        outs = []
        start = 0
        while start < x.shape[0]:
            chunk = x[start:start + batch].to(self.device, self.dtype, non_blocking=True)
            count = chunk.shape[0]
            if count < batch:
                chunk = torch.cat([chunk, chunk.new_zeros((batch - count, *chunk.shape[1:]))])
            if self.channels_last:
                chunk = chunk.contiguous(memory_format=torch.channels_last)
            try:
                outs.append(self.forward(chunk)[:count].float())
            except torch.OutOfMemoryError:
                if batch == 1:
                    raise GpenVideoError(
                        f"GPEN-{self.size} does not fit in GPU memory even one face at a time; "
                        "use a smaller --model, --precision fp16, or --device cpu") from None
                batch = max(1, batch // 2)
                torch.cuda.empty_cache()
                log.warning("GPU out of memory: GPEN batch size lowered to %d (results now "
                            "differ slightly from a run at the first size)", batch)
                self.batch_size = batch
                continue
            start += count
        return torch.cat(outs) if outs else x.new_zeros((0, 3, self.size, self.size))

    def restore(self, crops: np.ndarray | torch.Tensor) -> np.ndarray:
        """crops: (N, S, S, 3) uint8 BGR (numpy or tensor). Returns (N, S, S, 3) uint8 BGR."""
        return to_bgr_uint8(self.run_tensor(from_bgr_uint8(crops, self.device)))

    def restore_on_device(self, crops: np.ndarray | torch.Tensor) -> torch.Tensor:
        """As `restore`, the result left on this runner's device: (N, S, S, 3) uint8 tensor."""
        x = self.run_tensor(from_bgr_uint8(crops, self.device))
        return ((x + 1.0) * 127.5).clamp_(0, 255).round_().to(torch.uint8).flip(1) \
            .permute(0, 2, 3, 1).contiguous()


def from_bgr_uint8(crops: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """(N, S, S, 3) uint8 BGR -> (N, 3, S, S) float32 RGB in [-1, 1] on `device`."""
    t = torch.as_tensor(crops).to(device, non_blocking=True)
    return t.flip(-1).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def to_bgr_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, 3, S, S) RGB in [-1, 1] -> (N, S, S, 3) uint8 BGR, rounded (the official code
    truncates; rounding removes its half-level darkening)."""
    x = ((x.float() + 1.0) * 127.5).clamp_(0, 255).round_().to(torch.uint8)
    return x.flip(1).permute(0, 2, 3, 1).contiguous().cpu().numpy()
