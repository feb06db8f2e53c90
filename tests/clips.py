"""Small test clips made with PyAV: moving gradients (and optionally a drawn face-like pattern),
any size, rate, pixel format, container, with optional audio and subtitle streams."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def make_clip(path: Path, *, frames: int = 30, size: tuple[int, int] = (160, 120),
              fps: int = 25, codec: str = "libx264", pix_fmt: str = "yuv420p",
              vfr: bool = False, audio: int = 0, audio_codec: str = "aac",
              rotation: int = 0, colorspace: int | None = None, color_range: int | None = None,
              color_primaries: int | None = None, color_trc: int | None = None,
              interlaced: bool = False, sar: Fraction | None = None,
              metadata: dict[str, str] | None = None, subtitles: bool = False,
              image_fn=None, seconds: float | None = None, gop: int | None = None) -> Path:
    """Write a clip and return its path. `vfr` spaces frames unevenly (1/fps or 2/fps apart).

    image_fn(i) -> (H, W, 3) uint8 BGR picture for frame i (default: a moving gradient).
    gop: frames between keyframes (default: the encoder's).
    """
    if seconds is not None:
        frames = int(seconds * fps)
    width, height = size
    time_base = Fraction(1, fps * 10 if vfr else fps) if codec != "mpeg2video" else None
    with av.open(str(path), "w") as out:
        if metadata:
            out.metadata.update(metadata)
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = pix_fmt
        if time_base is not None:
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
        cc = stream.codec_context
        if colorspace is not None:
            cc.colorspace = colorspace
        if color_range is not None:
            cc.color_range = color_range
        if color_primaries is not None:
            cc.color_primaries = color_primaries
        if color_trc is not None:
            cc.color_trc = color_trc
        if sar is not None:
            cc.sample_aspect_ratio = sar
        if interlaced:
            cc.flags |= av.codec.context.Flags.interlaced_dct | av.codec.context.Flags.interlaced_me
            cc.options = {"flags": "+ilme+ildct", "x264-params": "interlaced=1:tff=1"}
        if rotation:
            stream.set_display_rotation(rotation)
        if gop is not None:
            cc.gop_size = gop
        audio_streams = []
        for k in range(audio):
            a = out.add_stream(audio_codec, rate=16000 if k == 0 else 22050)
            a.codec_context.layout = "stereo" if k == 0 else "mono"
            a.metadata["language"] = ["eng", "fra", "deu"][k % 3]
            audio_streams.append(a)
        cues = _subtitle_cues(path, frames / fps) if subtitles else None
        sub = out.add_stream_from_template(cues.streams.subtitles[0]) if cues else None
        pts = 0
        yy, xx = np.mgrid[0:height, 0:width]
        for i in range(frames):
            if image_fn is not None:
                img = image_fn(i)
            else:
                img = np.stack([(xx * 2 + i * 3) % 256, (yy * 2 + i) % 256,
                                np.full_like(xx, (i * 7) % 256)], axis=-1).astype(np.uint8)
            vf = av.VideoFrame.from_ndarray(img, format="bgr24").reformat(format=pix_fmt)
            if time_base is not None:
                vf.pts = pts
                pts += (20 if (vfr and i % 3 == 1) else 10) if vfr else 1
            for packet in stream.encode(vf):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
        duration = frames / fps * (1.4 if vfr else 1.0)
        for a in audio_streams:
            rate = a.codec_context.sample_rate
            layout = a.codec_context.layout
            fmt = a.codec_context.format.name
            nch = layout.nb_channels
            chunk = 1024
            t0 = 0
            total = int(duration * rate)
            while t0 < total:
                n = min(chunk, total - t0)
                t = (np.arange(t0, t0 + n) / rate).astype(np.float32)
                tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
                planar = fmt.endswith("p")
                if fmt.startswith("s16"):
                    samples = (tone * 32767).astype(np.int16)
                elif fmt.startswith("s32"):
                    samples = (tone * 2**31 * 0.99).astype(np.int32)
                elif fmt.startswith("u8"):
                    samples = ((tone + 1) * 127.5).astype(np.uint8)
                else:
                    samples = tone
                arr = np.tile(samples, (nch, 1)) if planar else np.tile(samples, nch)[None]
                af = av.AudioFrame.from_ndarray(arr, format=fmt, layout=layout)
                af.sample_rate = rate
                af.pts = t0
                af.time_base = Fraction(1, rate)
                for packet in a.encode(af):
                    out.mux(packet)
                t0 += n
            for packet in a.encode(None):
                out.mux(packet)
        if sub is not None:  # the cues' packets copied as they are
            for packet in cues.demux(cues.streams.subtitles[0]):
                if packet.size:
                    packet.stream = sub
                    out.mux(packet)
            cues.close()
            Path(cues.name).unlink()
    return path


def _subtitle_cues(path: Path, seconds: float) -> av.container.InputContainer:
    """An open SubRip file of one cue a second (PyAV has no subtitle encoder: a clip's subtitle
    stream is copied from it). Matroska holds SubRip; MP4 does not."""
    srt = path.with_suffix(".cues.srt")
    lines = []
    for k in range(max(1, int(seconds))):
        lines += [str(k + 1), f"00:00:{k:02d},000 --> 00:00:{k:02d},800", f"line {k}", ""]
    srt.write_text("\n".join(lines), encoding="utf-8")
    return av.open(str(srt))


# the two shared talking heads (../shared/media), for a clip of two faces
TWO_FACE_SOURCES = ("sadtalker_WDA_KatieHill_000.mp4",
                    "sadtalker_WDA_AlexandriaOcasioCortez_000.mp4")


def two_face_clip(path: Path, sources: list[Path], frames: int, side: int = 160,
                  gop: int = 6) -> Path:
    """Write a clip of two films side by side (each downscaled to side x side, e.g. two
    one-face talking heads: the left and the right face) and return its path."""
    import cv2

    from gpenvideo.media import Decoder

    pictures = []
    for source in sources:
        with Decoder(source) as dec:
            pictures.append([cv2.resize(f.image, (side, side), interpolation=cv2.INTER_AREA)
                             for f, _ in zip(dec.frames(), range(frames))])
    return make_clip(path, frames=frames, size=(2 * side, side), gop=gop,
                     image_fn=lambda i: np.hstack([pictures[0][i], pictures[1][i]]))
