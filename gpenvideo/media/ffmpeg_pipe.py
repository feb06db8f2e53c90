"""Encode through a system `ffmpeg` (`--encoder ffmpeg`), for encoders PyAV's wheel lacks.

    frames ─▶ Encoder's pictures (rawvideo, exact pts) ─▶ NUT on ffmpeg's stdin ─▶ ffmpeg
           ─▶ video alone (MOV beside the output) ─▶ Encoder's muxing with the audio copy ─▶ file

The pictures are built exactly as the PyAV path builds them (encoder.Encoder: the decoder's own
planes plus the changed pixels, in the output pixel format) and written as rawvideo into a NUT
stream in the source's time base, so every pts survives; ffmpeg encodes them with the user's
--codec (h264_vaapi, hevc_qsv, h264_amf ... whatever the installed ffmpeg has) without touching
the timing (`-fps_mode passthrough`, `-copyts`, the input's time base) into a MOV file, which
keeps B-frame timestamps exactly. That video is then muxed by encoder.Encoder as a finished
segment is, each packet given its source frame's duration, in the source's time base, with the
source's audio and subtitles copied bit for bit by the very code the PyAV path uses: the same
timestamps, durations, tags, rotation and audio guarantees. ffmpeg-python builds the command.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import re
import shlex
import shutil
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av

from ..config import EncodeConfig
from ..errors import EncodeError, InputError
from ..frames import Frame, VideoInfo
from .encode import (
    BITEXACT,
    CODEC_DEFAULTS,
    PLANAR_YUV,
    Encoder,
    choose_pix_fmt,
    output_color_range,
    padded_size,
)

log = logging.getLogger(__name__)

INSTALL_HINT = ("install ffmpeg (Debian/Ubuntu: apt-get install ffmpeg) or use --encoder pyav")
# Encoder families PyAV has no defaults for: the option that takes --crf, and whether the
# family takes --preset as it is (the suffix of the encoder's name picks the family).
QUALITY_OPTIONS = {"_vaapi": ("qp", False), "_qsv": ("global_quality", True),
                   "_amf": ("qp_i", False), "_videotoolbox": ("q:v", False)}
# The VAAPI device used unless --ffmpeg-args names one (-vaapi_device or -init_hw_device)
VAAPI_DEVICE = "/dev/dri/renderD128"
# The file ffmpeg writes the video to: MOV keeps B-frame timestamps exactly (NUT shifts them)
VIDEO_FORMAT = "mov"
PARTIAL_NAME = re.compile(r"^\.(?P<stem>.+)\.partial-\d+(?P<suffix>\.[^.]*)?$")


def ffmpeg_binary() -> str:
    """The path of the `ffmpeg` on PATH. Raises InputError saying what to install when none."""
    found = shutil.which("ffmpeg")
    if found is None:
        raise InputError(f"--encoder ffmpeg: no ffmpeg program found on PATH; {INSTALL_HINT}")
    return found


def check_ffmpeg(cfg: EncodeConfig) -> str:
    """Check what `--encoder ffmpeg --codec NAME` needs: ffmpeg-python, an ffmpeg program, an
    encoder NAME in it. Returns the program's path; raises InputError saying what to do."""
    try:
        import ffmpeg  # noqa: F401 - builds the command line
    except ImportError:
        raise InputError("--encoder ffmpeg needs ffmpeg-python: "
                         "pip install 'gpenvideo[ffmpeg]'") from None
    binary = ffmpeg_binary()
    codec = ffmpeg_codec(cfg)
    if not has_encoder(binary, codec):
        raise InputError(f"--codec {codec}: the ffmpeg at {binary} has no such encoder; "
                         "`ffmpeg -encoders` lists those it has")
    return binary


def ffmpeg_codec(cfg: EncodeConfig) -> str:
    """The encoder ffmpeg runs for cfg.codec ("auto": libx264, which every ffmpeg build with
    GPL parts has; name a hardware encoder to use one)."""
    return "libx264" if cfg.codec == "auto" else cfg.codec


