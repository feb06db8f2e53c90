"""Encode Frames with PyAV into the output file and copy the source's other streams into it.

The video keeps the source's timestamps, time base, frame durations, colour tags, sample aspect
ratio, rotation metadata and container tags. Audio and subtitle packets are copied bit for bit
from a second demuxer of the source and interleaved by time; a stream the output container
cannot hold is transcoded (audio to AAC) or left out, with a warning either way. The packets
come from the Decoder that reads the frames (one demuxer for the whole run), or, for the
concatenation of segments, from a demuxer of the source opened here.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

from ..config import EncodeConfig
from ..errors import EncodeError, InputError
from ..frames import Frame, VideoInfo
from ..threads import available_cores
from .decode import RANGE_FULL, Decoder, picture_frame, plane_array, sws_colorspace, sws_range
from .heap import deterministic_heap

log = logging.getLogger(__name__)

# Containers whose muxers keep exact timestamps and hold modern codecs with copied audio.
MODERN_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
FALLBACK_SUFFIX = ".mkv"
# Muxer options of every file written: no random identifiers (Matroska's segment and track UIDs)
# and no library version, so the same input and settings give the same bytes
BITEXACT = {"fflags": "+bitexact"}


def movie_timescale(fmt: str, time_base: Fraction) -> dict[str, str]:
    """The MP4/MOV muxer option that keeps a late first frame exactly where the source has it.
    The muxer writes the video track in 1/den of the source's time base (doubled up to 10000
    and more), but the edit list that delays a first frame past 0 counts in the movie's
    timescale, 1/1000 s by default: a first pts of 1001/30000 s came out 990/30000, 0.37 ms
    early. With the movie timescale the track's, the delay is exact. {} for other muxers."""
    if fmt not in ("mp4", "mov") or not time_base:
        return {}
    scale = Fraction(time_base).denominator
    while scale < 10000:  # as the muxer chooses the video track's timescale
        scale *= 2
    return {"movie_timescale": str(scale)}


@dataclass(frozen=True)
class CodecDefaults:
    crf_option: str | None  # the encoder option that takes --crf (None: no quality scale)
    crf: int | None  # default quality
    preset: str | None  # default speed preset
    extra: tuple[tuple[str, str], ...] = ()  # other options always set


CODEC_DEFAULTS = {
    "libx264": CodecDefaults("crf", 18, "medium"),
    "libx265": CodecDefaults("crf", 20, "medium", (("x265-params", "log-level=error"),)),
    "h264_nvenc": CodecDefaults("cq", 19, "p5", (("rc", "vbr"),)),
    "hevc_nvenc": CodecDefaults("cq", 21, "p5", (("rc", "vbr"),)),
    "libsvtav1": CodecDefaults("crf", 28, "8"),
    "ffv1": CodecDefaults(None, None, None, (("level", "3"), ("slicecrc", "1"))),
    "prores_ks": CodecDefaults(None, None, None, (("profile", "3"),)),  # 3: ProRes 422 HQ
    "rawvideo": CodecDefaults(None, None, None),  # the pictures piped to ffmpeg (ffmpeg_pipe)
}

STANDARD_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1",
                    8: "7.1"}
AAC_FRAME_SIZE = 1024  # samples per AAC frame
# Seconds that copied packets may run ahead of the video in the interleaving.
INTERLEAVE_AHEAD = 0.5


def container_for(path: Path) -> str | None:
    """FFmpeg muxer name for an output suffix among MODERN_CONTAINERS, else None."""
    return MODERN_CONTAINERS.get(path.suffix.lower())


def check_container(cfg: EncodeConfig, target: Path) -> None:
    """Refuse, before any work, a --codec the output's container cannot hold (prores_ks in an
    .mp4, ffv1 in a .mov ...), naming the user's output and the containers that can hold it.
    --codec auto is decided per container later; --encoder ffmpeg takes any name. Raises
    InputError."""
    fmt = container_for(target)
    if cfg.encoder != "pyav" or cfg.codec == "auto" or fmt is None:
        return
    try:
        codec = av.Codec(cfg.codec, "w").canonical_name
    except (av.FFmpegError, ValueError):
        return  # check_encoder names an unknown encoder
    able = [suffix for suffix, name in MODERN_CONTAINERS.items()
            if name != fmt and codec in _supported_codecs(name)]
    if codec not in _supported_codecs(fmt):
        names = ", ".join(able[:-1]) + (" or " if len(able) > 1 else "") + able[-1] if able else ""
        remedy = f"name the output {names}" if able else "choose another --codec"
        raise InputError(f"{target}: the {target.suffix} container cannot hold {cfg.codec} "
                         f"video; {remedy}")


