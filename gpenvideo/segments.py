"""Long films in segments cut at keyframes, and the work folder that keeps finished segments so
that an interrupted run (Ctrl-C, crash, kill -9, power loss) resumes where it stopped.

Each segment is decoded from a keyframe `lead` frames before its first frame and on `tail`
frames past its last, so the tracker sees the same history and future there as in one long run
(tracks continue across the boundary), but only the segment's own frames are restored and
written. A finished segment is a video-only file in the work folder; the final output is their
stream-copied concatenation with the audio copied once from the source. The plan depends only on
the source and the settings, so a resumed run writes exactly the frames an uninterrupted run
would.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from .errors import InputError
from .manifest import fsync_dir, input_fingerprint, write_json_atomic

log = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".mov"  # keeps any time base exactly and holds every codec we encode
SEGMENT_FORMAT = "mov"


@dataclass(frozen=True)
class Segment:
    """One piece of a film. All timestamps in the source video stream's time base."""

    number: int
    seek: int | None  # decode from the keyframe at or before this pts (None: the file's start)
    first: int | None  # first pts written (None: from the first frame)
    end: int | None  # the next segment's first pts: frames at or past it are not written
    stop: int | None  # decoding ends at the first frame at or past this pts (None: at the end)

    def writes(self, pts: int) -> bool:
        return (self.first is None or pts >= self.first) and (self.end is None or pts < self.end)


@dataclass(frozen=True)
class StreamIndex:
    """Presentation timestamps of a video stream's packets, sorted, and which are keyframes."""

    pts: list[int]
    keyframes: list[int]
    time_base: Fraction


def scan(path: Path) -> StreamIndex | None:
    """Read the first video stream's packet headers (no decoding). None when some packet has no
    timestamp (such files are processed in one piece)."""
    pts: list[int] = []
    keys: list[int] = []
    try:
        with av.open(str(path), metadata_errors="replace") as container:
            streams = [s for s in container.streams.video
                       if not s.disposition & av.stream.Disposition.attached_pic]
            stream = streams[0]
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


def plan(index: StreamIndex | None, seconds: float, lead: int, tail: int) -> list[Segment]:
    """Cut at the first keyframe at least `seconds` after the previous cut. Each segment decodes
    from a keyframe at least `lead` frames before its first frame (as far as the file allows)
    and `tail` frames past its end. One segment when `seconds` is 0 or the film is short."""
    whole = [Segment(0, None, None, None, None)]
    if index is None or seconds <= 0 or not index.pts:
        return whole
    step = seconds / index.time_base
    cuts: list[int] = []
    target = index.pts[0] + step
    for key in index.keyframes:
        if key >= target and key > index.pts[0]:
            cuts.append(key)
            target = key + step
    # a last piece shorter than a quarter of a segment joins the one before it
    while cuts and index.pts[-1] - cuts[-1] < step / 4:
        cuts.pop()
    if not cuts:
        return whole
    segments = []
    bounds: list[int | None] = [None, *cuts, None]
    for n in range(len(bounds) - 1):
        first, end = bounds[n], bounds[n + 1]
        seek = None
        if first is not None:
            i = bisect.bisect_left(index.pts, first)
            if i - lead > 0:
                k = bisect.bisect_right(index.keyframes, index.pts[i - lead]) - 1
                seek = index.keyframes[k] if k >= 0 else None
        stop = None
        if end is not None:
            j = bisect.bisect_left(index.pts, end) + tail
            stop = index.pts[j] if j < len(index.pts) else None
        segments.append(Segment(n, seek, first, end, stop))
    return segments


class WorkFolder:
    """`.<output name>.gpenvideo-work/` beside the output: plan.json, and per finished segment
    `seg-NNNNN.mov` (video only) with `seg-NNNNN.json` (its counts). A segment is finished when
    its JSON exists; both are written durably (fsync, then rename)."""

    def __init__(self, output: Path) -> None:
        self.path = output.with_name(f".{output.name}.gpenvideo-work")

    def prepare(self, source: Path, settings: str, segments: list[Segment]) -> int:
        """Create the folder for this plan, or keep one left by an interrupted run of the same
        input, settings and plan. Returns how many segments are already finished."""
        doc = {"input": input_fingerprint(source, with_hash=False), "settings": settings,
               "segments": [asdict(s) for s in segments]}
        try:
            old = json.loads((self.path / "plan.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old != json.loads(json.dumps(doc)):
            if old is not None:
                log.warning("%s: an unfinished earlier run with other settings or another "
                            "version of the input was discarded", self.path)
            shutil.rmtree(self.path, ignore_errors=True)
            self.path.mkdir()
            write_json_atomic(self.path / "plan.json", doc)
            return 0
        for stale in self.path.glob(".seg-*.partial-*"):  # written by a run that was killed
            stale.unlink(missing_ok=True)
        return sum(1 for s in segments if self.done(s.number) is not None)

    def segment_file(self, number: int) -> Path:
        return self.path / f"seg-{number:05d}{SEGMENT_SUFFIX}"

    def partial_file(self, number: int) -> Path:
        return self.path / f".seg-{number:05d}.partial-{os.getpid()}{SEGMENT_SUFFIX}"

    def done(self, number: int) -> dict[str, Any] | None:
        """The counts of a finished segment, or None if it is not finished."""
        try:
            doc = json.loads((self.path / f"seg-{number:05d}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return doc if self.segment_file(number).is_file() else None

    def commit(self, number: int, partial: Path, counts: dict[str, Any]) -> None:
        """Make a written segment file final, then record it as finished."""
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        os.replace(partial, self.segment_file(number))
        fsync_dir(self.path)
        write_json_atomic(self.path / f"seg-{number:05d}.json", counts)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
