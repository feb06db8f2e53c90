"""Packet-level work on whole files, nothing decoded: the scan of a video stream's packet
timestamps and keyframes (for cutting a film into segments), the container a segment is written
in, and the stream-copied concatenation of finished segments with the source's audio."""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from ..config import EncodeConfig
from ..errors import InputError
from ..frames import VideoInfo
from .decode import video_streams
from .encode import Encoder, container_holds

# Segments are written as QuickTime (exact time bases, every codec we encode but FFV1) or, for a
# codec QuickTime cannot hold, as MP4 (the same muxer family: time bases kept exactly).
SEGMENT_CONTAINERS = (("mov", ".mov"), ("mp4", ".mp4"))


@dataclass(frozen=True)
class StreamIndex:
    """Presentation timestamps of a video stream's packets, sorted, and which are keyframes."""

    pts: list[int]
    keyframes: list[int]
    time_base: Fraction


def scan(path: Path) -> StreamIndex | None:
    """Read the first video stream's packet headers (no decoding). None when some packet has no
    timestamp (such files are processed in one piece). Raises InputError when the packets
    cannot be read."""
    pts: list[int] = []
    keys: list[int] = []
    try:
        with av.open(str(path), metadata_errors="replace") as container:
            stream = video_streams(container)[0]
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                if packet.pts is None:
                    return None
                pts.append(packet.pts)
                if packet.is_keyframe:
                    keys.append(packet.pts)
            time_base = Fraction(stream.time_base)
    except (av.FFmpegError, IndexError) as exc:
        raise InputError(f"{path}: cannot read the video packets ({exc}); "
                         "process it with --segment-seconds 0") from exc
    pts.sort()
    keys.sort()
    return StreamIndex(pts, keys, time_base)


def segment_container(codec: str) -> tuple[str, str]:
    """(muxer name, file suffix) of the files a film's segments are written in for `codec` (an
    encoder name of config.CODECS): the first of SEGMENT_CONTAINERS that holds it."""
    try:
        name = av.Codec(codec, "w").canonical_name
    except ValueError:  # an encoder only the system ffmpeg has (--encoder ffmpeg): QuickTime
        return SEGMENT_CONTAINERS[0]
    for fmt, suffix in SEGMENT_CONTAINERS:
        with av.open(os.devnull, mode="w", format=fmt) as probe:
            if container_holds(probe, name):
                return fmt, suffix
    raise InputError(f"--codec {codec}: no segment container holds it; "
                     "run with --segment-seconds 0")


def concatenate(files: list[Path], path: Path, fmt: str, info: VideoInfo,
                cfg: EncodeConfig) -> list[str]:
    """Stream-copy the video of `files` (finished segments, in order) into `path` (muxer
    `fmt`), with the source's (info.path) audio and subtitles copied once when cfg.audio is set.
    Returns the encoder's notes (streams transcoded or left out)."""
    with av.open(str(files[0])) as first:
        template = first.streams.video[0]
        with Encoder(path, fmt, info, cfg, video_template=template) as encoder:
            for name in files:
                with av.open(str(name)) as piece:
                    for packet in piece.demux(piece.streams.video[0]):
                        if packet.size:
                            encoder.write_packet(packet)
    return encoder.notes
