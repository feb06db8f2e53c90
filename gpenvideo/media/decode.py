"""Decode one video file into a stream of Frames with PyAV.

One decoder per file, threaded decoding, exact pts and time base (variable frame rate kept),
any pixel format and bit depth (8-bit sources become uint8 BGR, deeper ones uint16 BGR),
rotation metadata applied so stages see upright pictures (the encoder rotates back and writes
the same metadata), optional deinterlacing through libavfilter's bwdif.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from ..config import DecodeConfig
from ..errors import InputError
from ..frames import Frame, VideoInfo
from .heap import deterministic_heap

log = logging.getLogger(__name__)

# FFmpeg enum values (libavutil/pixfmt.h) the colour conversion needs.
RANGE_UNSPECIFIED, RANGE_LIMITED, RANGE_FULL = 0, 1, 2
SPACE_BT709, SPACE_UNSPECIFIED, SPACE_BT470BG, SPACE_SMPTE170M = 1, 2, 5, 6
SPACE_BT2020_NCL = 9
# swscale knows these matrices by name; anything else is converted as BT.601.
_SWS_SPACE = {SPACE_BT709: "ITU709", SPACE_BT470BG: "ITU601", SPACE_SMPTE170M: "ITU601",
              SPACE_BT2020_NCL: "ITU2020"}
HD_HEIGHT = 720  # untagged sources at least this tall are taken to be BT.709, as players do
# A video that stops this many seconds, and this share of the stated duration, before the
# duration its container states is taken to be cut off (audio may legitimately run a little
# longer than the video).
TRUNCATION_SLACK = 1.0
TRUNCATION_FRACTION = 0.05
SEEK_PROBE_PACKETS = 2000  # video packets read after a seek to find where it landed
MAX_FRAME_RATE = 1000  # frames/s: a stream claiming more is taken to mis-report (frame_rate)
LAST_PACKETS = 8  # a packet cut short among the last ones read: the file ends inside a packet


class Picture:
    """The decoder's own picture behind a Frame (Frame.source): an opaque handle that only this
    package reads (the encoder writes its planes as they are where no stage changed a pixel)."""

    __slots__ = ("_frame",)

    def __init__(self, frame: av.VideoFrame) -> None:
        self._frame = frame


# Demuxers of single pictures (besides FFmpeg's *_pipe ones: png_pipe, jpeg_pipe, ...): such an
# input is refused, not written as a one-frame film.
STILL_IMAGE_FORMATS = frozenset({"image2"})


def picture_frame(handle: object) -> av.VideoFrame | None:
    """The av.VideoFrame behind a Frame.source handle, or None (no handle, or another kind)."""
    return handle._frame if isinstance(handle, Picture) else None


def video_streams(container: av.container.InputContainer) -> list[av.VideoStream]:
    """The video streams of a file that hold a film (cover pictures left out)."""
    return [s for s in container.streams.video
            if not s.disposition & av.stream.Disposition.attached_pic]


def check_input_path(path: Path) -> None:
    """Refuse what cannot be a video file before FFmpeg sees it. Raises InputError."""
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a video file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty; give a complete video file")


def sws_colorspace(colorspace: int, height: int) -> str:
    """The swscale matrix name for a stream's colorspace; untagged HD is BT.709, SD BT.601."""
    if colorspace in _SWS_SPACE:
        return _SWS_SPACE[colorspace]
    return "ITU709" if colorspace == SPACE_UNSPECIFIED and height >= HD_HEIGHT else "ITU601"


def sws_range(color_range: int, pix_fmt: str) -> str:
    """The swscale range of a source: full for JPEG-style and RGB formats, else limited (TV)."""
    if color_range == RANGE_FULL or pix_fmt.startswith(("yuvj", "gbr", "rgb", "bgr")):
        return "JPEG"
    return "MPEG"


def to_bgr(vf: av.VideoFrame, space: str, src_range: str, deep: bool) -> np.ndarray:
    """The picture as full-range BGR: uint8, or uint16 at full 16-bit scale when `deep`.

    Through 16-bit planar RGB, rounded here to 8 bits: swscale's direct 8-bit paths truncate
    or skip chroma interpolation (about 1.7 levels of luma lost on a YUV -> BGR -> YUV round
    trip of real footage; this way 0.004). swscale's 16-bit RGB puts 8-bit white at 255 * 256
    (not 65535), so 8 bits are taken by dividing by 256 (dividing by 257 drew every picture
    0.4 levels darker at the top of the range, white 254). This is the cheapest exact
    conversion found (bench/RESULTS.md): swscale to 8-bit RGB with accurate rounding, and a
    YUV -> BGR matrix done in OpenCV, cost as much or more. One thread: swscale's slice
    threads race in some conversions (RGB to 4:2:2 10-bit gave different, wrong chroma from run
    to run), and the pipeline has threads enough.
    """
    rgb = vf.reformat(format="gbrp16le", src_colorspace=space, dst_colorspace=space,
                      src_color_range=src_range, dst_color_range="JPEG", threads=1)
    g, b, r = (plane_array(p, np.uint16, rgb.width, rgb.height) for p in rgb.planes)
    if not deep:
        g, b, r = (cv2.convertScaleAbs(c, alpha=1 / 256) for c in (g, b, r))
    return cv2.merge((b, g, r))