def has_encoder(binary: str, name: str) -> bool:
    """Whether the ffmpeg at `binary` has an encoder called `name` (asks `ffmpeg -h encoder=`)."""
    result = subprocess.run([binary, "-hide_banner", "-h", f"encoder={name}"],
                            capture_output=True, text=True, errors="replace", check=False)
    return result.returncode == 0 and "is not recognized" not in result.stdout + result.stderr


def ffmpeg_major(binary: str) -> int:
    """The major version of the ffmpeg at `binary` (99 for a git build, whose version is a
    commit: taken as recent)."""
    result = subprocess.run([binary, "-hide_banner", "-version"], capture_output=True,
                            text=True, errors="replace", check=False)
    match = re.match(r"ffmpeg version n?(\d+)\.", result.stdout)
    return int(match.group(1)) if match else 99


def user_name(path: Path) -> str:
    """The name the user asked for, from the temporary name the pipeline writes to
    (`.NAME.partial-PID.EXT` -> `NAME.EXT`); other names as they are."""
    match = PARTIAL_NAME.match(path.name)
    return f"{match['stem']}{match['suffix'] or ''}" if match else path.name


def output_pix_fmt(cfg: EncodeConfig, info: VideoInfo) -> str:
    """The pixel format of the pictures piped to ffmpeg: what the PyAV path would encode for a
    codec PyAV knows (so both paths encode the same pictures); else cfg.pix_fmt where it is
    planar YUV, else the source's own planar format; ffmpeg converts where its encoder needs
    another."""
    try:
        return choose_pix_fmt(cfg.codec, info.bit_depth, info.chroma, cfg.pix_fmt)
    except (av.FFmpegError, ValueError):  # PyAV lacks the codec
        if cfg.pix_fmt in PLANAR_YUV:
            return cfg.pix_fmt
        depth = 8 if info.bit_depth <= 8 else (10 if info.bit_depth <= 10 else 12)
        name = f"yuv{info.chroma}p" + ("" if depth == 8 else f"{depth}le")
        return name if name in PLANAR_YUV else "yuv420p"


def quality_options(cfg: EncodeConfig) -> dict[str, str]:
    """ffmpeg output options for --crf and --preset: the PyAV path's for the codecs it knows
    (encoder.CODEC_DEFAULTS), the matching option of a hardware family (QUALITY_OPTIONS), else
    none, with a warning naming --ffmpeg-args when the user gave one."""
    defaults = CODEC_DEFAULTS.get(cfg.codec)
    if defaults is not None:
        options = dict(defaults.extra)
        crf = cfg.crf if cfg.crf is not None else defaults.crf
        if defaults.crf_option and crf is not None:
            options[defaults.crf_option] = str(crf)
        preset = cfg.preset or defaults.preset
        if preset and defaults.preset:
            options["preset"] = preset
        quality, takes_preset = defaults.crf_option, defaults.preset is not None
    else:
        family = next((v for k, v in QUALITY_OPTIONS.items() if cfg.codec.endswith(k)), None)
        quality, takes_preset = family or (None, False)
        options = {}
        if quality and cfg.crf is not None:
            options[quality] = str(cfg.crf)
        if takes_preset and cfg.preset:
            options["preset"] = cfg.preset
    if cfg.crf is not None and not quality:
        log.warning("--crf is ignored by %s here; give its own option with --ffmpeg-args",
                    cfg.codec)
    if cfg.preset and not takes_preset:
        log.warning("--preset is ignored by %s here; give its own option with --ffmpeg-args",
                    cfg.codec)
    return options


class _PipeWriter(Encoder):
    """encoder.Encoder writing rawvideo pictures in `pix_fmt` to a NUT stream on `pipe`."""

    def __init__(self, pipe: BinaryIO, info: VideoInfo, cfg: EncodeConfig,
                 size: tuple[int, int] | None, pix_fmt: str) -> None:
        self._wanted_pix_fmt, self._codec = pix_fmt, cfg.codec
        raw = dataclasses.replace(cfg, codec="rawvideo", crf=None, preset=None, audio=False,
                                  pix_fmt=None)
        super().__init__(pipe, "nut", info, raw, size)

    def _pix_fmt(self) -> str:
        return self._wanted_pix_fmt

    def _picture_codec(self) -> str:
        return self._codec  # odd 4:2:0 sizes padded as the PyAV path pads them for it


