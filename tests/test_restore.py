"""End to end: the restore stages with a test restorer, and the CLI with a small GPEN."""

from __future__ import annotations

import hashlib
import importlib.util

import av
import cv2
import numpy as np
import pytest
from conftest import SHARED, shared_file, talking_head, tiny_gpen

from gpenvideo import align
from gpenvideo.cli import main
from gpenvideo.compositor import Compositor, face_mask, scaled_transform, upscale
from gpenvideo.config import CompositeConfig, DetectConfig, TrackConfig
from gpenvideo.detector import YuNetDetector
from gpenvideo.engine import run_chain
from gpenvideo.frames import Frame
from gpenvideo.media.decode import Decoder
from gpenvideo.restorer import RestoreStage
from gpenvideo.tracker import Tracker


def stages_on_clip(restore_fn, size=128, frames=40, composite=CompositeConfig()):
    clip = shared_file("media", "sadtalker_WDA_KatieHill_000.mp4")
    det = YuNetDetector(shared_file("weights", "face_detection_yunet_2026may.onnx"),
                        DetectConfig())
    chain = [Tracker(TrackConfig()), RestoreStage(restore_fn, size, 4),
             Compositor(composite, size, 1.0)]
    originals = {}

    def detected(dec):
        for frame in dec.frames():
            if frame.index >= frames:
                break
            originals[frame.index] = frame.image.copy()
            frame.detections = det.detect([frame.image])[0]
            yield frame

    with Decoder(clip) as dec:
        results = list(run_chain(detected(dec), chain))
    return originals, results


def test_pixels_outside_the_masks_are_untouched_and_faces_change():
    plain = CompositeConfig(color_match=False)
    originals, frames = stages_on_clip(lambda crops: 255 - crops, composite=plain)
    comp = Compositor(plain, 128, 1.0)
    assert len(frames) == 40
    for frame in frames:
        orig = originals[frame.index]
        m = align.face_transform(frame.faces[0].smoothed, 128)
        mask = align.warp(comp.mask, align.invert(m), (orig.shape[1], orig.shape[0]))
        outside = mask == 0
        assert np.array_equal(frame.image[outside], orig[outside])
        inside = mask > 0.99
        assert np.abs(frame.image[inside].astype(int) - orig[inside]).mean() > 40
        # the compositor reports exactly the pixels it changed, for the encoder
        reported = np.zeros(outside.shape, bool)
        for x0, y0, region in frame.changed:
            reported[y0:y0 + region.shape[0], x0:x0 + region.shape[1]] |= region
        assert np.array_equal(reported, np.any(frame.image != orig, axis=2))


def test_identity_restorer_round_trip_is_above_45_db():
    originals, frames = stages_on_clip(lambda crops: crops, size=512, frames=12)
    for frame in frames:
        diff = frame.image.astype(np.float64) - originals[frame.index]
        psnr = 10 * np.log10(255**2 / max((diff**2).mean(), 1e-12))
        assert psnr > 45


