"""frames/s of `gpenvideo restore --identity` (threaded decode -> stage -> encode, audio copied)
against a plain single-threaded PyAV decode-encode loop of the same clip with the same codec
settings, measured in the same run. Usage: python bench/io_bench.py [clip] (default: a generated
10 s 1280x720 clip)."""

from __future__ import annotations

import platform
import sys
import tempfile
import time
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from gpenvideo import pipeline  # noqa: E402
from gpenvideo.config import RestoreConfig  # noqa: E402


def plain(src: Path, dst: Path) -> int:
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        vout = out.add_stream("libx264", rate=vin.average_rate,
                              options={"crf": "18", "preset": "medium"})
        vout.width, vout.height, vout.pix_fmt = vin.width, vin.height, "yuv420p"
        n = 0
        for frame in inp.decode(vin):
            img = frame.to_ndarray(format="bgr24")  # the same conversion the pipeline does
            vf = av.VideoFrame.from_ndarray(img, format="bgr24").reformat(format="yuv420p")
            out.mux(vout.encode(vf))
            n += 1
        out.mux(vout.encode(None))
    return n


def conversion_ms(frames: int = 20) -> dict[str, float]:
    """CPU-ms per 1080p 4:2:0 frame of the steps around the encoder that a frame without faces
    pays: the plain loop's two conversions, and the pipeline's exact decode conversion plus
    the copy of the decoder's planes into the frame it encodes."""
    from gpenvideo.config import EncodeConfig
    from gpenvideo.decoder import Decoder, to_bgr
    from gpenvideo.encoder import Encoder

    tmp = Path(tempfile.mkdtemp())
    from clips import make_clip
    src = make_clip(tmp / "hd.mkv", frames=2, size=(1920, 1080))
    with Decoder(src) as dec:
        frame = next(dec.frames())
        vf = frame.source
        enc = Encoder(tmp / "o.mkv", "matroska", dec.info, EncodeConfig(codec="ffv1"))

    def per_frame(fn) -> float:
        fn()
        t = time.process_time()
        for _ in range(frames):
            fn()
        return (time.process_time() - t) / frames * 1000

    img = vf.to_ndarray(format="bgr24")
    out = {
        "plain decode (to_ndarray bgr24)": per_frame(lambda: vf.to_ndarray(format="bgr24")),
        "plain encode (bgr24 -> yuv420p)": per_frame(
            lambda: av.VideoFrame.from_ndarray(img, format="bgr24").reformat(format="yuv420p")),
        "exact decode (decoder.to_bgr)": per_frame(lambda: to_bgr(vf, "ITU709", "MPEG", False)),
        "planes kept (encoder, no face)": per_frame(lambda: enc._picture(frame)),
    }
    enc._close_containers()
    return out


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    if len(sys.argv) > 1:
        src = Path(sys.argv[1])
    else:
        from clips import make_clip
        src = make_clip(tmp / "bench.mp4", seconds=10, size=(1280, 720), audio=1)
    t = time.perf_counter()
    n = plain(src, tmp / "plain.mp4")
    t_plain = time.perf_counter() - t
    t = time.perf_counter()
    summary = pipeline.run(src, tmp / "ours.mp4", RestoreConfig())
    t_ours = time.perf_counter() - t
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{__import__('os').cpu_count()} cores")
    print(f"clip: {src.name}, {n} frames")
    print(f"plain PyAV loop:        {n / t_plain:7.1f} frames/s")
    print(f"gpenvideo --identity:   {summary.frames / t_ours:7.1f} frames/s")
    print(f"ratio: {t_plain / t_ours:.2f}")
    for step, ms in conversion_ms().items():
        print(f"{step:34s} {ms:6.2f} CPU-ms per 1080p frame")


if __name__ == "__main__":
    main()
