"""The only module that runs stages: threads, bounded queues, stop and join, progress.

    decoder thread ─▶ queue ─▶ stage thread ─▶ queue ─▶ ... ─▶ encoder thread

Every thread puts and gets with a timeout and watches one stop event, so an error in any thread,
or Ctrl-C in the main thread, stops them all; every thread is joined; the first error is raised
in the caller's thread. Memory is bounded by the queue sizes and the stages' own lookahead,
whatever the film's length. What is decoded and where it is written (one piece or segments,
output names, resume) is segments.py's; assembling the stages is api.py's.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .errors import Cancelled
from .frames import Frame, VideoInfo
from .media import Decoder, Encoder, FfmpegEncoder

_END = object()  # marks the end of a queue's stream
_POLL = 0.1  # seconds between checks of the stop event while blocked


class Stage(Protocol):
    """A per-frame step between decoder and encoder, exactly as the engine uses it.

    `process` takes frames in order and returns the frames it is done with (possibly none yet,
    possibly several held back earlier); `flush` returns everything still held at the end.
    `context`: how many frames before and after a frame shape its result (the tracker's
    smoothing window, the registration window); segments are decoded with that many frames of
    lead-in and run-out, so a film cut in pieces comes out as one run would write it.
    `name` names the stage's thread. Stages change pixels only through Frame's methods.
    """

    name: str
    context: int

    def process(self, frame: Frame) -> Iterable[Frame]: ...

    def flush(self) -> Iterable[Frame]: ...


@runtime_checkable
class TrackReporter(Protocol):
    """A stage with figures per face track for the run's summary (quality.QualityStage): the
    engine collects `track_rows()` from every stage of a piece that has it, after the piece."""

    def track_rows(self) -> list[dict[str, Any]]: ...


StageFactory = Callable[[VideoInfo], list["Stage"]]


@dataclass
class Progress:
    """What a progress callback receives, about once a second and at the end."""

    frames_done: int  # of the whole film, resumed segments included
    frames_total: int  # 0 when unknown
    elapsed: float  # seconds since this run started
    faces_done: int = 0  # restored faces, resumed segments included
    frames_resumed: int = 0  # of frames_done, those finished by an earlier, interrupted run
    faces_resumed: int = 0  # of faces_done, those finished by an earlier run

    @property
    def fps(self) -> float:
        """Frames per second rendered by this run (resumed frames left out)."""
        rendered = self.frames_done - self.frames_resumed
        return rendered / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def faces_per_second(self) -> float:
        """Faces per second restored by this run (resumed faces left out)."""
        rendered = self.faces_done - self.faces_resumed
        return rendered / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at this run's rate; None until this run has rendered a frame."""
        if not self.frames_total or self.frames_done <= self.frames_resumed:
            return None
        return max(self.frames_total - self.frames_done, 0) / max(self.fps, 1e-9)


ProgressCallback = Callable[[Progress], None]


@dataclass
class RunSummary:
    """The outcome of one restore run."""

    input: str
    output: str
    frames: int = 0
    faces: int = 0  # restored face crops
    tracks: int = 0  # confirmed face tracks
    corrupt_packets: int = 0
    seconds: float = 0.0  # time spent
    duration: float = 0.0  # seconds of video
    segments: int = 1  # pieces the film was processed in
    segments_resumed: int = 0  # of those, finished by an earlier, interrupted run
    frames_resumed: int = 0  # of `frames`, those in the resumed segments
    notes: list[str] = field(default_factory=list)  # warnings worth repeating at the end
    # per-track figures (quality.TRACK_FIELDS; "segment" added in segmented runs)
    per_track: list[dict] = field(default_factory=list)
    encoder: str = ""  # the video encoder used (what --codec auto chose)
    # (first pts, last pts + duration) of the frames written, source time base; None: unknown
    written_pts: tuple[int, int] | None = None
    written_known: bool = True  # False: some piece did not say (written_pts is then partial)

    @property
    def fps(self) -> float:
        """Frames per second rendered by this run (resumed segments left out)."""
        rendered = self.frames - self.frames_resumed
        return rendered / self.seconds if self.seconds > 0 else 0.0

    def add(self, counts: dict, notes: list[str] = ()) -> None:
        """Add one piece's counts (see run_piece) and its notes (each once)."""
        self.frames += counts["frames"]
        self.faces += counts["faces"]
        self.tracks += counts["tracks"]
        self.corrupt_packets += counts.get("corrupt_packets", 0)
        self.per_track += counts.get("per_track", [])
        self.notes += [n for n in notes if n not in self.notes]
        if counts["frames"] and "end_pts" not in counts:  # a segment of an older version
            self.written_known = False
        if "end_pts" in counts:
            first, end = counts["first_pts"], counts["end_pts"]
            span = self.written_pts
            self.written_pts = (first, end) if span is None else (min(span[0], first),
                                                                 max(span[1], end))