def _supported_codecs(fmt: str) -> frozenset[str]:
    """The codecs FFmpeg's muxer `fmt` can hold (nothing is written), less those it lists but
    refuses when writing (REFUSED_CODECS)."""
    with av.open(io.BytesIO(), mode="w", format=fmt) as out:
        return frozenset(out.supported_codecs) - REFUSED_CODECS.get(fmt, frozenset())


def default_output_suffix(source: Path) -> str:
    """Suffix of the default output: the source's own where it is a modern container, else .mkv."""
    suffix = source.suffix.lower()
    return suffix if suffix in MODERN_CONTAINERS else FALLBACK_SUFFIX


NVENC_CODECS = ("h264_nvenc", "hevc_nvenc")
# Encoders whose 4:2:0 / 4:2:2 pictures must be a whole number of chroma samples wide and high
# (H.264 and HEVC can crop only whole chroma samples): odd sizes are padded by one pixel.
WHOLE_CHROMA_CODECS = ("libx264", "libx265", *NVENC_CODECS)
# Source codecs of editing intermediates: in a .mov they are restored to ProRes.
INTERMEDIATE_CODECS = ("prores", "dnxhd", "cfhd")
# encoders whose bitstream carries the pixel aspect ratio (an .mkv keeps it through them)
SAR_IN_PICTURE = ("libx264", "libx265", *NVENC_CODECS)
PROBE_SIZE = 256  # width and height of the picture an encoder is opened on to see that it works


def probe_encoder(codec: str, pix_fmt: str = "yuv420p",
                  size: tuple[int, int] = (PROBE_SIZE, PROBE_SIZE)) -> str | None:
    """Open `codec` once on a `size` (width, height) picture. Returns None when it works, else
    the reason."""
    try:
        cc = av.CodecContext.create(codec, "w")
        cc.width, cc.height = padded_size(codec, pix_fmt, *size)
        cc.pix_fmt = pix_fmt
        cc.time_base = Fraction(1, 25)
        cc.open()
    except (av.FFmpegError, ValueError) as exc:  # no such encoder, no GPU, no driver ...
        return str(getattr(exc, "strerror", None) or exc)
    return None


def check_encoder(cfg: EncodeConfig) -> None:
    """Refuse an encoder that cannot run here before any work starts (NVENC without an NVIDIA
    video encoder: datacenter GPUs such as the H100 and A100 have none). Raises InputError."""
    if cfg.codec == "auto":
        return
    try:
        av.Codec(cfg.codec, "w")
    except (av.FFmpegError, ValueError):
        raise InputError(f"--codec {cfg.codec}: this FFmpeg has no such encoder; use "
                         "--codec auto or libx264") from None
    if cfg.codec in NVENC_CODECS:
        reason = probe_encoder(cfg.codec)
        if reason is not None:
            cpu = "libx264" if cfg.codec == "h264_nvenc" else "libx265"
            raise InputError(f"--codec {cfg.codec}: no NVENC video encoder works on this machine "
                             f"({reason}; datacenter GPUs such as the H100 have none); use "
                             f"--codec {cpu}, or --codec auto to take NVENC only where it works")


