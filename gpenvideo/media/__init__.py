"""Everything that touches FFmpeg (through PyAV): decoding, encoding, colour conversion, planes,
probing and scanning, segment concatenation, audio and subtitle copy, and the pipe to a system
ffmpeg. The only package that imports `av`; no av object leaves it (Frame.source is an opaque
handle only this package reads)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..config import EncodeConfig
from ..frames import VideoInfo
from .decode import Decoder, check_input_path
from .encode import (
    Encoder,
    check_container,
    check_encoder,
    container_for,
    default_output_suffix,
    resolve_encode,
)
from .ffmpeg_pipe import FfmpegEncoder, check_ffmpeg, ffmpeg_codec
from .remux import StreamIndex, concatenate, scan, segment_container

__all__ = ["Decoder", "Encoder", "FfmpegEncoder", "StreamIndex", "check_container",
           "check_encode", "check_input_path", "concatenate", "container_for",
           "default_output_suffix", "open_encoder", "resolve", "scan", "segment_container"]


def check_encode(cfg: EncodeConfig) -> None:
    """Refuse an encoder that cannot run here (PyAV's, or the system ffmpeg and its encoder)
    before anything is decoded. Raises InputError naming the remedy."""
    if cfg.encoder == "ffmpeg":
        check_ffmpeg(cfg)
    else:
        check_encoder(cfg)


def resolve(cfg: EncodeConfig, info: VideoInfo, target: Path, size: tuple[int, int]
            ) -> tuple[EncodeConfig, list[str]]:
    """`cfg` with --codec auto decided for this source and output (once, for every segment),
    and the notes about the choice."""
    if cfg.encoder == "pyav":
        return resolve_encode(cfg, info, container_for(target), size)
    return dataclasses.replace(cfg, codec=ffmpeg_codec(cfg)), []  # ffmpeg: any name


def open_encoder(path: Path, fmt: str, info: VideoInfo, cfg: EncodeConfig,
                 size: tuple[int, int], source: Decoder | None = None) -> Encoder | FfmpegEncoder:
    """The encoder cfg.encoder names, writing `path` (muxer `fmt`). source: the Decoder of the
    frames, whose demuxer hands on the audio to copy (PyAV path; the ffmpeg path copies the
    audio from a demuxer of its own). Use as a context manager."""
    if cfg.encoder == "pyav":
        return Encoder(path, fmt, info, cfg, size, source=source)
    return FfmpegEncoder(path, fmt, info, cfg, size)