def plane_array(plane: av.video.plane.VideoPlane, dtype: type, width: int,
                height: int) -> np.ndarray:
    """A (height, width) numpy view of one plane of a frame, line padding cut off."""
    row = plane.line_size // np.dtype(dtype).itemsize
    return np.frombuffer(plane, dtype).reshape(height, row)[:, :width]


def _format_traits(fmt: av.VideoFormat) -> tuple[int, str]:
    """(bits per component, chroma layout) of a pixel format."""
    bits = max(c.bits for c in fmt.components)
    name = fmt.name
    if "420" in name or name in ("nv12", "nv21", "p010le", "p016le"):
        chroma = "420"
    elif "422" in name or name in ("yuyv422", "uyvy422"):
        chroma = "422"
    elif "411" in name:
        chroma = "411"
    else:
        chroma = "444"
    return bits, chroma


class Decoder:
    """Reads the first video stream of one file. Use as a context manager.

    `info` describes the stream (available right after construction); `frames()` yields
    Frame objects once; `corrupt_packets` counts packets that failed to decode and were skipped.
    copy_streams: also demux the audio and subtitle streams, whose packets an Encoder given this
    decoder copies (the source is read once, by one demuxer, for both).
    Raises InputError for anything that is not a readable video.
    """

    def __init__(self, path: str | Path, cfg: DecodeConfig | None = None, *,
                 copy_streams: bool = False) -> None:
        deterministic_heap()  # before FFmpeg allocates anything for this file
        self.path = Path(path)
        self.cfg = cfg or DecodeConfig()
        self.corrupt_packets = 0
        self.repaired_timestamps = 0
        self.copy_streams = copy_streams
        # audio and subtitle packets demuxed and not yet taken by an Encoder (media-internal)
        self._copied: collections.deque[av.Packet] = collections.deque()
        self.notes: list[str] = []  # what the run should repeat at the end (a cut-off file)
        self._packets = 0  # video packets demuxed
        self._last_damaged = -1  # number of the last packet that was cut short or failed
        check_input_path(self.path)
        try:
            self._container = av.open(str(self.path), mode="r", metadata_errors="replace")
        except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
            raise InputError(
                f"{self.path}: not a readable video file ({_reason(exc)}); "
                "check that the file is complete and is a video"
            ) from exc
        try:
            self._open_stream()
        except BaseException:
            self._container.close()
            raise

    def _open_stream(self) -> None:
        streams = video_streams(self._container)
        if not streams:
            raise InputError(f"{self.path}: has no video stream (audio only?); give a video file")
        if self._container.format.name in STILL_IMAGE_FORMATS or \
                self._container.format.name.endswith("_pipe"):
            raise InputError(f"{self.path}: is a still image; gpenvideo restores videos")
        self._stream = streams[0]
        self._stream.thread_type = "AUTO"
        if self.cfg.threads:
            self._stream.codec_context.thread_count = self.cfg.threads
        self._graph: av.filter.Graph | None = None
        self._raw = self._decoded_frames()
        # Decode the first frame now: it carries rotation, interlacing and the real pixel format,
        # and a file with no decodable picture is refused here rather than half-way.
        try:
            self._first = next(self._raw)
        except StopIteration:
            raise InputError(
                f"{self.path}: no video frame could be decoded; the file is damaged or cut off"
            ) from None
        self.info = self._probe(self._first)
        self._first_format = self._first  # size and format for a deinterlacer made after a seek
        self._start_pts = self._first.pts  # where the stated duration is counted from
        self._handed_out = False

    def _probe(self, first: av.VideoFrame) -> VideoInfo:
        stream, cc = self._stream, self._stream.codec_context
        bits, chroma = _format_traits(first.format)
        rotation = int(round(first.rotation or 0)) % 360
        rotation = rotation - 360 if rotation > 180 else rotation
        if rotation not in (0, 90, 180, -90):
            log.warning("%s: rotation %d is not a multiple of 90 degrees; ignored",
                        self.path, rotation)
            rotation = 0
        width, height = first.width, first.height
        if rotation in (90, -90):
            width, height = height, width
        field_order = str(getattr(cc, "field_order", "") or "").lower()
        interlaced = bool(first.interlaced_frame) or field_order in ("tt", "bb", "tb", "bt")
        mode = self.cfg.deinterlace
        deinterlace = mode == "on" or (mode == "auto" and interlaced)
        if deinterlace:
            self._graph = self._build_deinterlacer(first, "all" if mode == "on" else "interlaced")
        if deinterlace and mode == "auto":  # in the summary once (every segment decodes anew)
            self.notes.append(f"{self.path.name} is interlaced: deinterlaced with bwdif "
                              "(--deinterlace off keeps the fields as they are)")
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif self._container.duration is not None:
            duration = self._container.duration / av.time_base
        sar = cc.sample_aspect_ratio or stream.sample_aspect_ratio
        return VideoInfo(
            path=str(self.path),
            width=width,
            height=height,
            codec=cc.name,
            pix_fmt=first.format.name,
            bit_depth=bits,
            chroma=chroma,
            time_base=Fraction(stream.time_base),
            frame_rate=frame_rate(stream),
            frames=int(stream.frames or 0),
            duration=duration,
            rotation=rotation,
            sample_aspect_ratio=Fraction(sar) if sar else None,
            color_range=int(first.color_range),
            colorspace=int(first.colorspace),
            color_primaries=int(first.color_primaries),
            color_trc=int(first.color_trc),
            interlaced=interlaced,
            deinterlaced=deinterlace,
            metadata=dict(self._container.metadata),
            stream_metadata=dict(stream.metadata),
        )

    def _build_deinterlacer(self, first: av.VideoFrame, deint: str) -> av.filter.Graph:
        graph = av.filter.Graph()
        src = graph.add_buffer(template=self._stream, time_base=self._stream.time_base,
                               width=first.width, height=first.height, format=first.format)
        # send_frame: one output frame per input frame, timestamps unchanged.
        bwdif = graph.add("bwdif", f"mode=send_frame:parity=auto:deint={deint}")
        sink = graph.add("buffersink")
        src.link_to(bwdif)
        bwdif.link_to(sink)
        graph.configure()
        return graph

    def copied_streams(self) -> list[av.stream.Stream]:
        """The audio and subtitle streams whose packets this decoder hands on (copy_streams)."""
        if not self.copy_streams:
            return []
        return [s for s in self._container.streams if s.type in ("audio", "subtitle")]

    def take_copied(self) -> av.Packet | None:
        """The next demuxed packet of copied_streams() in file order, or None when none is
        waiting (the decoding thread may demux more later; all are in once frames() ends)."""
        try:
            return self._copied.popleft()
        except IndexError:
            return None

    def _decoded_frames(self) -> Iterator[av.VideoFrame]:
        """Raw decoded frames; packets that fail to decode are counted and skipped. Packets of
        the copied streams are set aside for the encoder."""
        demux = self._container.demux([self._stream, *self.copied_streams()])
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                return
            except av.FFmpegError as exc:  # broken container structure: keep what we have
                self.corrupt_packets += 1
                self._last_damaged = self._packets
                log.warning("%s: demuxing stopped early (%s)", self.path, _reason(exc))
                return
            if packet.stream.index != self._stream.index:
                if packet.size:  # size 0: the demuxer's flush marker, not data
                    self._copied.append(packet)
                continue
            if packet.size:
                self._packets += 1
                if packet.is_corrupt:  # the demuxer read less than the packet's size
                    self._last_damaged = self._packets
            try:
                yield from packet.decode()
            except av.FFmpegError:
                self.corrupt_packets += 1
                self._last_damaged = self._packets

    def _filtered(self, frames: Iterator[av.VideoFrame]) -> Iterator[av.VideoFrame]:
        graph = self._graph
        if graph is None:
            yield from frames
            return
        for vf in frames:
            graph.push(vf)
            yield from _pull_all(graph)
        graph.push(None)
        yield from _pull_all(graph)

    def frames(self, start: int | None = None, stop: int | None = None) -> Iterator[Frame]:
        """Yield every frame once, in presentation order, as a Frame (see frames.Frame).

        start: seek to the keyframe at or before this pts first (segments of a long film);
        stop: end after the first frame whose pts is at or past this one. Both in
        VideoInfo.time_base units, and both in the stored stream's timestamps.
        """
        if self._handed_out:
            raise RuntimeError("Decoder.frames() can be iterated once")
        self._handed_out = True
        if start is not None:
            self._seek(start)
        info = self.info
        deep = info.bit_depth > 8
        space = sws_colorspace(info.colorspace, info.height)
        src_range = sws_range(info.color_range, info.pix_fmt)
        default_step = _default_step(info)
        last_pts: int | None = None

        def stream() -> Iterator[av.VideoFrame]:
            if self._first is not None:
                yield self._first
            yield from self._raw

        for index, vf in enumerate(self._filtered(stream())):
            pts, duration = vf.pts, vf.duration or 0
            if vf.time_base is not None and vf.time_base != info.time_base:
                # bwdif runs at half the time base (it could double the rate): rescale back
                scale = Fraction(vf.time_base) / info.time_base
                pts = None if pts is None else round(pts * scale)
                duration = round(duration * scale)
            if pts is None:  # some AVI/ES sources: continue from the previous frame
                pts = 0 if last_pts is None else last_pts + default_step
                self.repaired_timestamps += 1
            elif last_pts is not None and pts <= last_pts:
                pts = last_pts + 1
                self.repaired_timestamps += 1
            last_pts = pts
            image = to_bgr(vf, space, src_range, deep)
            if info.rotation:
                image = np.ascontiguousarray(np.rot90(image, info.rotation // 90))
            yield Frame(index=index, pts=int(pts), duration=int(duration), image=image,
                        source=Picture(vf))
            if stop is not None and pts >= stop:
                break
        else:
            end = None if last_pts is None else (last_pts + (duration or default_step))
            self._check_complete(None if end is None else float(end * info.time_base))
        if self.repaired_timestamps:
            log.warning("%s: %d frames had missing or repeated timestamps and were renumbered",
                        self.path, self.repaired_timestamps)

    def _check_complete(self, end: float | None) -> None:
        """After the last frame (ending at `end` seconds of the stored timestamps): note a file
        that is cut off, i.e. whose video ends well before the duration its container states,
        or whose last packets were cut short."""
        stated = self.info.duration
        start = float((self._start_pts or 0) * self.info.time_base)
        if end is not None and stated and (end - start) < stated - max(
                TRUNCATION_SLACK, TRUNCATION_FRACTION * stated):
            self._truncated(f"the video ends after {end - start:.1f} s but the file says it lasts "
                            f"{stated:.1f} s")
        elif self._last_damaged >= 0 and self._last_damaged > self._packets - LAST_PACKETS:
            self._truncated("the file ends inside a video packet")

    def _truncated(self, why: str) -> None:
        note = (f"{self.path.name}: {why}: it looks cut off (an incomplete copy or download); "
                "the frames that are there were restored and written")
        self.notes.append(note)
        log.warning("%s", note)

    def _seek(self, pts: int) -> None:
        """Restart decoding at a keyframe at or before `pts`, with a fresh deinterlacer.

        Demuxers that seek by byte position (MPEG-TS, MPEG-PS) may land past `pts`; then the
        seek is retried from further back (1, 2, 4 ... s earlier, down to the file's start), so
        no frame at or after `pts` is ever skipped."""
        step = max(1, round(1 / self.info.time_base))  # one second in stream units
        target = pts
        try:
            while True:
                self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
                landed = self._first_keyframe_pts()
                if (landed is not None and landed <= pts) or target < self._start_pts - step:
                    break  # (None: it landed past the last keyframe)
                target -= step
                step *= 2
            self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
        except av.FFmpegError as exc:
            at = float(pts * self.info.time_base)
            raise InputError(f"{self.path}: cannot seek to {at:.3f} s ({_reason(exc)}); "
                             "process it with --segment-seconds 0") from exc
        self._stream.codec_context.flush_buffers()
        self._first = None
        self._raw = self._decoded_frames()
        if self._graph is not None:
            mode = "all" if self.cfg.deinterlace == "on" else "interlaced"
            self._graph = self._build_deinterlacer(self._first_format, mode)

    def _first_keyframe_pts(self, packets: int = SEEK_PROBE_PACKETS) -> int | None:
        """The pts of the first keyframe the demuxer now reads (it is moved on: seek again),
        None if none comes within `packets` video packets."""
        for n, packet in enumerate(self._container.demux(self._stream)):
            if n >= packets:
                return None
            if packet.is_keyframe and packet.pts is not None:
                return packet.pts
        return None

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> Decoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pull_all(graph: av.filter.Graph) -> Iterator[av.VideoFrame]:
    while True:
        try:
            yield graph.pull()
        except (av.BlockingIOError, av.EOFError):
            return


def frame_rate(stream: av.VideoStream) -> Fraction | None:
    """The stream's average frame rate, or FFmpeg's guess from its timestamps where the average
    is missing or impossible (above MAX_FRAME_RATE: FFmpeg's DV demuxer reports 60000 fps for
    NTSC DV, whose time base is 1/60000; an encoder given that rate fails); None if neither."""
    for rate in (stream.average_rate, stream.guessed_rate):
        if rate and 0 < rate <= MAX_FRAME_RATE:
            return Fraction(rate)
    return None


def _default_step(info: VideoInfo) -> int:
    """One frame's duration in time-base units, for frames that come without a timestamp."""
    if info.frame_rate:
        return max(1, round(1 / (info.frame_rate * info.time_base)))
    return 1


def _reason(exc: BaseException) -> str:
    """A short reason from an FFmpeg error, without the file name it repeats."""
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).split(":")[-1].strip() or type(exc).__name__
