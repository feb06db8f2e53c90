"""The paste-back leaves no seam: the mask ends well inside the crop, padding never shows, and
on a real clip restored losslessly the change fades to a few levels at the rim."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest
from clips import make_clip
from conftest import SHARED, shared_file, tiny_gpen

from gpenvideo import align
from gpenvideo.cli import main
from gpenvideo.compositor import Compositor, face_mask, upscale
from gpenvideo.config import CompositeConfig, DetectConfig, TrackConfig
from gpenvideo.media import Decoder
from gpenvideo.detector import YuNetDetector
from gpenvideo.engine import run_chain
from gpenvideo.frames import Frame
from gpenvideo.restorer import RestoreStage
from gpenvideo.tracker import Tracker

FRAMES = 8


@pytest.mark.parametrize("size", [64, 256, 512, 2048])
def test_face_mask_is_zero_near_every_side_and_covers_the_face(size):
    mask = face_mask(size, 0.1)
    band = size // 20
    for edge in (mask[:band], mask[-band:], mask[:, :band], mask[:, -band:]):
        assert edge.max() == 0.0
    # eyes, nose, mouth corners, chin below the mouth, forehead above the eyes, both cheeks
    points = np.vstack([align.TEMPLATE_512, [[256, 430], [256, 120], [125, 300], [387, 300]]])
    for x, y in points * size / 512:
        assert mask[int(y), int(x)] == 1.0
    # soft: no step between neighbours steeper than the smootherstep's over feather * size
    steepest = 1.875 / (0.1 * size)
    assert np.abs(np.diff(mask, axis=0)).max() < 1.1 * steepest
    assert np.abs(np.diff(mask, axis=1)).max() < 1.1 * steepest


def test_crops_near_the_frame_edge_repeat_its_pixels_instead_of_black():
    image = np.full((100, 100, 3), 180, np.uint8)
    corner = np.array([[8, 8], [24, 8], [16, 16], [10, 24], [22, 24]], np.float64)
    m = align.face_transform(corner, 64)
    assert align.warp(image, m, 64, cubic=True).min() == 0  # the frame ends inside the crop
    assert align.warp(image, m, 64, cubic=True, replicate=True).min() == 180


def short_clip(folder, frames=FRAMES):
    """The first `frames` frames of a real talking-head clip at half size with its edges
    extended (so the whole face crop lies inside the frame), coded losslessly (FFV1)."""
    with av.open(str(shared_file("media", "sadtalker_WDA_KatieHill_000.mp4"))) as src:
        pictures = [cv2.copyMakeBorder(cv2.resize(f.to_ndarray(format="bgr24"), (256, 256),
                                                  interpolation=cv2.INTER_AREA),
                                       64, 64, 64, 64, cv2.BORDER_REPLICATE)
                    for f, _ in zip(src.decode(video=0), range(frames))]
    return make_clip(folder / "in.mkv", frames=frames, size=(384, 384), codec="ffv1",
                     image_fn=lambda i: pictures[i])


def rim(changed: np.ndarray) -> np.ndarray:
    """The changed pixels next to the unchanged surroundings (large unchanged areas, not the
    small islands inside a face where the restored value happens to equal the source)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        (~changed).astype(np.uint8), connectivity=4)
    big = [k for k in range(count) if stats[k, cv2.CC_STAT_AREA] > changed.size // 100]
    outside = np.isin(labels, big) & ~changed
    return changed & cv2.dilate(outside.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def rim_and_inside(before: list[np.ndarray], after: list[np.ndarray]):
    """|change| of every pixel at the rim and inside the changed region, over all frames."""
    at_rim, inside = [], []
    for a, b in zip(before, after, strict=True):
        diff = np.abs(a.astype(int) - b)
        if diff.ndim == 3:
            diff = diff.max(2)
        edge = rim(diff > 0)
        at_rim.append(diff[edge])
        inside.append(diff[(diff > 0) & ~edge])
    return np.concatenate(at_rim), np.concatenate(inside)


def luma(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="gray") for f in c.decode(video=0)]


def test_a_clip_restored_losslessly_fades_to_a_few_levels_at_the_rim(tmp_path):
    clip = short_clip(tmp_path)
    out = tmp_path / "out.mkv"
    assert main(["restore", str(clip), "-o", str(out), "--weights", str(tiny_gpen(tmp_path)),
                 "--codec", "ffv1", "--quiet", "--weights-dir", str(SHARED / "weights")]) == 0
    at_rim, inside = rim_and_inside(luma(clip), luma(out))
    assert inside.mean() > 20  # the tiny GPEN redraws the face strongly
    assert at_rim.size > 500 * FRAMES
    assert np.percentile(at_rim, 99) <= 6


def parsed_masks(crops):
    """A stand-in for FaceParser: all but the crops' darkest pixels as the face (an irregular
    outline that reaches the crop's edges), blurred and cleared at the border as FaceParser
    does."""
    size = crops.shape[1]
    sigma, border = 11.0 * 2 ** 0.5 * size / 512, max(1, 10 * size // 512)
    masks = []
    for crop in np.asarray(crops):
        face = (cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) > 60).astype(np.float32)
        face = cv2.GaussianBlur(face, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
        face[:border], face[-border:], face[:, :border], face[:, -border:] = 0, 0, 0, 0
        masks.append(face)
    return np.stack(masks)


def restored_frames(clip, composite: CompositeConfig, parse_fn=None, size=256):
    """The frames of `clip` before and after the restore stages, with an inverting restorer
    (a change as strong as a model's can be)."""
    det = YuNetDetector(shared_file("weights", "face_detection_yunet_2026may.onnx"),
                        DetectConfig())
    chain = [Tracker(TrackConfig()),
             RestoreStage(lambda crops: 255 - np.asarray(crops), size, 4, None, parse_fn),
             Compositor(composite, size, 1.0)]
    before = {}

    def detected(dec):
        for frame in dec.frames():
            before[frame.index] = upscale(frame.image, composite.upscale).copy()
            frame.detections = det.detect([frame.image])[0]
            yield frame

    with Decoder(clip) as dec:
        frames = list(run_chain(detected(dec), chain))
    return [before[f.index] for f in frames], frames


def test_with_a_parsing_mask_the_change_fades_at_the_rim_too(tmp_path):
    size = 256
    before, frames = restored_frames(short_clip(tmp_path), CompositeConfig(), parsed_masks, size)
    at_rim, inside = rim_and_inside(before, [f.image for f in frames])
    assert inside.mean() > 20
    assert np.percentile(at_rim, 99) <= 6
    template = align.warp(face_mask(size, 0.1), align.invert(
        align.face_transform(frames[0].faces[0].smoothed, size)), (384, 384))
    changed = np.any(frames[0].image != before[0], axis=2)
    assert (changed & (template == 0)).sum() == 0


def test_upscaled_frames_fade_to_a_few_levels_at_the_rim(tmp_path):
    before, frames = restored_frames(short_clip(tmp_path), CompositeConfig(upscale=2))
    at_rim, inside = rim_and_inside(before, [f.image for f in frames])
    assert inside.mean() > 20
    assert at_rim.size > 1000 * FRAMES
    assert np.percentile(at_rim, 99) <= 6


def test_strength_0_leaves_the_frame_as_decoded():
    comp = Compositor(CompositeConfig(), 64, 0.0)
    image = np.random.default_rng(1).integers(0, 256, (120, 120, 3), np.uint8)
    pts = np.array([[50, 45], [70, 45], [60, 55], [52, 65], [68, 65]], np.float64)
    frame = Frame(0, 0, 0, image.copy())
    comp.paste(frame, align.face_transform(pts, 64), image[:64, :64],
               np.zeros((64, 64, 3), np.uint8))
    assert np.array_equal(frame.image, image) and frame.changed == []




def test_a_strength_below_1_keeps_the_frames_own_detail():
    # the source's share is the decoded frame's pixels, not the crop resampled to the model's
    # size and back: a 64-px crop of a 94-px face, given back unchanged by the "restorer", is
    # a blurred copy; at strength 0.3 only 0.3 of that blur may show (it all showed)
    image = np.random.default_rng(2).integers(0, 256, (120, 120, 3), np.uint8)  # all detail
    pts = np.array([[50, 45], [70, 45], [60, 55], [52, 65], [68, 65]], np.float64)
    matrix = align.face_transform(pts, 64)
    crop = align.warp(image, matrix, 64, cubic=True, replicate=True)

    def error(strength):
        comp = Compositor(CompositeConfig(color_match=False), 64, strength)
        frame = Frame(0, 0, 0, image.copy())
        comp.paste(frame, matrix, crop, crop)
        return np.abs(frame.image.astype(int) - image)[50:60, 55:65].mean()

    full = error(1.0)
    assert full > 20  # the blur of a 64-px crop over a 94-px face is plain to see
    assert error(0.3) == pytest.approx(0.3 * full, rel=0.15)
    assert error(0.05) < 0.1 * full

def frames_through(warp_device, composite: CompositeConfig, parse_fn=None, strength=0.8,
                   size=256, grey_size=None, compositor=True):
    """The first FRAMES frames of a real clip after the restore stages, with the face path run
    by OpenCV (warp_device None) or by torch on `warp_device`, and a restorer that tints and
    sharpens (so colour match, strength and warp all show)."""
    import torch

    def restore(crops):
        x = crops.cpu().numpy() if isinstance(crops, torch.Tensor) else crops
        out = np.clip(1.5 * x.astype(np.float32) - 40 + [30, 0, -20], 0, 255).astype(np.uint8)
        return out if warp_device is None else torch.from_numpy(out).to(warp_device)

    clip = shared_file("media", "sadtalker_WDA_KatieHill_000.mp4")
    det = YuNetDetector(shared_file("weights", "face_detection_yunet_2026may.onnx"),
                        DetectConfig())
    chain = [Tracker(TrackConfig()),
             RestoreStage(restore, size, 4, warp_device, parse_fn, composite, strength,
                          grey_size)]
    if compositor:
        chain.append(Compositor(composite, size, strength))

    def detected(dec):
        for frame in dec.frames():
            if frame.index >= FRAMES:
                break
            frame.detections = det.detect([frame.image])[0]
            yield frame

    with Decoder(clip) as dec:
        return list(run_chain(detected(dec), chain))


def assert_same_pixels(a: list, b: list):
    assert len(a) == len(b) == FRAMES
    for fa, fb in zip(a, b):
        diff = np.abs(fa.image.astype(int) - fb.image)
        assert diff.mean() < 0.05 and np.percentile(diff[diff > 0], 99) <= 2
        changed = np.zeros(fa.image.shape[:2], bool)
        for x0, y0, region in fb.changed:  # the torch path reports what it changed too
            changed[y0:y0 + region.shape[0], x0:x0 + region.shape[1]] |= region
        assert changed.sum() > 10000


@pytest.mark.parametrize("composite,parse", [
    (CompositeConfig(), False), (CompositeConfig(upscale=2, color_match=False), False),
    (CompositeConfig(), True)])
def test_the_torch_face_path_gives_the_pixels_of_the_opencv_path(composite, parse):
    import torch

    parse_fn = parsed_masks if parse else None
    assert_same_pixels(frames_through(None, composite, parse_fn),
                       frames_through(torch.device("cpu"), composite, parse_fn))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_the_face_path_brings_back_the_quality_figures_greys(device):
    # a GPU run hands the quality stage these small greys, not the crops: reading a crop back
    # would wait for whatever the GPU has queued after it (the next GPEN batch)
    import torch

    from gpenvideo.quality import QUALITY_SIZE, grey_small

    frames = frames_through(torch.device(device), CompositeConfig(), grey_size=QUALITY_SIZE,
                            compositor=False)
    faces = [r for f in frames for r in f.restored]
    assert len(faces) == FRAMES
    for r in faces:
        crop, out = (np.asarray(x.cpu()) for x in (r.crop, r.restored))
        assert all(isinstance(g, np.ndarray) and g.shape == (QUALITY_SIZE, QUALITY_SIZE)
                   for g in r.greys)
        np.testing.assert_allclose(r.greys[0], grey_small(crop), atol=1e-3)
        np.testing.assert_allclose(r.greys[1], grey_small(out), atol=1e-3)
        assert np.abs(r.greys[0] - r.greys[1]).mean() > 5  # the restorer's tint shows


@pytest.mark.gpu
def test_the_cuda_face_path_gives_the_pixels_of_the_opencv_path():
    import torch

    def parse_on_gpu(crops):
        return torch.from_numpy(parsed_masks(crops.cpu().numpy())).cuda()

    for composite, parse_fn in ((CompositeConfig(), None), (CompositeConfig(), parse_on_gpu)):
        assert_same_pixels(frames_through(None, composite, parsed_masks if parse_fn else None),
                           frames_through(torch.device("cuda"), composite, parse_fn))


def face_frame(weight=1.0, matrix=None):
    """A 160x160 grey ramp with one tracked face (landmarks of a 40-px face)."""
    from gpenvideo.frames import Frame, TrackedFace

    ramp = np.add.outer(np.arange(160), np.arange(160)) * 0.5 + 20  # smooth: no detail lost
    image = np.repeat(ramp[..., None], 3, 2).astype(np.uint8)
    pts = np.array([[60, 60], [100, 60], [80, 80], [64, 100], [96, 100]], np.float32)
    face = TrackedFace(1, np.array([40, 40, 120, 120], np.float32), pts, pts, 0.9,
                       weight=weight, matrix=matrix)
    return Frame(0, 0, 1, image, faces=[face])


@pytest.mark.parametrize("device", [None, "cpu"])
def test_a_face_of_weight_0_is_not_pasted_and_half_weight_halves_the_change(device):
    import torch

    warp_device = None if device is None else torch.device(device)
    changes = []
    for weight in (0.0, 0.5, 1.0):
        frame = face_frame(weight)
        before = frame.image.copy()
        stage = RestoreStage(lambda c: 255 - np.asarray(c), 64, 4, warp_device, None,
                             CompositeConfig(color_match=False), 1.0)
        comp = Compositor(CompositeConfig(color_match=False), 64, 1.0)
        (out,) = comp.process(_run(stage, frame))
        changes.append(np.abs(out.image.astype(int) - before).sum())
        if weight == 0:
            assert np.array_equal(out.image, before) and out.changed == []
    assert 0.4 < changes[1] / changes[2] < 0.6


def _run(stage, frame):
    stage.process(frame)
    (done,) = stage.flush()
    return done


def test_the_registered_matrix_is_used_when_set():
    pts = face_frame().faces[0].smoothed
    shifted = align.face_transform(pts + 6, 512)  # registration moved the face 6 px
    seen = []
    stage = RestoreStage(lambda c: seen.append(np.asarray(c)) or 255 - seen[-1], 64, 4)
    _run(stage, face_frame(matrix=shifted))
    _run(stage, face_frame())
    frame = face_frame().image
    assert np.array_equal(seen[0][0], align.warp(frame, shifted * (64 / 512), 64, cubic=True,
                                                 replicate=True))
    assert not np.array_equal(seen[0], seen[1])