def resolve_encode(cfg: EncodeConfig, info: VideoInfo, fmt: str | None,
                   size: tuple[int, int] | None = None) -> tuple[EncodeConfig, list[str]]:
    """The encode settings with `auto` decided for this source, output container `fmt` (muxer
    name) and output size (width, height; default the source's), and notes saying what was
    chosen where it differs from the source.

    auto: NVENC where it opens (H.264, or HEVC Main 10 for deeper sources); on the CPU, ProRes
    422 HQ for a 4:2:2 or intermediate-codec source written to .mov, else libx264, in 8-bit
    4:2:0 (High profile: plays everywhere) for 4:2:2 and 4:4:4 sources. An explicit codec
    follows the source's depth and chroma as far as it can. Raises InputError (check_encoder).
    """
    check_encoder(cfg)
    if cfg.codec != "auto":
        return cfg, []
    deep = info.bit_depth > 8
    nvenc = "hevc_nvenc" if deep else "h264_nvenc"
    # at the film's own size: NVENC has a minimum (about 145 x 49) and a maximum size
    if probe_encoder(nvenc, "p010le" if deep else "yuv420p",
                     size or (info.width, info.height)) is None:
        return dataclasses.replace(cfg, codec=nvenc), []
    pro = info.chroma == "422" or info.codec in INTERMEDIATE_CODECS
    if fmt == "mov" and pro:
        note = (f"the {info.codec} {info.pix_fmt} source is written as ProRes 422 HQ "
                "(prores_ks), which editors and players open; --codec libx264 gives H.264")
        return dataclasses.replace(cfg, codec="prores_ks"), [note]
    if info.chroma != "420" and cfg.pix_fmt is None and info.pix_fmt not in ("gray", "gray8"):
        prores = ", a .mov output gives ProRes" if pro else ""
        keep = ("--codec libx264 keeps its chroma and depth (High 4:2:2/4:4:4, which many "
                f"players cannot open){prores}" if info.chroma != "411" else
                "--codec ffv1 keeps its 4:1:1 chroma (H.264 cannot store 4:1:1) and, in an .mp4 "
                "output, its pixel aspect ratio")
        note = (f"the {info.pix_fmt} source is written as H.264 4:2:0 8-bit (High profile), "
                f"which every player opens; {keep}")
        return dataclasses.replace(cfg, codec="libx264", pix_fmt="yuv420p"), [note]
    return dataclasses.replace(cfg, codec="libx264"), []


def choose_pix_fmt(codec: str, bit_depth: int, chroma: str, wanted: str | None = None) -> str:
    """Output pixel format following the source's depth and chroma where the codec allows.

    Tries `wanted` if given, then yuv<chroma>p at the source depth, then 4:2:0 at that depth,
    then 8-bit 4:2:0. Raises InputError when `wanted` is not one the codec takes.
    """
    supported = {f.name for f in (av.Codec(codec, "w").video_formats or ())}
    if wanted is not None:
        if wanted not in supported:
            raise InputError(f"encode.pix_fmt {wanted}: {codec} does not take it; choose one of "
                             f"{', '.join(sorted(supported))}")
        return wanted
    depth = 8 if bit_depth <= 8 else (10 if bit_depth <= 10 else 12)
    suffix = "" if depth == 8 else f"{depth}le"
    candidates = [f"yuv{chroma}p{suffix}", f"yuv420p{suffix}"]
    if chroma not in ("420", "422", "444"):  # 4:1:1 (DV): 8-bit only
        candidates = ["yuv411p"] if chroma == "411" and depth == 8 else []
        candidates.append(f"yuv420p{suffix}")
    if depth > 8:
        candidates += ["yuv420p10le", "p010le"]  # NVENC takes 10-bit as p010
        if chroma == "444":
            candidates.append("yuv444p16le")
    candidates += ["yuv420p", "yuv422p10le", "nv12"]  # the last two: ProRes, NVENC
    for name in candidates:
        if name in supported:
            return name
    raise EncodeError(f"encoder {codec} takes none of the pixel formats tried ({candidates})")


# Planar YUV formats whose planes the encoder can patch: chroma subsampling across, down, and
# the numpy type of one sample.
PLANAR_YUV = {f"yuv{c}p{d}": (sx, sy, np.uint8 if not d else np.uint16)
              for c, sx, sy in (("420", 2, 2), ("422", 2, 1), ("444", 1, 1))
              for d in ("", "10le", "12le", "16le")}
PLANAR_YUV["yuv411p"] = (4, 1, np.uint8)  # DV NTSC's 4:1:1 (8-bit only)
RECT_MARGIN = 8  # pixels converted around a changed rectangle and then dropped