class FfmpegEncoder:
    """Writes one output file through a system ffmpeg; the same interface as encoder.Encoder
    (a context manager; `write(frame)`, `close()`, `notes`).

    ffmpeg encodes the piped pictures into a MOV file beside `path` (`<path>.video.mov`); `close`
    then muxes that video, each packet given its source frame's duration, with the source's
    audio and subtitles into `path` through encoder.Encoder, exactly as the PyAV path muxes a
    finished segment (but in the source's time base), and removes the MOV file (one left by
    a killed run is removed by the next: outputs.remove_stale_partials beside an output,
    segments.WorkFolder.prepare in a work folder; both match it by `path`'s name).
    path: the (temporary) file to write; fmt: its muxer name; info: the source's VideoInfo;
    size: (width, height) of the frames, upright. The source's audio and subtitles are copied
    when cfg.audio is set. Raises InputError when there is no ffmpeg, no ffmpeg-python, or the
    ffmpeg has no encoder named cfg.codec; EncodeError (ffmpeg's last line of errors) when
    ffmpeg fails.
    """

    def __init__(self, path: Path, fmt: str, info: VideoInfo, cfg: EncodeConfig,
                 size: tuple[int, int] | None = None) -> None:
        binary = check_ffmpeg(cfg)
        codec = ffmpeg_codec(cfg)
        self.path, self.fmt, self.info = path, fmt, info
        self.cfg = dataclasses.replace(cfg, codec=codec)
        self.notes: list[str] = []
        self.video = path.with_name(f"{path.name}.video.mov")
        # (first pts, duration) where the source's frame duration changes: few for most films
        self._durations: list[tuple[int, int]] = []
        pix_fmt = output_pix_fmt(self.cfg, info)
        width, height = self._stored_size(size or (info.width, info.height))
        stored = padded_size(codec, pix_fmt, width, height)
        command = self._command(binary, stored, pix_fmt)
        log.debug("running %s", shlex.join(command))
        self._errors = tempfile.TemporaryFile()  # ffmpeg's stderr (a file: never blocks it)
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE,
                                         stdout=subprocess.DEVNULL, stderr=self._errors)
        try:
            self._frames = _PipeWriter(self._process.stdin, info, self.cfg, size, pix_fmt)
            self.notes += self._frames.notes  # an odd size padded for cfg.codec
        except BaseException:
            self._abort()
            raise

    def _stored_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """The (width, height) of the encoded pictures: `size` turned back to the stored
        orientation, as encoder.Encoder writes them."""
        return size[::-1] if self.info.rotation in (90, -90) else size

    def _command(self, binary: str, stored: tuple[int, int], pix_fmt: str) -> list[str]:
        """ffmpeg's command line: NUT pictures on stdin, the video alone into self.video.
        stored: the pictures' (width, height); pix_fmt: theirs."""
        import ffmpeg  # present: check_ffmpeg

        info, cfg = self.info, self.cfg
        options: dict[str, str | int] = {
            "c:v": cfg.codec, **{f"{k}:v": v for k, v in quality_options(cfg).items()},
            "color_range": output_color_range(info, pix_fmt), "colorspace": info.colorspace,
            "color_primaries": info.color_primaries, "color_trc": info.color_trc,
            "enc_time_base:v": -1,  # the input's time base: the source's
            **BITEXACT,  # the MOV file the same bytes every run, as the files PyAV writes
        }
        sar = info.sample_aspect_ratio
        if sar and sar != 1:  # (the pipe does not carry it) as the exact display aspect
            dar = Fraction(sar) * stored[0] / stored[1]
            options["aspect:v"] = f"{dar.numerator}:{dar.denominator}"
        options["fps_mode" if ffmpeg_major(binary) >= 5 else "vsync"] = "passthrough"
        extra = shlex.split(cfg.ffmpeg_args)
        device: tuple[str, ...] = ()
        if cfg.codec.endswith("_vaapi") and not {"-vaapi_device", "-init_hw_device"} & {*extra}:
            device = ("-vaapi_device", VAAPI_DEVICE)  # the pictures uploaded to the GPU
            if not {"-vf", "-filter:v", "-filter_complex"} & {*extra}:
                upload = "p010" if info.bit_depth > 8 else "nv12"
                options["vf"] = f"format={upload},hwupload"
        frames = ffmpeg.input("pipe:0", f="nut")
        output = ffmpeg.output(frames["v:0"], str(self.video), f=VIDEO_FORMAT, copyts=None,
                               **options)
        command = output.global_args("-hide_banner", "-loglevel", "error", "-nostats", "-y",
                                     *device).compile(cmd=binary)
        at = len(command) - command[::-1].index(str(self.video)) - 1
        return command[:at] + extra + command[at:]  # before the file

    def write(self, frame: Frame) -> None:
        """Send one frame (its image as described in frames.Frame) at its own pts."""
        if frame.duration and (not self._durations or self._durations[-1][1] != frame.duration):
            self._durations.append((frame.pts, frame.duration))
        try:
            self._frames.write(frame)
        except (OSError, av.FFmpegError, EncodeError) as exc:
            if self._process.poll() is None and not isinstance(exc, BrokenPipeError):
                raise
            raise self._failure() from exc

    def _duration(self, pts: int) -> int:
        """The source frame duration at `pts` (both in VideoInfo.time_base; 0: unknown)."""
        at = bisect.bisect_right(self._durations, (pts, float("inf"))) - 1
        return self._durations[at][1] if at >= 0 else 0

    def close(self) -> None:
        """Finish the pipe, wait for ffmpeg, mux its video with the source's audio and
        subtitles into `path`. Raises EncodeError if ffmpeg fails."""
        try:
            try:
                self._frames.close()
                self._process.stdin.close()
            except (OSError, av.FFmpegError):
                pass  # ffmpeg stopped reading: its exit status says why
            if self._process.wait() != 0:
                raise self._failure()
            self._errors.close()
            self._mux()
        finally:
            self.video.unlink(missing_ok=True)

    def _mux(self) -> None:
        with av.open(str(self.video)) as video:
            stream = video.streams.video[0]
            with Encoder(self.path, self.fmt, self.info, self.cfg,
                         video_template=stream) as muxer:
                # the source's time base, as the PyAV path writes (MOV may have refined it);
                # packets are rescaled to it when muxed, exactly (a refinement divides it)
                muxer._video.time_base = self.info.time_base
                for packet in video.demux(stream):
                    if packet.size == 0:
                        continue
                    scale = Fraction(packet.time_base) / self.info.time_base
                    if packet.pts is not None and (duration := self._duration(
                            round(packet.pts * scale))):
                        packet.duration = round(duration / scale)
                    muxer.write_packet(packet)
            self.notes += muxer.notes

    def _failure(self) -> EncodeError:
        """ffmpeg's error as one line naming the user's file (ffmpeg is stopped first)."""
        self._abort()
        self._errors.seek(0)
        lines = self._errors.read().decode("utf-8", "replace").splitlines()
        self._errors.close()
        # the first line says the cause; those after it its consequences ("Conversion failed")
        first = next((line.strip() for line in lines if line.strip()), "no message")
        first = re.sub(r"^\[(\S+) @ 0x[0-9a-f]+\] ", r"\1: ", first)  # [libx264 @ 0x5f..]
        first = first.replace(str(self.video), user_name(self.path))
        return EncodeError(f"{user_name(self.path)}: ffmpeg failed to encode with "
                           f"{self.cfg.codec} ({first}); try another --codec, or --encoder pyav")

    def _abort(self) -> None:
        """Stop ffmpeg (if running), close the pipe, remove the video file."""
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        frames = getattr(self, "_frames", None)
        if frames is not None:
            try:
                frames._close_containers()
            except (OSError, av.FFmpegError):
                pass
        try:
            self._process.stdin.close()
        except OSError:
            pass
        self.video.unlink(missing_ok=True)

    def __enter__(self) -> FfmpegEncoder:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()
            if not self._errors.closed:
                self._errors.close()