@pytest.mark.parametrize("detector", ["yunet", "retinaface"])
def test_cli_restore_end_to_end_with_a_small_gpen(tmp_path, detector):
    if detector == "retinaface" and importlib.util.find_spec("facexlib") is None:
        pytest.skip("facexlib is not installed (pip install --no-deps facexlib; .ci/run does)")
    ckpt = tiny_gpen(tmp_path)
    # the real footage with its audio, 40 frames (1.6 s) of it: every frame is checked below
    clip = talking_head(tmp_path / "film.mp4", 40,
                        name="sadtalker_WDA_AlexandriaOcasioCortez_000.mp4")
    out = tmp_path / "out.mp4"
    code = main(["restore", str(clip), "-o", str(out), "--weights", str(ckpt), "--crf", "0",
                 "--detector", detector, "--weights-dir", str(SHARED / "weights"), "--quiet"])
    assert code == 0

    def info(path):
        with av.open(str(path)) as c:
            pts = [f.pts for f in c.decode(video=0)]
        with av.open(str(path)) as c:
            audio = [hashlib.sha256(bytes(p)).hexdigest() for p in c.demux(audio=0) if p.size]
        return pts, audio

    assert info(out) == info(clip)
    with av.open(str(clip)) as a, av.open(str(out)) as b:
        pairs = [(fa.to_ndarray(), fb.to_ndarray())
                 for fa, fb in zip(a.decode(video=0), b.decode(video=0), strict=True)]
    h, w = pairs[0][0].shape[0] * 2 // 3, pairs[0][0].shape[1]
    for ya, yb in ((a[:h].astype(int), b[:h].astype(int)) for a, b in pairs):
        # the face changed; what lies outside its mask's box (this clip's face fills most of
        # the picture; its top-left corner stays clear), encoded losslessly, is the source
        # bit for bit
        assert np.abs(ya - yb)[h // 3: 2 * h // 3, w // 3: 2 * w // 3].mean() > 10
        assert np.array_equal(ya[: h // 16, : w // 16], yb[: h // 16, : w // 16])
        assert (ya == yb).mean() > 0.1


def test_missing_checkpoint_names_the_fetch_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr("gpenvideo.models.weights.REPO_WEIGHTS", tmp_path / "none")
    clip = shared_file("media", "sadtalker_WDA_KatieHill_000.mp4")
    code = main(["restore", str(clip), "-o", str(tmp_path / "o.mp4"), "--quiet",
                 "--weights-dir", str(tmp_path / "w")])
    assert code == 2
    assert "gpenvideo weights fetch gpen-bfr-2048" in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize("dtype", [np.uint16])
def test_compositor_handles_16_bit_frames(dtype):
    comp = Compositor(CompositeConfig(color_match=False), 64, 1.0)
    image = np.full((100, 120, 3), 1000, dtype)
    m = align.face_transform(np.array([[50, 45], [70, 45], [60, 55], [52, 65], [68, 65]]), 64)
    frame = Frame(0, 0, 0, image)
    comp.paste(frame, m, np.zeros((64, 64, 3), np.uint8), np.full((64, 64, 3), 200, np.uint8))
    image = frame.image
    assert image.dtype == dtype and image.max() > 40000 and image[0, 0, 0] == 1000


def face_region(frame, size=128):
    """Pixels of `frame` well inside its first face's mask."""
    m = align.face_transform(frame.faces[0].smoothed, size)
    mask = align.warp(face_mask(size, 0.1), align.invert(m), frame.image.shape[1::-1])
    return mask > 0.99


def tinted(crops):
    out = crops.astype(np.int16)
    out[..., 0] += 60  # a blue cast, as a restorer might add
    return np.clip(out, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("color_match", [True, False])
def test_color_matching_keeps_the_source_face_colour(color_match):
    originals, frames = stages_on_clip(tinted, frames=12,
                                       composite=CompositeConfig(color_match=color_match))
    shifts = []
    for frame in frames:
        inside = face_region(frame)
        shifts.append(frame.image[inside][:, 0].mean()
                      - originals[frame.index][inside][:, 0].mean())
    if color_match:
        assert abs(np.mean(shifts)) < 3
    else:
        assert np.mean(shifts) > 40


def test_upscale_resamples_the_background_and_pastes_faces_at_the_new_size():
    originals, frames = stages_on_clip(lambda crops: 255 - crops, frames=8,
                                       composite=CompositeConfig(upscale=2, color_match=False))
    for frame in frames:
        orig = originals[frame.index]
        h, w = orig.shape[:2]
        assert frame.image.shape == (2 * h, 2 * w, 3)
        expected = upscale(orig, 2)
        m = scaled_transform(align.face_transform(frame.faces[0].smoothed, 128), 2)
        mask = align.warp(face_mask(128, 0.1), align.invert(m), (2 * w, 2 * h))
        assert np.array_equal(frame.image[mask == 0], expected[mask == 0])
        inside = mask > 0.99
        assert np.abs(frame.image[inside].astype(int) - expected[inside]).mean() > 40


def test_a_large_crop_is_shrunk_without_aliasing():
    """A 512 crop of fine stripes pasted into a 40-pixel face averages to grey; a bare warp
    would alias the stripes into coarse bands."""
    comp = Compositor(CompositeConfig(color_match=False), 512, 1.0)
    stripes = np.zeros((512, 512, 3), np.uint8)
    stripes[:, ::2] = 255
    image = np.full((120, 120, 3), 127, np.uint8)
    pts = np.array([[50, 50], [66, 50], [58, 58], [52, 66], [64, 66]], np.float64)
    m = align.face_transform(pts, 512)
    frame = Frame(0, 0, 0, image)
    comp.paste(frame, m, stripes, stripes)
    image = frame.image
    core = image[52:62, 52:62].astype(float)
    assert abs(core.mean() - 127.5) < 10 and core.std() < 12


def test_cli_upscale_2_doubles_the_size_and_keeps_the_timing(tmp_path):
    ckpt = tiny_gpen(tmp_path)
    clip = talking_head(tmp_path / "film.mp4", 25)  # one second of the real footage
    out = tmp_path / "up.mp4"
    assert main(["restore", str(clip), "-o", str(out), "--weights", str(ckpt), "--upscale", "2",
                 "--weights-dir", str(SHARED / "weights"), "--quiet"]) == 0
    with av.open(str(clip)) as a, av.open(str(out)) as b:
        sa, sb = a.streams.video[0], b.streams.video[0]
        assert (sb.width, sb.height) == (2 * sa.width, 2 * sa.height)
        ta = [f.pts * f.time_base for f in a.decode(sa)]
        tb = [f.pts * f.time_base for f in b.decode(sb)]
    assert len(ta) == len(tb) and max(abs(float(x - y)) for x, y in zip(ta, tb)) < 0.0011


def crops_of(warp_device, restore_frames=6):
    """The crops RestoreStage hands to the restorer, cut with OpenCV or with torch."""
    import torch

    seen = []

    def keep(crops):
        seen.append(crops.cpu().numpy() if isinstance(crops, torch.Tensor) else crops)
        return seen[-1]

    clip = shared_file("media", "sadtalker_WDA_KatieHill_000.mp4")
    det = YuNetDetector(shared_file("weights", "face_detection_yunet_2026may.onnx"),
                        DetectConfig())
    tracker, stage = Tracker(TrackConfig()), RestoreStage(keep, 256, 4, warp_device)
    with Decoder(clip) as dec:
        for frame, _ in zip(dec.frames(), range(restore_frames + tracker.lookahead)):
            frame.detections = det.detect([frame.image])[0]
            for out in tracker.process(frame):
                stage.process(out)
    stage.flush()
    return np.concatenate(seen)


def test_crops_cut_with_torch_match_opencv():
    import torch

    cv, tt = crops_of(None), crops_of(torch.device("cpu"))
    assert cv.shape == tt.shape and cv.dtype == tt.dtype == np.uint8
    diff = np.abs(cv.astype(int) - tt)[:, 4:-4, 4:-4]
    assert diff.mean() < 0.5 and np.percentile(diff, 99) <= 2


@pytest.mark.gpu
def test_crops_cut_on_the_gpu_match_opencv():
    import torch

    cv, gpu = crops_of(None), crops_of(torch.device("cuda"))
    diff = np.abs(cv.astype(int) - gpu)[:, 4:-4, 4:-4]
    assert diff.mean() < 0.5 and np.percentile(diff, 99) <= 2


def test_non_square_pixels_give_the_model_the_face_as_it_is_seen(tmp_path):
    # a tape capture stores its picture squeezed (pixel aspect 32:27 here: 12% wider shown than
    # stored); the aligned crop GPEN gets must be the face as displayed, as from square pixels
    from fractions import Fraction

    from clips import make_clip

    from gpenvideo import api

    source = talking_head(tmp_path / "square.mp4", 10)
    with Decoder(source) as dec:
        pictures = [f.image.copy() for f in dec.frames()]
    sar = Fraction(32, 27)
    h, w = pictures[0].shape[:2]
    stored = round(w / float(sar) / 2) * 2
    squeezed = make_clip(tmp_path / "tape.mp4", frames=10, size=(stored, h), sar=sar,
                         codec="libx264", image_fn=lambda i: cv2.resize(
                             pictures[i], (stored, h), interpolation=cv2.INTER_AREA))
    with Decoder(squeezed) as dec:
        assert dec.info.pixel_aspect() == pytest.approx((float(sar), 1.0))
    weights = dict(weights_dir=str(SHARED / "weights"), model="gpen-bfr-512")
    docs = [api.track_video(str(clip), **weights) for clip in (source, squeezed)]
    frame = 5
    crops, matrices = [], []
    for clip, doc in zip((source, squeezed), docs):
        face = next(f for f in doc["frames"][frame]["faces"])
        matrices.append(np.array(face["transform"], np.float64))
        with Decoder(clip) as dec:
            image = next(f.image for f in dec.frames() if f.index == frame)
        crops.append(align.warp(image, matrices[-1], doc["crop_size"]).astype(int))
    # the tape's matrix stretches its columns by the pixel aspect; the square one does not
    norms = [np.linalg.norm(m[:, :2], axis=0) for m in matrices]
    assert norms[0][0] / norms[0][1] == pytest.approx(1.0, abs=1e-6)
    assert norms[1][0] / norms[1][1] == pytest.approx(float(sar), rel=1e-6)
    seen, from_tape = crops
    squashed = align.warp(cv2.resize(pictures[frame], (stored, h), interpolation=cv2.INTER_AREA),
                          align.face_transform(np.array(docs[1]["frames"][frame]["faces"][0][
                              "smoothed"], np.float64), docs[1]["crop_size"]),
                          docs[1]["crop_size"]).astype(int)
    # what the model gets from the tape is the face as seen (up to the two detections'
    # differences), far closer than the squeezed face it got before (looked at: same width)
    assert np.abs(seen - from_tape).mean() < 0.6 * np.abs(seen - squashed).mean()