class Clock:
    """Progress across the pieces of one run."""

    def __init__(self, total: int = 0, callback: ProgressCallback | None = None) -> None:
        self.started, self.total, self.callback = time.monotonic(), total, callback
        self.frames = 0  # frames written by finished pieces
        self.faces = 0
        self.frames_resumed = 0  # of those, frames of pieces an earlier run finished
        self.faces_resumed = 0

    def finished(self, frames: int, faces: int, resumed: bool = False) -> None:
        """Count a finished piece (`resumed`: finished by an earlier run, not by this one)."""
        self.frames += frames
        self.faces += faces
        if resumed:
            self.frames_resumed += frames
            self.faces_resumed += faces

    def report(self, frames: int = 0, faces: int = 0) -> None:
        """Tell the callback, with `frames` and `faces` of the piece under way."""
        if self.callback:
            self.callback(Progress(self.frames + frames, self.total,
                                   time.monotonic() - self.started, self.faces + faces,
                                   self.frames_resumed, self.faces_resumed))


class _Stopped(Exception):
    """Raised inside a worker when another thread asked everyone to stop."""


class _Workers:
    """Threads that share one stop event and report their first error."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self, name: str, fn: Callable[[], None]) -> None:
        def body() -> None:
            try:
                fn()
            except _Stopped:
                pass
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                with self._lock:
                    self.errors.append(exc)
                self.stop.set()

        thread = threading.Thread(target=body, name=f"gpenvideo-{name}", daemon=True)
        self.threads.append(thread)
        thread.start()

    def put(self, q: queue.Queue, item: object) -> None:
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                q.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue

    def get(self, q: queue.Queue) -> object:
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                return q.get(timeout=_POLL)
            except queue.Empty:
                continue

    def drain(self, q: queue.Queue) -> Iterator[object]:
        while (item := self.get(q)) is not _END:
            yield item

    def alive(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def join(self) -> None:
        for thread in self.threads:
            thread.join()


@dataclass(frozen=True)
class Piece:
    """What one threaded run decodes: frames from the keyframe at or before `seek` up to the
    first at or past `stop` (None: the file's ends), of which those `writes` accepts are
    written. All in the source's time base."""

    seek: int | None = None
    stop: int | None = None
    writes: Callable[[int], bool] = lambda pts: True


def run_piece(decoder: Decoder, piece: Piece, chain: list[Stage],
              encoder: Encoder | FfmpegEncoder, queue_size: int, clock: Clock) -> dict[str, int]:
    """Run one piece through decoder -> stages -> encoder on threads. Returns its counts:
    frames and faces written, tracks first seen in it, corrupt packets skipped, and (when a
    frame was written) first_pts and end_pts (the last frame's pts + duration), in the
    source's time base: what was written, however long the container claims the film is.
    Raises the first error of any thread; Cancelled on Ctrl-C (every thread stopped, joined)."""
    workers = _Workers()
    queues = [queue.Queue(maxsize=queue_size) for _ in range(len(chain) + 1)]
    counts: dict[str, Any] = {"frames": 0, "faces": 0, "tracks": 0}
    inherited: set[int] = set()  # tracks seen in the lead-in: counted by the segment before
    seen: set[int] = set()

    def decode() -> None:
        for frame in decoder.frames(piece.seek, piece.stop):
            frame.emit = piece.writes(frame.pts)
            workers.put(queues[0], frame)
        workers.put(queues[0], _END)

    def stage_loop(stage: Stage, q_in: queue.Queue, q_out: queue.Queue) -> Callable[[], None]:
        def body() -> None:
            for frame in workers.drain(q_in):
                for out in stage.process(frame):
                    workers.put(q_out, out)
            for out in stage.flush():
                workers.put(q_out, out)
            workers.put(q_out, _END)
        return body

    def encode() -> None:
        for frame in workers.drain(queues[-1]):
            ids = {face.track_id for face in frame.faces}
            if not frame.emit:
                if not counts["frames"]:
                    inherited.update(ids)
                continue
            encoder.write(frame)
            seen.update(ids - inherited)
            if not counts["frames"]:
                counts["first_pts"] = frame.pts
            counts["end_pts"] = max(counts.get("end_pts", frame.pts),
                                    frame.pts + max(frame.duration, 0))
            counts["frames"] += 1
            counts["faces"] += len(frame.faces)

    workers.start("decode", decode)
    for i, stage in enumerate(chain):
        workers.start(stage.name, stage_loop(stage, queues[i], queues[i + 1]))
    workers.start("encode", encode)

    last_report = 0.0
    try:
        while workers.alive():
            time.sleep(_POLL)
            now = time.monotonic()
            if now - last_report >= 1.0:
                last_report = now
                clock.report(counts["frames"], counts["faces"])
    except KeyboardInterrupt:
        workers.stop.set()
        workers.join()
        raise Cancelled(f"{decoder.path}: interrupted; no output was written") from None
    workers.join()
    if workers.errors:
        raise workers.errors[0]
    counts["tracks"] = len(seen)
    counts["corrupt_packets"] = decoder.corrupt_packets
    counts["per_track"] = [row for stage in chain if isinstance(stage, TrackReporter)
                           for row in stage.track_rows()]
    clock.report(counts["frames"], counts["faces"])
    return counts


def run_chain(frames: Iterable[Frame], chain: list[Stage]) -> Iterator[Frame]:
    """`frames` through `chain` on this thread, each stage flushed after the last frame."""
    for frame in frames:
        batch = [frame]
        for stage in chain:
            batch = [out for f in batch for out in stage.process(f)]
        yield from batch
    tail: list[Frame] = []
    for stage in chain:
        tail = [out for f in tail for out in stage.process(f)] + list(stage.flush())
    yield from tail
