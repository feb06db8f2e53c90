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
CODECS = ("auto", "libx264", "libx265", "h264_nvenc", "hevc_nvenc", "libsvtav1", "ffv1",
          "prores_ks")
ENCODERS = ("pyav", "ffmpeg")
DETECTORS = ("auto", "yunet", "retinaface")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
MASKS = ("template", "parsing")
MODELS = ("gpen-bfr-2048", "gpen-bfr-1024", "gpen-bfr-512", "gpen-bfr-256")


@dataclass(frozen=True)
class DecodeConfig:
    deinterlace: str = "auto"  # auto: only frames the stream flags as interlaced; on: all; off
    threads: int = 0  # decoder threads; 0 lets FFmpeg choose (frame + slice threading)


@dataclass(frozen=True)
class EncodeConfig:
    # one of CODECS (encoder "ffmpeg": any encoder ffmpeg has); auto: NVENC where it opens,
    # else libx264 (ProRes for 4:2:2 sources in .mov)
    codec: str = "auto"
    # output pixel format, e.g. yuv420p; None: the source's depth and chroma where the codec allows
    pix_fmt: str | None = None
    crf: int | None = None  # quality (lower is better); None: the codec's default in encoder.py
    preset: str | None = None  # encoder speed preset; None: the codec's default in encoder.py
    audio: bool = True  # copy audio and subtitle streams (False: --no-audio)
    # pyav: PyAV's own encoders; ffmpeg: frames piped to a system ffmpeg (VAAPI, QSV, AMF ...)
    encoder: str = "pyav"
    ffmpeg_args: str = ""  # extra ffmpeg output options (encoder "ffmpeg"), split like a shell


@dataclass(frozen=True)
class DetectConfig:
    # auto: retinaface on a CUDA device when facexlib and its weights are there, else yunet;
    # yunet (OpenCV, CPU) or retinaface (needs the retinaface extra)
    backend: str = "auto"
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
    # a track cut short by the film's end before min_hits is kept with a detection scoring this
    keep_score: float = 0.8
    max_misses: int = 10  # consecutive frames without a detection before a track ends
    match_threshold: float = 0.3  # minimum association score (box overlap / landmark distance)
    # content distance (1 - correlation of brightness-normalised 32x32 grey thumbnails) between
    # frames that counts as a cut; a run of up to 2 frames unlike the shot on both sides is a
    # glitch, not a cut
    scene_cut_threshold: float = 0.5
    # frames over which a face's restoration fades in and out (track ends, long gaps); 0: none
    ramp_frames: int = 5
    hold_frames: int = 1  # missed frames within this many of a detection are restored in full
    max_faces: int = 0  # restore at most this many faces per frame (largest first); 0: no limit
    smoothing_window: int = 17  # frames in the centered smoothing window (odd); 1 turns it off
    smoothing_cutoff: float = 0.2  # fraction of the Nyquist frequency kept (0..1]; 1: off
    motion_scale: float = 0.5  # eye distances per frame of motion at which smoothing backs off


@dataclass(frozen=True)
class RegisterConfig:
    enabled: bool = True  # register the aligned crop over time (False: landmark transform only)
    window: int = 17  # frames in the centered window of neighbours registered against (odd)
    size: int = 128  # px of the 512 template the registration patch is measured at
    max_shift: float = 0.08  # largest correction, in template eye distances
    max_motion: float = 0.05  # eye distances per frame of in-crop motion still trusted
    min_response: float = 0.25  # phase-correlation response below which a neighbour is ignored
    full_response: float = 0.7  # response from which a neighbour counts fully


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
    # 0..1 share of the restored face; None: the model's default (0.8 for gpen-bfr-2048, 1 for
    # the other models and for --weights)
    strength: float | None = None
    upscale: int = 1  # output resolution factor: 1, 2 or 4
    mask_feather: float = 0.1  # width of the mask's soft edge, as a fraction of the crop size
    color_match: bool = True  # keep the source face's colour and shading (low frequencies)
    mask: str = "template"  # template (soft ellipse) or parsing (facexlib ParseNet: face only)


@dataclass(frozen=True)
class SelectConfig:
    faces: tuple[int, ...] = ()  # restore only these track ids (as `track` shows them); empty: all
    skip_faces: tuple[int, ...] = ()  # leave these track ids as they are (bit for bit)

    def __post_init__(self) -> None:  # TOML gives lists; keep tuples (hashable, comparable)
        for name in ("faces", "skip_faces"):
            object.__setattr__(self, name, tuple(int(i) for i in getattr(self, name)))