class Encoder:
    """Writes one output file. Use as a context manager; `close()` flushes and finalizes.

    path: the (temporary) file to write; fmt: its muxer name; info: the source's VideoInfo;
    size: (width, height) of the frames that will be written, upright (the source's size times
    the upscale factor). With `video_template` (a stream of already encoded video, e.g. a
    finished segment) nothing is encoded: `write_packet` muxes that stream's packets as they are.
    The source's audio and subtitles are copied when cfg.audio is set: from `source`, the
    Decoder of the frames (opened with copy_streams), else from a demuxer of info.path.
    Raises InputError when the container cannot hold the codec, EncodeError when encoding fails.
    """

    def __init__(self, path: Path | BinaryIO, fmt: str, info: VideoInfo, cfg: EncodeConfig,
                 size: tuple[int, int] | None = None,
                 video_template: av.VideoStream | None = None,
                 source: Decoder | None = None) -> None:
        deterministic_heap()  # before libx264 allocates (it reads memory it never wrote)
        self.path = path
        self.info = info
        self.cfg = cfg
        self._durations: dict[int, int] = {}  # pts -> source frame duration, until muxed
        self.notes: list[str] = []  # what was transcoded or left out, for the summary
        width, height = size or (info.width, info.height)
        if info.rotation in (90, -90):  # written in the source's stored orientation
            width, height = height, width
        self._source: av.container.InputContainer | None = None  # opened here for the copies
        self._decoder = source if source is not None and source.copy_streams else None
        self._next_copy: av.Packet | None = None
        if cfg.codec == "auto" and video_template is None:
            self.cfg = cfg = self._resolved(cfg, info, fmt, (width, height))
        # a file object: the pipe to ffmpeg (ffmpeg_pipe)
        self._out = av.open(path if hasattr(path, "write") else str(path), mode="w", format=fmt,
                            options={**BITEXACT, **movie_timescale(fmt, info.time_base)})
        try:
            codec = (video_template.codec_context.name if video_template is not None
                     else av.Codec(cfg.codec, "w").canonical_name)  # a template: any codec
            if not container_holds(self._out, codec):
                raise InputError(f"{path.name}: the {fmt} container cannot hold {cfg.codec} video; "
                                 f"write to a .mkv{'' if fmt == 'mov' else ' or .mov'} file "
                                 "instead")
            if video_template is None:
                self._video = self._add_video_stream(width, height)
            else:
                self._video = self._out.add_stream_from_template(
                    video_template, opaque=not _has_encoder(codec))
                self._video.time_base = video_template.time_base
                self._tag_video_stream(self._video)
            self._copies: dict[int, _CopiedStream] = {}
            if cfg.audio:
                self._add_copied_streams()
            self._out.metadata.update({k: v for k, v in info.metadata.items()
                                       if k.lower() not in ("encoder", "major_brand",
                                                            "minor_version",
                                                            "compatible_brands")})
            self._pending = self._copied_packets()
        except BaseException:
            self._close_containers()
            raise
        self._space = sws_colorspace(info.colorspace, info.height)
        self._dst_range = sws_range(self._video.codec_context.color_range,
                                    self._video.codec_context.pix_fmt)
        self._deep = info.bit_depth > 8
        self._size = (width, height)  # stored orientation, before any padding

    def _resolved(self, cfg: EncodeConfig, info: VideoInfo, fmt: str,
                  size: tuple[int, int]) -> EncodeConfig:
        cfg, notes = resolve_encode(cfg, info, fmt, size)
        for note in notes:
            self._note(note)
        return cfg

    def _add_video_stream(self, width: int, height: int) -> av.VideoStream:
        info, cfg = self.info, self.cfg
        defaults = CODEC_DEFAULTS[cfg.codec]
        options = dict(defaults.extra)
        crf = cfg.crf if cfg.crf is not None else defaults.crf
        if defaults.crf_option and crf is not None:
            options[defaults.crf_option] = str(crf)
        elif cfg.crf is not None:
            log.warning("--crf is ignored by %s (it has no quality scale)", cfg.codec)
        preset = cfg.preset or defaults.preset
        if preset and defaults.preset:
            options["preset"] = preset
        elif cfg.preset:
            log.warning("--preset is ignored by %s", cfg.codec)
        rate = info.frame_rate or Fraction(25)
        stream = self._out.add_stream(cfg.codec, rate=rate, options=options)
        cc = stream.codec_context
        cc.pix_fmt = self._pix_fmt()
        codec = self._picture_codec()
        kept = "420" if cc.pix_fmt in ("nv12", "p010le") else cc.pix_fmt[3:6]
        if cfg.pix_fmt is None and info.pix_fmt.startswith("yuv") and kept != info.chroma:
            self._note(f"the {info.pix_fmt} source's chroma is written as {cc.pix_fmt}: "
                       f"{codec} cannot store {info.chroma[0]}:{info.chroma[1]}:{info.chroma[2]}"
                       + (" (--codec ffv1 keeps it)" if codec != "ffv1" else ""))
        cc.width, cc.height = padded_size(codec, cc.pix_fmt, width, height)
        if (cc.width, cc.height) != (width, height):
            self._note(f"the picture is {width}x{height}, which {codec} cannot store in "
                       f"{cc.pix_fmt}; it is written as {cc.width}x{cc.height}, the last "
                       "column/row repeated (--codec ffv1 or libsvtav1 keep the odd size)")
        cc.time_base = info.time_base
        stream.time_base = info.time_base
        if info.sample_aspect_ratio and info.sample_aspect_ratio != 1:
            cc.sample_aspect_ratio = info.sample_aspect_ratio
            if codec not in SAR_IN_PICTURE and self._out.format.name.startswith("matroska"):
                # Matroska marks it in the stream header, which PyAV cannot set; MP4/MOV take
                # it from the encoder, H.264/HEVC carry it in the picture itself
                self._note(f"the source's pixel aspect ratio {info.sample_aspect_ratio} cannot "
                           f"be marked in an .mkv holding {codec}: players will show the "
                           "picture stretched; write .mp4 to keep it, or use --codec libx264")
        cc.color_range = output_color_range(info, cc.pix_fmt)
        cc.colorspace = info.colorspace
        cc.color_primaries = info.color_primaries
        cc.color_trc = info.color_trc
        if cfg.codec in ("libx264", "libx265", "libsvtav1", "ffv1"):
            cc.thread_count = available_cores()  # not the machine's: a container's or taskset's
        self._tag_video_stream(stream)
        return stream

    def _pix_fmt(self) -> str:
        """The output pixel format (see choose_pix_fmt)."""
        return choose_pix_fmt(self.cfg.codec, self.info.bit_depth, self.info.chroma,
                              self.cfg.pix_fmt)

    def _picture_codec(self) -> str:
        """The encoder whose size rules the pictures follow (see padded_size)."""
        return self.cfg.codec

    def _tag_video_stream(self, stream: av.VideoStream) -> None:
        if self.info.rotation:
            stream.set_display_rotation(self.info.rotation)
        stream.metadata.update({k: v for k, v in self.info.stream_metadata.items()
                                if k.lower() in ("language", "title", "creation_time")})

    def _add_copied_streams(self) -> None:
        if self._decoder is not None:
            streams = self._decoder.copied_streams()
        else:
            self._source = av.open(self.info.path, mode="r", metadata_errors="replace")
            streams = [s for s in self._source.streams if s.type in ("audio", "subtitle")]
        for stream in streams:
            name = stream.codec_context.name if stream.codec_context else "unknown"
            if container_holds(self._out, name):
                out = self._out.add_stream_from_template(stream)
                self._copies[stream.index] = _CopiedStream(stream, out, None)
                if name.startswith("pcm_") and self._out.format.name == "mp4":
                    # the MP4 muxer takes PCM ('ipcm', or QuickTime's 'sowt'/'twos' in older
                    # FFmpeg), which most MP4 players and editors do not play; its channel box
                    # needs a known layout, which Matroska does not store for PCM (it said
                    # "unsupported channel layout 2 channels" when the file was finished)
                    channels = stream.codec_context.layout.nb_channels
                    if stream.codec_context.layout.name.endswith("channels") \
                            and channels in STANDARD_LAYOUTS:
                        out.codec_context.layout = STANDARD_LAYOUTS[channels]
                    self._note(f"audio stream {stream.index} ({name}) is copied into MP4 as "
                               "PCM, which many players and editors cannot play there; write "
                               "to .mov or .mkv to keep PCM audio playable")
            elif stream.type == "audio":
                rate = stream.codec_context.sample_rate
                # the standard layout for the channel count (AAC refuses unordered layouts)
                layout = STANDARD_LAYOUTS.get(stream.codec_context.layout.nb_channels, "stereo")
                out = self._out.add_stream("aac", rate=rate)
                out.codec_context.layout = layout
                out.codec_context.format = "fltp"
                resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate,
                                              frame_size=AAC_FRAME_SIZE)
                self._copies[stream.index] = _CopiedStream(stream, out, resampler)
                self._note(f"audio stream {stream.index} ({name}) is transcoded to AAC: "
                           f"the {self._out.format.name} container cannot hold {name}")
            else:
                self._note(f"subtitle stream {stream.index} ({name}) is left out: "
                           f"the {self._out.format.name} container cannot hold it")
        for copy in self._copies.values():
            copy.out.metadata.update(copy.src.metadata)

    def _note(self, text: str) -> None:
        self.notes.append(text)
        log.warning("%s", text)

    def _copied_packets(self) -> Iterator[av.Packet | None]:
        """The copied streams' packets in file order; None where none is waiting yet (the
        decoder's thread demuxes the rest later)."""
        if self._decoder is not None:  # packets of streams left out are dropped as they come
            while True:
                packet = self._decoder.take_copied()
                if packet is None or packet.stream.index in self._copies:
                    yield packet
        if not self._copies or self._source is None:
            return
        streams = [c.src for c in self._copies.values()]
        try:
            for packet in self._source.demux(streams):
                if packet.size == 0:  # demuxer flush marker, not data
                    continue
                yield packet
        except av.FFmpegError as exc:
            log.warning("%s: copying audio stopped early (%s)", self.info.path, exc)

    def _mux_copies_until(self, seconds: float | None) -> None:
        """Mux pending copied packets up to `seconds` (all of them when None)."""
        while True:
            if self._next_copy is None:
                self._next_copy = next(self._pending, None)
            packet = self._next_copy
            if packet is None:
                break
            t = _packet_seconds(packet)
            if seconds is not None and t is not None and t > seconds + INTERLEAVE_AHEAD:
                return
            copy = self._copies[packet.stream.index]
            if copy.resampler is None:
                packet.stream = copy.out
                self._out.mux(packet)
            else:
                self._transcode(copy, packet)
            self._next_copy = None
        if seconds is None:
            for copy in self._copies.values():
                if copy.resampler is not None:
                    self._transcode(copy, None)

    def _transcode(self, copy: _CopiedStream, packet: av.Packet | None) -> None:
        frames = copy.src.decode(packet) if packet is not None else [None]
        for frame in frames:
            for chunk in copy.resampler.resample(frame):
                self._out.mux(copy.out.encode(chunk))
        if packet is None:
            self._out.mux(copy.out.encode(None))

    def write(self, frame: Frame) -> None:
        """Encode one frame (its image as described in frames.Frame) at its own pts."""
        vf = self._picture(frame)
        vf.pts = frame.pts
        vf.time_base = self.info.time_base
        if frame.duration:
            vf.duration = frame.duration
            self._durations[frame.pts] = frame.duration
        self._mux_copies_until(float(frame.pts * self.info.time_base))
        try:
            packets = self._video.encode(vf)
        except av.FFmpegError as exc:
            raise EncodeError(f"{self.path.name}: the {self.cfg.codec} encoder failed "
                              f"({exc}); try another --codec") from exc
        self._mux_video(packets)

    def _picture(self, frame: Frame) -> av.VideoFrame:
        """The frame to encode: the decoder's own planes, with the pixels a stage changed
        (Frame.changed) converted from BGR where it can (see Frame.source); else the whole
        image converted."""
        cc = self._video.codec_context
        turns = (-self.info.rotation // 90) % 4  # np.rot90 turns from upright to stored
        source = picture_frame(frame.source)
        sw, sh = self._size
        if not (source is not None
                and plain_pix_fmt(source.format.name) == cc.pix_fmt
                and (source.width, source.height) == (sw, sh)
                and (cc.color_range == RANGE_FULL) == (self._dst_range == "JPEG")
                and cc.pix_fmt in PLANAR_YUV):
            image = np.rot90(frame.image, turns)
            if (sw, sh) != (cc.width, cc.height):
                image = np.pad(image, ((0, cc.height - sh), (0, cc.width - sw), (0, 0)),
                               mode="edge")
            return self._from_bgr(image)
        out = av.VideoFrame(cc.width, cc.height, cc.pix_fmt)
        sub_x, sub_y, size = PLANAR_YUV[cc.pix_fmt]
        for src, dst in zip(source.planes, out.planes, strict=True):
            n = min(src.line_size, dst.line_size)
            plane_array(dst, np.uint8, n, dst.height)[:src.height] = \
                plane_array(src, np.uint8, n, src.height)
        h, w = frame.image.shape[:2]
        for rx0, ry0, mask in frame.changed:
            # the mask cut to the picture, then its rectangle in stored coordinates
            mask = mask[max(-ry0, 0):max(h - ry0, 0), max(-rx0, 0):max(w - rx0, 0)]
            rx0, ry0 = max(rx0, 0), max(ry0, 0)
            if mask.size == 0:
                continue
            x0, y0, x1, y1 = rotate_rect((rx0, ry0, rx0 + mask.shape[1], ry0 + mask.shape[0]),
                                         turns, w, h)
            # the block converted: widened so its edges (where swscale's chroma filter runs
            # out of pixels) are not kept, starting on the chroma grid
            px0, py0 = max(x0 - x0 % sub_x - RECT_MARGIN, 0), max(y0 - y0 % sub_y - RECT_MARGIN, 0)
            px1, py1 = min(x1 + RECT_MARGIN, sw), min(y1 + RECT_MARGIN, sh)
            ux0, uy0, ux1, uy1 = rotate_rect((px0, py0, px1, py1), -turns % 4, sw, sh)
            block = self._from_bgr(np.rot90(frame.image[uy0:uy1, ux0:ux1], turns),
                                   (sub_x, sub_y))
            # the changed pixels over the block, turned as it is, padded to the chroma grid
            upright = np.zeros((uy1 - uy0, ux1 - ux0), bool)
            upright[ry0 - uy0:ry0 - uy0 + mask.shape[0], rx0 - ux0:rx0 - ux0 + mask.shape[1]] = mask
            turned = np.rot90(upright, turns)
            changed = np.zeros((-(-turned.shape[0] // sub_y) * sub_y,
                                -(-turned.shape[1] // sub_x) * sub_x), bool)
            changed[:turned.shape[0], :turned.shape[1]] = turned
            for k, (src, dst) in enumerate(zip(block.planes, out.planes, strict=True)):
                fx, fy = (1, 1) if k == 0 else (sub_x, sub_y)
                # the samples covering the rectangle, block and frame coordinates
                cx0, cy0, cx1, cy1 = x0 // fx, y0 // fy, -(-x1 // fx), -(-y1 // fy)
                bx0, by0 = cx0 - px0 // fx, cy0 - py0 // fy
                bx1, by1 = bx0 + cx1 - cx0, by0 + cy1 - cy0
                # a sample is replaced where any pixel it covers changed
                hit = changed.reshape(changed.shape[0] // fy, fy, changed.shape[1] // fx,
                                      fx).any(axis=(1, 3))[by0:by1, bx0:bx1]
                target = plane_array(dst, size, dst.width, dst.height)[cy0:cy1, cx0:cx1]
                target[hit] = plane_array(src, size, src.width, src.height)[by0:by1, bx0:bx1][hit]
        if (sw, sh) != (cc.width, cc.height):
            pad_planes(out, sw, sh, sub_x, sub_y, size)
        return out

    def _from_bgr(self, image: np.ndarray, multiple: tuple[int, int] = (1, 1)
                  ) -> av.VideoFrame:
        """BGR (uint8, or uint16 at full scale) to a frame in the output's pixel format, through
        planar RGB: float for 8-bit pictures (swscale's direct 8-bit path rounds coarsely),
        16-bit for deeper ones; on one thread (see decoder.to_bgr). `multiple`: the picture is
        first padded (edge pixels repeated) to a multiple of this width and height, so that
        chroma is subsampled exactly 2:1 wherever it lies."""
        pad_x, pad_y = -image.shape[1] % multiple[0], -image.shape[0] % multiple[1]
        if pad_x or pad_y:
            image = np.pad(image, ((0, pad_y), (0, pad_x), (0, 0)), mode="edge")
        h, w = image.shape[:2]
        vf = av.VideoFrame(w, h, "gbrp16le" if self._deep else "gbrpf32le")
        for plane, channel in zip(vf.planes, (1, 0, 2), strict=True):  # G, B, R planes
            dst = plane_array(plane, np.uint16 if self._deep else np.float32, w, h)
            dst[:] = image[..., channel]
            if not self._deep:  # swscale takes 1.0 as 65535 and 8-bit white as 255 * 256
                dst *= np.float32(256 / 65535)
        return vf.reformat(format=self._video.codec_context.pix_fmt, src_colorspace=self._space,
                           dst_colorspace=self._space, src_color_range="JPEG",
                           dst_color_range=self._dst_range, threads=1)

    def write_packet(self, packet: av.Packet) -> None:
        """Mux one packet of already encoded video (see `video_template`) as it is."""
        self._mux_copies_until(_packet_seconds(packet))
        packet.stream = self._video
        self._out.mux(packet)

    def _mux_video(self, packets: list[av.Packet]) -> None:
        # Encoders derive packet durations from the nominal rate; give each packet its source
        # frame's duration instead, so the last frame (and the file) lasts exactly as long.
        for packet in packets:
            duration = self._durations.pop(packet.pts, None) if packet.pts is not None else None
            if duration:
                packet.duration = duration
        self._out.mux(packets)

    def close(self) -> None:
        """Flush the encoder and the copied streams, write the trailer, close both files."""
        try:
            if self._video.codec_context.is_open:
                self._mux_video(self._video.encode(None))
            self._mux_copies_until(None)
        finally:
            self._close_containers()

    def _close_containers(self) -> None:
        try:
            self._out.close()
        finally:
            if self._source is not None:
                self._source.close()

    def __enter__(self) -> Encoder:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._close_containers()


@dataclass
class _CopiedStream:
    src: av.stream.Stream
    out: av.stream.Stream
    resampler: av.AudioResampler | None  # set when the stream is transcoded to AAC


def output_color_range(info: VideoInfo, pix_fmt: str) -> int:
    """The colour range tag of the output in `pix_fmt`: the source's, except that JPEG-style
    (yuvj) sources are full range whatever their tag says: written as such, their planes can be
    kept as they are."""
    full = info.pix_fmt.startswith("yuvj") and pix_fmt == plain_pix_fmt(info.pix_fmt)
    return RANGE_FULL if full else info.color_range


def plain_pix_fmt(name: str) -> str:
    """The pixel format without FFmpeg's JPEG (full range) alias: yuvj420p -> yuv420p. The
    planes are the same; only the range differs, and it is carried by the colour tags."""
    return name.replace("yuvj", "yuv", 1) if name.startswith("yuvj") else name


def padded_size(codec: str, pix_fmt: str, width: int, height: int) -> tuple[int, int]:
    """The size `codec` stores a width x height picture at: rounded up to whole chroma samples
    for the encoders that need it (WHOLE_CHROMA_CODECS), else unchanged."""
    sub_x, sub_y, _ = PLANAR_YUV.get(pix_fmt, (1, 1, None))
    if pix_fmt in ("nv12", "p010le"):
        sub_x, sub_y = 2, 2
    if codec not in WHOLE_CHROMA_CODECS:
        return width, height
    return width + -width % sub_x, height + -height % sub_y


def pad_planes(frame: av.VideoFrame, width: int, height: int, sub_x: int, sub_y: int,
               dtype: type) -> None:
    """Fill the samples of `frame` (planar YUV) beyond a width x height picture with copies of
    its last column and row, plane by plane."""
    for k, plane in enumerate(frame.planes):
        fx, fy = (1, 1) if k == 0 else (sub_x, sub_y)
        w, h = -(-width // fx), -(-height // fy)
        a = plane_array(plane, dtype, plane.width, plane.height)
        a[:, w:] = a[:, w - 1:w]
        a[h:, :] = a[h - 1:h, :]


def rotate_rect(rect: tuple[int, int, int, int], turns: int, width: int,
                height: int) -> tuple[int, int, int, int]:
    """Where rectangle x0, y0, x1, y1 (end exclusive) of a width x height picture lies after
    np.rot90(picture, turns)."""
    x0, y0, x1, y1 = rect
    for _ in range(turns % 4):  # one counter-clockwise turn: (x, y) -> (y, width - 1 - x)
        x0, y0, x1, y1 = y0, width - x1, y1, width - x0
        width, height = height, width
    return x0, y0, x1, y1


# Codecs a muxer lists as supported but refuses when it writes the header (FFmpeg's mov muxer:
# "av1 only supported in MP4 and AVIF"), by muxer name.
REFUSED_CODECS = {"mov": frozenset({"av1"})}


def container_holds(out: av.container.OutputContainer, codec: str) -> bool:
    """Whether the output container `out` can hold a stream of `codec` (canonical name)."""
    return (codec in out.supported_codecs
            and codec not in REFUSED_CODECS.get(out.format.name, frozenset()))


def _has_encoder(name: str) -> bool:
    """Whether FFmpeg has an encoder of this name. A stream whose decoder has none (AV1's
    libdav1d) is copied as an opaque template: PyAV otherwise looks for an encoder by the
    decoder's name and fails."""
    try:
        av.Codec(name, "w")
    except (av.FFmpegError, ValueError):
        return False
    return True


def _packet_seconds(packet: av.Packet) -> float | None:
    ts = packet.dts if packet.dts is not None else packet.pts
    if ts is None or packet.time_base is None:
        return None
    return float(ts * packet.time_base)
