"""Frozen configuration dataclasses, one per stage, and loading them from TOML.

`configs/default.toml` in the repository mirrors these defaults key for key (a test checks it).
Each stage receives only its own section; nothing here imports from the rest of the package.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from .errors import InputError

DEINTERLACE_MODES = ("auto", "on", "off")
CODECS = ("libx264", "libx265", "h264_nvenc", "hevc_nvenc", "libsvtav1", "ffv1", "prores_ks")
DETECTORS = ("yunet", "retinaface")
DEVICES_HELP = "auto, cpu, cuda or cuda:N"
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
MASKS = ("template", "parsing")
MODELS = ("gpen-bfr-2048", "gpen-bfr-1024", "gpen-bfr-512", "gpen-bfr-256")


@dataclass(frozen=True)
class DecodeConfig:
    deinterlace: str = "auto"  # auto: only frames the stream flags as interlaced; on: all; off
    threads: int = 0  # decoder threads; 0 lets FFmpeg choose (frame + slice threading)


@dataclass(frozen=True)
class EncodeConfig:
    codec: str = "libx264"  # one of CODECS
    crf: int | None = None  # quality (lower is better); None: the codec's default in encoder.py
    preset: str | None = None  # encoder speed preset; None: the codec's default in encoder.py
    audio: bool = True  # copy audio and subtitle streams (False: --no-audio)


@dataclass(frozen=True)
class DetectConfig:
    backend: str = "yunet"  # yunet (OpenCV, default) or retinaface (needs the retinaface extra)
    # detections scoring lower are dropped; None: the backend's (yunet 0.6, retinaface 0.9)
    score_threshold: float | None = None
    min_face_size: int = 16  # faces whose box is smaller than this (pixels, short side) are dropped
    max_side: int = 1280  # frames whose long side is larger are detected downscaled to this
    retinaface_model: str = "mobilenet0.25"  # mobilenet0.25 or resnet50 (retinaface backend)
    nms_threshold: float = 0.3  # overlap above which two detections are the same face
    # frames per detector call; 0: the backend's best (yunet 1, retinaface 8 on a GPU)
    batch_size: int = 0


@dataclass(frozen=True)
class TrackConfig:
    min_hits: int = 3  # detections before a track is confirmed (drops one-frame false positives)
    max_misses: int = 10  # consecutive frames without a detection before a track ends
    match_threshold: float = 0.3  # minimum association score (box overlap / landmark distance)
    scene_cut_threshold: float = 0.45  # histogram distance between frames that counts as a cut
    max_faces: int = 0  # restore at most this many faces per frame (largest first); 0: no limit
    smoothing_window: int = 17  # frames in the centered smoothing window (odd); 1 turns it off
    smoothing_cutoff: float = 0.2  # fraction of the Nyquist frequency kept (0..1]; 1: off
    motion_scale: float = 0.5  # eye distances per frame of motion at which smoothing backs off


@dataclass(frozen=True)
class ModelConfig:
    model: str = "gpen-bfr-2048"  # one of MODELS, found through the weights lookup
    weights: str | None = None  # a GPEN checkpoint path; overrides `model`
    weights_dir: str | None = None  # an extra folder searched first for checkpoints and detectors
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    precision: str = "auto"  # auto (fp16 on CUDA, fp32 on CPU), fp32, fp16 or bf16
    # faces per GPEN call; 0: 1 on the CPU, from the GPU's total memory on a GPU. Every call
    # is padded to this size, so results depend on it (and on nothing else of the run)
    batch_size: int = 0
    channels_last: bool = True  # NHWC memory format on CUDA (faster convolutions)
    compile: bool = False  # torch.compile the network (slow start, faster steady state)


@dataclass(frozen=True)
class CompositeConfig:
    strength: float | None = None  # 0..1 share of the restored face; None: the model's default
    upscale: int = 1  # output resolution factor: 1, 2 or 4
    mask_feather: float = 0.1  # width of the mask's soft edge, as a fraction of the crop size
    color_match: bool = True  # keep the source face's colour and shading (low frequencies)
    mask: str = "template"  # template (soft ellipse) or parsing (facexlib ParseNet: face only)


@dataclass(frozen=True)
class PipelineConfig:
    queue_size: int = 16  # frames held between two stages (bounds memory)
    progress: bool = True  # progress bar on stderr when it is a terminal
    segment_seconds: float = 60.0  # long films run in resumable segments of about this length; 0: off
    resume: bool = True  # keep the finished segments of an interrupted run and go on after them
    # CPU threads for torch and OpenCV; 0: from the cores this process may use (threads.plan).
    # Speed only: the output does not depend on it.
    threads: int = 0


@dataclass(frozen=True)
class RestoreConfig:
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    composite: CompositeConfig = field(default_factory=CompositeConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

    def replace(self, section: str, **changes: Any) -> RestoreConfig:
        """Return a copy with `changes` applied to one section (e.g. replace("encode", crf=20))."""
        return dataclasses.replace(
            self, **{section: dataclasses.replace(getattr(self, section), **changes)}
        )


def validate(cfg: RestoreConfig) -> RestoreConfig:
    """Check option values that have a fixed set of choices. Raises InputError naming the option."""
    checks = [
        ("--deinterlace", cfg.decode.deinterlace, DEINTERLACE_MODES),
        ("--codec", cfg.encode.codec, CODECS),
        ("--detector", cfg.detect.backend, DETECTORS),
        ("--precision", cfg.model.precision, PRECISIONS),
        ("--upscale", cfg.composite.upscale, (1, 2, 4)),
        ("--mask", cfg.composite.mask, MASKS),
    ]
    for option, value, choices in checks:
        if value not in choices:
            allowed = ", ".join(str(c) for c in choices)
            raise InputError(f"{option} {value!r} is not valid: choose one of {allowed}")
    if cfg.composite.strength is not None and not 0.0 <= cfg.composite.strength <= 1.0:
        raise InputError(f"--strength {cfg.composite.strength} is not valid: give 0 to 1")
    score = cfg.detect.score_threshold
    if score is not None and not 0.0 <= score <= 1.0:
        raise InputError(f"--score-threshold {score:g} is not valid: give 0 to 1")
    if cfg.encode.crf is not None and not 0 <= cfg.encode.crf <= 63:
        raise InputError(f"--crf {cfg.encode.crf} is not valid: give 0 to 63")
    if cfg.pipeline.segment_seconds < 0:
        raise InputError(f"--segment-seconds {cfg.pipeline.segment_seconds:g} is not valid: "
                         "give 0 (no segments) or more")
    if cfg.pipeline.threads < 0:
        raise InputError(f"--threads {cfg.pipeline.threads} is not valid: give 0 (from the "
                         "cores) or more")
    if cfg.track.smoothing_window < 1 or cfg.track.smoothing_window % 2 == 0:
        raise InputError("track.smoothing_window must be an odd number >= 1")
    if not 0.0 < cfg.track.smoothing_cutoff <= 1.0:
        raise InputError("track.smoothing_cutoff must be above 0 and at most 1")
    return cfg


def load_config(path: str | Path | None = None) -> RestoreConfig:
    """Load a TOML config whose sections mirror RestoreConfig's fields; missing keys keep defaults.

    Raises InputError (naming the file and key) for unreadable files, unknown sections or keys.
    """
    cfg = RestoreConfig()
    if path is None:
        return cfg
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"{path}: cannot read the config ({exc}); fix or remove it") from exc
    for section, values in data.items():
        if section not in {f.name for f in dataclasses.fields(RestoreConfig)}:
            raise InputError(f"{path}: unknown section [{section}]")
        if not isinstance(values, dict):
            raise InputError(f"{path}: [{section}] must be a table")
        known = {f.name for f in dataclasses.fields(getattr(cfg, section))}
        for key in values:
            if key not in known:
                raise InputError(f"{path}: unknown key {key!r} in [{section}]")
        cfg = cfg.replace(section, **values)
    return validate(cfg)


def as_dict(cfg: RestoreConfig) -> dict[str, dict[str, Any]]:
    """The config as nested plain dicts (for reports and settings hashes)."""
    return dataclasses.asdict(cfg)
