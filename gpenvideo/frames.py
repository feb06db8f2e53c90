"""The types that cross stage boundaries. Plain data: numpy arrays, no behaviour beyond accessors.

Landmark order everywhere in the package: left eye, right eye, nose tip, left mouth corner,
right mouth corner, "left" and "right" as seen in the image (image-left eye first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np


@dataclass(frozen=True)
class VideoInfo:
    """What the decoder learned about the video stream it reads."""

    path: str
    width: int  # width of the frames handed to stages (after rotation to upright)
    height: int  # height of the frames handed to stages
    codec: str  # source codec name, e.g. "h264"
    pix_fmt: str  # source pixel format, e.g. "yuv420p10le"
    bit_depth: int  # bits per component of the source (8, 10, 12, 16)
    chroma: str  # source chroma layout: "420", "422", "444" (RGB and gray count as "444")
    time_base: Fraction  # unit of Frame.pts
    frame_rate: Fraction | None  # average frame rate (None when the container does not say)
    frames: int  # number of frames the container announces (0 when unknown)
    duration: float | None  # seconds, when known
    rotation: int  # display rotation of the source, degrees counter-clockwise (0, 90, 180, -90)
    sample_aspect_ratio: Fraction | None  # pixel aspect ratio (None or 1 for square pixels)
    color_range: int  # FFmpeg AVColorRange of the source (0 unspecified, 1 limited, 2 full)
    colorspace: int  # FFmpeg AVColorSpace (matrix) of the source
    color_primaries: int  # FFmpeg AVColorPrimaries of the source
    color_trc: int  # FFmpeg AVColorTransferCharacteristic of the source
    interlaced: bool  # the stream or its first frame says it is interlaced
    deinterlaced: bool  # the decoder deinterlaces (bwdif) what it hands on
    metadata: dict[str, str] = field(default_factory=dict)  # container tags (title, ...)
    stream_metadata: dict[str, str] = field(default_factory=dict)  # video stream tags (language)

    @property
    def dtype(self) -> type:
        """numpy dtype of Frame.image: uint8 for 8-bit sources, uint16 for deeper ones."""
        return np.uint8 if self.bit_depth <= 8 else np.uint16


@dataclass(frozen=True)
class Detection:
    """One face found by a detector, in frame pixel coordinates."""

    box: np.ndarray  # (4,) float32 x1, y1, x2, y2
    landmarks: np.ndarray  # (5, 2) float32, package landmark order
    score: float


@dataclass(frozen=True)
class TrackedFace:
    """A face of one frame as the tracker hands it on: its track and its smoothed landmarks."""

    track_id: int
    box: np.ndarray  # (4,) float32 x1, y1, x2, y2 (interpolated where the frame was filled in)
    raw: np.ndarray | None  # (5, 2) float32 detector landmarks; None where filled in
    smoothed: np.ndarray  # (5, 2) float32 landmarks after temporal smoothing
    score: float  # detector score (interpolated where filled in)
    # 0..1 share of the restoration this frame gets: ramps in and out over a few frames at a
    # track's ends and across filled-in frames of low confidence (1 elsewhere)
    weight: float = 1.0
    # (2, 3) float64 frame -> aligned 512-px template crop, refined by registration over time;
    # None: align.face_transform(smoothed, 512). For a crop of S pixels use matrix * (S / 512).
    matrix: np.ndarray | None = None


@dataclass
class RestoredFace:
    """A face the restorer produced, on its way to the compositor."""

    track_id: int
    matrix: np.ndarray  # (2, 3) float64 frame -> crop similarity
    crop: np.ndarray  # (S, S, 3) uint8 BGR, the aligned crop as cut from the frame
    restored: np.ndarray  # (S, S, 3) uint8 BGR, the model's output
    mask: np.ndarray | None = None  # (S, S) float32 face parsing mask; None: the template's


@dataclass
class Frame:
    """One decoded picture on its way through the pipeline."""

    index: int  # 0-based position in decode order of output frames
    pts: int  # presentation timestamp in VideoInfo.time_base
    duration: int  # frame duration in VideoInfo.time_base (0 when unknown)
    image: np.ndarray  # (H, W, 3) BGR, uint8 for 8-bit sources, uint16 (full 16-bit scale) above
    detections: list[Detection] = field(default_factory=list)  # filled in by the detector
    faces: list[TrackedFace] = field(default_factory=list)  # filled in by the tracker
    restored: list[RestoredFace] = field(default_factory=list)  # filled in by the restorer
    scene_cut: bool = False  # the tracker saw a scene cut before this frame
    emit: bool = True  # False for a segment's lead-in and run-out frames: tracked, not written
    # The decoder's own picture (an av.VideoFrame in the stored orientation) that `image` was
    # converted from. The encoder writes its planes as they are wherever `image` is unchanged,
    # so pixels no stage touched leave the tool bit for bit as they came in. A stage that alters
    # `image` records which pixels in `changed`, or sets `source` to None when it replaces the
    # whole picture (--upscale).
    source: object | None = None
    # (x0, y0, mask): the (h, w) bool mask marks the pixels changed in image[y0:y0+h, x0:x0+w]
    changed: list[tuple[int, int, np.ndarray]] = field(default_factory=list)
