"""The types that cross stage boundaries: plain data (numpy arrays), and a Frame whose picture
changes only through methods that record what changed.

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

    def pixel_aspect(self) -> tuple[float, float]:
        """(x, y) display size of one pixel of the upright frames the stages see: the sample
        aspect ratio across the stored picture's width (its height once a 90-degree rotation
        has turned it upright); (1, 1) for square pixels or when the file does not say."""
        sar = float(self.sample_aspect_ratio) if self.sample_aspect_ratio else 1.0
        if sar <= 0 or sar == 1.0:
            return (1.0, 1.0)
        return (1.0, sar) if self.rotation in (90, -90, 270, -270) else (sar, 1.0)


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
    # None: align.face_transform(smoothed, 512, aspect). For an S-pixel crop: matrix * (S / 512).
    matrix: np.ndarray | None = None
    # (x, y) display size of one frame pixel (VideoInfo.pixel_aspect): faces are aligned as
    # they are seen, so a tape capture's non-square pixels do not stretch the model's crop
    aspect: tuple[float, float] = (1.0, 1.0)


@dataclass
class RestoredFace:
    """A face the restorer produced, on its way to the compositor. In a GPU run `crop`,
    `restored` and `mask` may be torch tensors on the model's device; the restorer then also
    hands on `patch`, the face already warped into its place in the frame, so the compositor
    only blends it."""

    track_id: int
    matrix: np.ndarray  # (2, 3) float64 frame -> crop similarity
    crop: object  # (S, S, 3) uint8 BGR, the aligned crop as cut from the frame
    restored: object  # (S, S, 3) uint8 BGR, the model's output
    mask: object | None = None  # (S, S) float32 face parsing mask; None: the template's
    weight: float = 1.0  # TrackedFace.weight: share of the restoration (0: not pasted)
    # (x0, y0, face, alpha): the face warped into image[y0:y0+h, x0:x0+w] of the frame as the
    # compositor receives it (after --upscale): face (h, w, 3) float32 BGR 0-255, alpha (h, w)
    # float32 0-1; None: the compositor warps `restored` itself
    patch: tuple[int, int, np.ndarray, np.ndarray] | None = None
    # (crop, restored) each as a small (q, q) float32 grey for the quality figures
    # (quality.grey_small), made where the crops are (a GPU run brings back these, not the
    # crops); None: the quality stage makes them from `crop` and `restored`
    greys: tuple[np.ndarray, np.ndarray] | None = None


@dataclass
class Frame:
    """One decoded picture on its way through the pipeline.

    `image` is read-only (numpy writeable=False): a stage changes pixels with `paste` (a patch,
    recorded in `changed`) or `replace_image` (a new picture, e.g. --upscale), so no edit can be
    left out of the output. Assigning `image` or writing into it raises.
    """

    index: int  # 0-based position in decode order of output frames
    pts: int  # presentation timestamp in VideoInfo.time_base
    duration: int  # frame duration in VideoInfo.time_base (0 when unknown)
    image: np.ndarray  # (H, W, 3) BGR, uint8 for 8-bit sources, uint16 (full 16-bit scale) above
    detections: list[Detection] = field(default_factory=list)  # filled in by the detector
    faces: list[TrackedFace] = field(default_factory=list)  # filled in by the tracker
    restored: list[RestoredFace] = field(default_factory=list)  # filled in by the restorer
    scene_cut: bool = False  # the tracker saw a scene cut before this frame
    emit: bool = True  # False for a segment's lead-in and run-out frames: tracked, not written
    # The decoder's own picture that `image` was converted from, as an opaque handle only
    # gpenvideo.media reads: the encoder writes its planes as they are wherever `image` is
    # unchanged, so pixels no stage touched leave the tool bit for bit as they came in.
    # replace_image drops it (every pixel is new).
    source: object | None = None
    # (x0, y0, mask): the (h, w) bool mask marks the pixels changed in image[y0:y0+h, x0:x0+w]
    # (kept up to date by paste; read by the encoder)
    changed: list[tuple[int, int, np.ndarray]] = field(default_factory=list)

    def __setattr__(self, name: str, value: object) -> None:
        if name == "image":
            if "image" in self.__dict__:
                raise AttributeError("Frame.image is read-only: change pixels with "
                                     "Frame.paste or Frame.replace_image")
            pixels = value if value.flags.writeable else value.copy()  # type: ignore[union-attr]
            object.__setattr__(self, "_pixels", pixels)  # the writable array behind `image`
            value = pixels.view()
            value.flags.writeable = False
        object.__setattr__(self, name, value)

    def paste(self, x0: int, y0: int, pixels: np.ndarray, mask: np.ndarray) -> None:
        """Write `pixels` (h, w, 3, image's dtype) where the (h, w) bool `mask` is set into
        image[y0:y0+h, x0:x0+w], and record them in `changed`. The block may reach past the
        picture's edges (that part is left out)."""
        height, width = self._pixels.shape[:2]
        h, w = mask.shape
        cx0, cy0 = max(-x0, 0), max(-y0, 0)  # the part of the block inside the picture
        cx1, cy1 = min(w, width - x0), min(h, height - y0)
        if cx1 <= cx0 or cy1 <= cy0:
            return
        mask = mask[cy0:cy1, cx0:cx1]
        region = self._pixels[y0 + cy0:y0 + cy1, x0 + cx0:x0 + cx1]
        np.copyto(region, pixels[cy0:cy1, cx0:cx1], where=mask[..., None])
        self.changed.append((x0 + cx0, y0 + cy0, mask))

    def replace_image(self, image: np.ndarray) -> None:
        """Make `image` (any size, the same dtype) the whole new picture: nothing of the
        decoder's picture is kept (source and changed are cleared)."""
        self.__dict__.pop("image", None)
        self.image = image
        self.source = None
        self.changed = []


def to_uint8(image: np.ndarray) -> np.ndarray:
    """An (H, W, 3) picture as uint8: itself when it is, else its top 8 bits (uint16 input)."""
    return image if image.dtype == np.uint8 else (image >> 8).astype(np.uint8)