@dataclass(frozen=True)
class PipelineConfig:
    queue_size: int = 16  # frames held between two stages (bounds memory)
    progress: bool = True  # progress bar on stderr when it is a terminal
    # long films run in resumable segments of about this length; 0: off
    segment_seconds: float = 60.0
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
    register: RegisterConfig = field(default_factory=RegisterConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    composite: CompositeConfig = field(default_factory=CompositeConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
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
        ("--encoder", cfg.encode.encoder, ENCODERS),
        ("--detector", cfg.detect.backend, DETECTORS),
        ("--precision", cfg.model.precision, PRECISIONS),
        ("--upscale", cfg.composite.upscale, (1, 2, 4)),
        ("--mask", cfg.composite.mask, MASKS),
    ]
    for option, value, choices in checks:
        if value not in choices:
            allowed = ", ".join(str(c) for c in choices)
            raise InputError(f"{option} {value!r} is not valid: choose one of {allowed}")
    if cfg.encode.encoder == "pyav" and cfg.encode.codec not in CODECS:  # ffmpeg: any name
        raise InputError(f"--codec {cfg.encode.codec!r} is not valid: choose one of "
                         f"{', '.join(CODECS)}, or --encoder ffmpeg for the system ffmpeg's")
    if cfg.composite.strength is not None and not 0.0 <= cfg.composite.strength <= 1.0:
        raise InputError(f"--strength {cfg.composite.strength} is not valid: give 0 to 1")
    score = cfg.detect.score_threshold
    if score is not None and not 0.0 <= score <= 1.0:
        raise InputError(f"--score-threshold {score:g} is not valid: give 0 to 1")
    if cfg.encode.crf is not None and not 0 <= cfg.encode.crf <= 63:
        raise InputError(f"--crf {cfg.encode.crf} is not valid: give 0 to 63")
    for option, value in (("--max-faces", cfg.track.max_faces),
                          ("--min-face-size", cfg.detect.min_face_size),
                          ("--batch-size", cfg.model.batch_size),
                          ("detect.batch_size", cfg.detect.batch_size)):
        if value < 0:
            raise InputError(f"{option} {value} is not valid: give 0 or more")
    if cfg.pipeline.segment_seconds < 0:
        raise InputError(f"--segment-seconds {cfg.pipeline.segment_seconds:g} is not valid: "
                         "give 0 (no segments) or more")
    for option, ids in (("--faces", cfg.select.faces), ("--skip-faces", cfg.select.skip_faces)):
        if any(i < 1 for i in ids):
            raise InputError(f"{option} {','.join(map(str, ids))} is not valid: give track ids "
                             "(1, 2, ...) as `gpenvideo track` or `gpenvideo preview` show them")
    both = sorted(set(cfg.select.faces) & set(cfg.select.skip_faces))
    if both:
        raise InputError(f"--faces and --skip-faces both name track {','.join(map(str, both))}: "
                         "give each track to one of them only")
    if cfg.pipeline.threads < 0:
        raise InputError(f"--threads {cfg.pipeline.threads} is not valid: give 0 (from the "
                         "cores) or more")
    if cfg.track.smoothing_window < 1 or cfg.track.smoothing_window % 2 == 0:
        raise InputError("track.smoothing_window must be an odd number >= 1")
    if not 0.0 < cfg.track.smoothing_cutoff <= 1.0:
        raise InputError("track.smoothing_cutoff must be above 0 and at most 1")
    reg = cfg.register
    if reg.window < 1 or reg.window % 2 == 0:
        raise InputError("register.window must be an odd number >= 1")
    if reg.size < 32:
        raise InputError("register.size must be at least 32")
    if not 0.0 <= reg.min_response < reg.full_response <= 1.0:
        raise InputError("register.min_response must be below register.full_response (0..1)")
    if cfg.track.ramp_frames < 0 or cfg.track.hold_frames < 0:
        raise InputError("track.ramp_frames and track.hold_frames must be 0 or more")
    return cfg


def load_config(path: str | Path | None = None) -> RestoreConfig:
    """Load a TOML config whose sections mirror RestoreConfig's fields; missing keys keep defaults.

    Path settings (PATH_KEYS: [model] weights and weights_dir) that are relative are taken
    relative to the config file's folder, as the entries of a list of files are, and `~` is
    expanded. Raises InputError (naming the file and key) for unreadable files, unknown
    sections or keys, values of the wrong type or range, and a path setting naming no file
    (weights) or no folder (weights_dir).
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
        types = {f.name: f.type for f in dataclasses.fields(getattr(cfg, section))}
        for key, value in values.items():
            if key not in types:
                raise InputError(f"{path}: unknown key {key!r} in [{section}]")
            if not _has_type(value, types[key]):
                raise InputError(f"{path}: [{section}] {key} = {value!r} is not valid: give "
                                 f"{_type_words(types[key])}")
            if isinstance(value, int) and types[key].split("|")[0].strip() == "float":
                values[key] = float(value)  # `strength = 1`: the same settings as 1.0
            if (section, key) in PATH_KEYS:
                values[key] = _config_path(path, section, key, value)
        cfg = cfg.replace(section, **values)
    try:
        return validate(cfg)
    except InputError as exc:
        raise InputError(f"{path}: {_file_words(str(exc), cfg)}") from exc


# the settings that name a file or folder: (section, key) -> what it must be ("file", "folder")
PATH_KEYS = {("model", "weights"): "file", ("model", "weights_dir"): "folder"}


def _config_path(config: Path, section: str, key: str, value: str) -> str:
    """The path setting `[section] key = value` of the config file `config`, absolute (so the
    settings digest does not depend on the current folder): relative to the config's folder
    when relative, `~` expanded. Raises InputError naming the config and the key when it names
    no file (or folder, as PATH_KEYS says)."""
    given = Path(value).expanduser()
    resolved = (config.parent / given).resolve()
    kind = PATH_KEYS[(section, key)]
    if not (resolved.is_file() if kind == "file" else resolved.is_dir()):
        where = "" if given.is_absolute() else f" ({resolved}, relative to the config's folder)"
        raise InputError(f"{config}: [{section}] {key} = {value!r}: no such {kind}{where}; "
                         "fix the path in the config")
    return str(resolved)


def _has_type(value: Any, annotation: str) -> bool:
    """Whether a TOML value fits a field annotated `annotation` (the dataclass's annotation
    text: int, float, bool, str, `X | None`, `tuple[int, ...]`). An int is a float; a bool is
    neither an int nor a float; None is never written in TOML (leave the key out)."""
    scalars = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,)}
    for kind in (k.strip() for k in annotation.split("|") if k.strip() != "None"):
        if kind.startswith("tuple["):
            item = kind[len("tuple["):].split(",")[0].strip()
            if isinstance(value, list) and all(_has_type(v, item) for v in value):
                return True
        elif isinstance(value, scalars.get(kind, ())) and (
                kind == "bool" or not isinstance(value, bool)):
            return True
    return False


def _type_words(annotation: str) -> str:
    """`int` -> 'a whole number', `tuple[int, ...]` -> 'a list of whole numbers, e.g. [1, 3]'."""
    words = {"int": "a whole number", "float": "a number", "bool": "true or false",
             "str": "a quoted string"}
    kinds = [k.strip() for k in annotation.split("|") if k.strip() != "None"]
    text = " or ".join("a list of whole numbers, e.g. [1, 3]" if k.startswith("tuple[")
                       else words.get(k, k) for k in kinds)
    return text + (" (or leave the key out for the default)" if "None" in annotation else "")


def _file_words(message: str, cfg: RestoreConfig) -> str:
    """A validate() message about `--option value` reworded for a config file: the option
    named as its [section] key, since the value came from the file."""
    for option in OPTIONS:
        flag = f"--{option.name} "
        if message.startswith(flag):
            return f"[{option.section}] {option.key} = " + message[len(flag):]
    return message


@dataclass(frozen=True)
class Option:
    """One setting of the restore and track commands, for the command line and the library's
    keyword options alike (cli.py and api.py are built from OPTIONS); its default is the config
    dataclass's."""

    name: str  # the long option without dashes, e.g. "segment-seconds" (keyword: segment_seconds)
    section: str  # the RestoreConfig field it sets, e.g. "pipeline"
    key: str  # the field of that section, e.g. "segment_seconds"
    # int, count (int >= 0), float, str, path, choice, flag, negated-flag, bool, ids (track
    # ids: "1,3" on the command line, a tuple of ints in the library)
    kind: str
    help: str
    choices: tuple = ()  # the allowed values (kind "choice"); int choices stay ints
    commands: tuple[str, ...] = ("restore",)  # the commands that take it (restore, track, preview)

    @property
    def keyword(self) -> str:
        """The library's keyword for it (api.restore_video): the long option in snake_case."""
        return self.name.replace("-", "_")


ANY = ("restore", "track", "preview")  # commands of an Option
MODELLED = ("restore", "preview")  # the commands that run the model

OPTIONS = (
    Option("deinterlace", "decode", "deinterlace", "choice",
           "deinterlace with bwdif: auto (frames flagged interlaced), on, off",
           DEINTERLACE_MODES, commands=ANY),
    Option("codec", "encode", "codec", "str",
           f"video encoder: {', '.join(CODECS)} (default auto: NVENC where it works, else "
           "libx264); with --encoder ffmpeg any encoder that ffmpeg has"),
    Option("encoder", "encode", "encoder", "choice",
           "pyav: PyAV's encoders (default); ffmpeg: pipe the frames to the system ffmpeg, for "
           "encoders PyAV lacks (h264_vaapi, hevc_qsv, h264_amf ...); needs pip install "
           "'gpenvideo[ffmpeg]'", ENCODERS),
    Option("ffmpeg-args", "encode", "ffmpeg_args", "str",
           'extra ffmpeg output options for --encoder ffmpeg, e.g. "-b:v 4M"'),
    Option("crf", "encode", "crf", "int", "encoder quality, lower is better (codec default)"),
    Option("preset", "encode", "preset", "str", "encoder speed preset (codec default)"),
    Option("no-audio", "encode", "audio", "negated-flag", "leave audio and subtitles out"),
    Option("model", "model", "model", "choice", "GPEN model (default gpen-bfr-2048)", MODELS,
           commands=ANY),
    Option("weights", "model", "weights", "path",
           "any GPEN checkpoint (overrides --model)", commands=ANY),
    Option("precision", "model", "precision", "choice",
           "auto (fp16 on CUDA), fp32, fp16, bf16", PRECISIONS, commands=MODELLED),
    Option("batch-size", "model", "batch_size", "count",
           "faces per GPEN batch (default 0: 1 on a CPU, from the GPU's memory)",
           commands=MODELLED),
    Option("compile", "model", "compile", "flag", "torch.compile the network", commands=MODELLED),
    Option("threads", "pipeline", "threads", "count",
           "CPU threads for the models and OpenCV (default 0: the cores there are; the output "
           "is the same for any N)", commands=MODELLED),
    Option("strength", "composite", "strength", "float",
           "share of the restored face, 0-1 (default: the model's, 0.8 for gpen-bfr-2048, 1 for "
           "the other models and for --weights)"),
    Option("faces", "select", "faces", "ids",
           "restore only these tracks, e.g. 1,3 (ids as `gpenvideo track` shows them); the "
           "others pass through untouched (preview: needs --tracks)", commands=MODELLED),
    Option("skip-faces", "select", "skip_faces", "ids",
           "leave these tracks untouched, e.g. 2 (preview: needs --tracks)", commands=MODELLED),
    Option("upscale", "composite", "upscale", "choice",
           "output at N times the size: Lanczos background, faces from the model's full "
           "resolution (default 1)", (1, 2, 4), commands=MODELLED),
    Option("no-color-match", "composite", "color_match", "negated-flag",
           "keep GPEN's own face colours instead of the source's", commands=MODELLED),
    Option("mask", "composite", "mask", "choice",
           "template: a soft ellipse (default); parsing: the face's own outline from "
           "facexlib's ParseNet, hair and hands left as they were", MASKS, commands=MODELLED),
    Option("detector", "detect", "backend", "choice",
           "face detector (default auto: retinaface on a CUDA device when facexlib and its "
           "weights are there, else yunet)", DETECTORS, commands=ANY),
    Option("min-face-size", "detect", "min_face_size", "count",
           "ignore faces smaller than this (pixels)", commands=ANY),
    Option("score-threshold", "detect", "score_threshold", "float",
           "minimum detector score, 0-1 (default 0.6 yunet, 0.9 retinaface)", commands=ANY),
    Option("max-faces", "track", "max_faces", "count",
           "restore at most N faces per frame (largest; default 0: all)", commands=ANY),
    Option("weights-dir", "model", "weights_dir", "path",
           "folder searched first for model files", commands=ANY),
    Option("device", "model", "device", "str", "auto, cpu, cuda or cuda:N (default auto)",
           commands=ANY),
    Option("segment-seconds", "pipeline", "segment_seconds", "float",
           "process long films in resumable pieces of about this many seconds "
           "(default 60; 0: in one piece)"),
    Option("resume", "pipeline", "resume", "bool",
           "go on from the finished segments of an interrupted run (default: on)"),
)


def apply_options(cfg: RestoreConfig, values: dict[str, Any]) -> RestoreConfig:
    """`cfg` with OPTIONS set from `values` (keyword -> value; None and absent leave the
    config's value; a flag sets its field when true). Returns it validated; raises InputError
    for a value out of range, TypeError naming an unknown keyword and the valid ones."""
    by_keyword = {o.keyword: o for o in OPTIONS}
    unknown = sorted(set(values) - set(by_keyword))
    if unknown:
        raise TypeError(f"unknown option {unknown[0]!r}; valid options: "
                        + ", ".join(sorted(by_keyword)))
    for keyword, value in values.items():
        option = by_keyword[keyword]
        if value is None:
            continue
        if option.kind == "flag":
            if value:
                cfg = cfg.replace(option.section, **{option.key: True})
        elif option.kind == "negated-flag":
            if value:
                cfg = cfg.replace(option.section, **{option.key: False})
        else:
            cfg = cfg.replace(option.section,
                              **{option.key: str(value) if option.kind == "path" else value})
    return validate(cfg)
