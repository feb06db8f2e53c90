"""Tracker, smoothing, alignment, detection on real clips."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED, shared_file, talking_head

from gpenvideo import align
from gpenvideo.config import RestoreConfig, TrackConfig
from gpenvideo.detector import DetectStage
from gpenvideo.frames import Detection, Frame
from gpenvideo.tracker import Tracker, smooth_path

BASE = np.array([[40, 50], [60, 50], [50, 60], [42, 70], [58, 70]], np.float64)


def det(offset, score=0.9, scale=1.0):
    lm = (BASE - 50) * scale + 50 + np.asarray(offset, np.float64)
    box = np.array([lm[:, 0].min() - 10, lm[:, 1].min() - 15, lm[:, 0].max() + 10,
                    lm[:, 1].max() + 10], np.float32)
    return Detection(box=box, landmarks=lm.astype(np.float32), score=score)


def run(tracker, dets_per_frame, image=None):
    out = []
    for i, dets in enumerate(dets_per_frame):
        img = image(i) if image else np.full((120, 400, 3), 128, np.uint8)
        frame = Frame(index=i, pts=i, duration=1, image=img, detections=dets)
        out += tracker.process(frame)
    return out + list(tracker.flush())


def test_smoothing_reduces_error_to_the_true_path():
    rng = np.random.default_rng(0)
    t = np.arange(120)
    truth = BASE[None] + np.stack([20 * np.sin(t / 15), 5 * np.cos(t / 20)], -1)[:, None]
    noisy = truth + rng.normal(0, 1.0, truth.shape)
    smoothed = smooth_path(noisy, 17, 0.2, 0.5)
    assert np.abs(smoothed - truth).mean() < 0.5 * np.abs(noisy - truth).mean()


def test_slow_motion_passes_and_frame_to_frame_noise_is_removed():
    t = np.arange(200, dtype=np.float64)
    slow = 6.0 * np.sin(2 * np.pi * 0.02 * t)  # 0.5 Hz at 25 fps: a head turning
    flicker = 1.5 * (-1.0) ** t  # a detector that alternates from frame to frame
    path = BASE[None] + np.stack([slow + flicker, np.zeros_like(t)], -1)[:, None]
    smoothed = smooth_path(path, 17, 0.2, 0.5)[:, 0, 0] - BASE[0, 0]
    inner = slice(20, 180)
    assert np.abs(smoothed[inner] - slow[inner]).max() < 0.15  # slow motion kept, no lag
    assert np.abs(smoothed - slow).max() < 0.4 * 1.5  # flicker gone, ends included


def test_a_fast_genuine_move_is_not_lagged():
    t = np.arange(60, dtype=np.float64)
    # still, then a fast pan of 8 px per frame (0.4 eye distances) for 20 frames, then still
    x = np.clip(t - 20, 0, 20) * 8
    path = BASE[None] + np.stack([x, np.zeros_like(x)], -1)[:, None]
    smoothed = smooth_path(path, 17, 0.2, 0.5)
    mid = slice(24, 37)  # inside the move: a lagging filter would trail behind here
    assert np.abs(smoothed[mid] - path[mid]).max() < 0.5
    assert np.abs(smoothed - path).max() < 8.0


def test_two_faces_crossing_keep_their_ids():
    frames = [[det((10 + 6 * i, 0)), det((250 - 6 * i, 5))] for i in range(40)]
    out = run(Tracker(TrackConfig()), frames)
    assert len(out) == 40
    ids_by_x = []
    for f in out:
        assert len(f.faces) == 2
        ids_by_x.append({face.track_id: face.smoothed[0, 0] for face in f.faces})
    first, last = ids_by_x[0], ids_by_x[-1]
    left_id = min(first, key=first.get)
    assert max(last, key=last.get) == left_id  # the face that started left ends right


def test_missed_detection_is_filled_in():
    frames = [[det((i, 0))] if i not in (10, 11) else [] for i in range(30)]
    out = run(Tracker(TrackConfig()), frames)
    assert all(len(f.faces) == 1 for f in out)
    assert out[10].faces[0].raw is None and out[9].faces[0].raw is not None
    assert abs(out[10].faces[0].smoothed[0, 0] - (BASE[0, 0] + 10)) < 0.6
    assert len({f.faces[0].track_id for f in out}) == 1


def test_one_frame_false_positive_makes_no_track():
    frames = [[det((0, 0))] + ([det((250, 20))] if i == 7 else []) for i in range(20)]
    tracker = Tracker(TrackConfig())
    out = run(tracker, frames)
    assert all(len(f.faces) == 1 for f in out) and tracker.tracks_confirmed == 1


def texture(seed: int) -> np.ndarray:
    """(120, 400, 3) uint8 picture of 8-px blocks of random grey: a shot's content."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (15, 50, 1), np.uint8).repeat(8, 0).repeat(8, 1).repeat(3, 2)


def test_scene_cut_ends_tracks():
    # two different pictures joined; a change of brightness alone is no longer a cut (issue 14)
    frames = [[det((0, 0))] for _ in range(30)]
    out = run(Tracker(TrackConfig()), frames, image=lambda i: texture(1 if i < 15 else 2))
    assert [f.index for f in out if f.scene_cut] == [15]
    assert out[0].faces[0].track_id != out[29].faces[0].track_id
    # no fade at a cut: the picture changes there anyway
    assert out[14].faces[0].weight == out[15].faces[0].weight == 1.0


def test_template_reproduces_the_reference_numbers():
    ref = json.loads(shared_file("gpen", "reference_5pts.json").read_text())
    for size, pts in ref.items():
        assert np.abs(align.template(int(size)) - np.array(pts)).max() < 1e-3


def test_umeyama_recovers_a_similarity():
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = BASE @ rot.T + shift
    m = align.umeyama(BASE, dst)
    assert np.allclose(m[:, :2], rot, atol=1e-9) and np.allclose(m[:, 2], shift, atol=1e-9)
    assert np.allclose(align.face_transform(align.template(512) / 2, 256)[:, :2], np.eye(2))


def test_cpu_and_torch_warps_agree():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (90, 120, 3)).astype(np.float32)
    image = np.ascontiguousarray(np.cumsum(np.cumsum(image, 0), 1) / 500 % 255)
    m = align.face_transform(BASE + [20, 5], 64)
    cpu = align.warp(image, m, 64)
    gpu = align.warp_torch(torch.from_numpy(image).permute(2, 0, 1)[None].double(), m[None], 64)
    gpu = gpu[0].permute(1, 2, 0).numpy()
    assert np.abs(cpu - gpu)[2:-2, 2:-2].mean() < 0.05


@pytest.mark.parametrize("clip", ["sadtalker_WDA_KatieHill_000.mp4",
                                  "sadtalker_WDA_AlexandriaOcasioCortez_000.mp4"])
def test_real_clip_tracks_one_face_in_every_frame(clip, tmp_path):
    from gpenvideo.cli import main

    path = shared_file("media", clip)
    out = tmp_path / "tracks.json"
    assert main(["track", str(path), "-o", str(out), "--weights-dir",
                 str(SHARED / "weights"), "--quiet"]) == 0
    doc = json.loads(out.read_text())
    assert len(doc["frames"]) == 200
    assert all(len(f["faces"]) == 1 for f in doc["frames"])
    assert len({f["faces"][0]["track"] for f in doc["frames"]}) == 1
    face = doc["frames"][50]["faces"][0]
    assert face["smoothed"][0][0] < face["smoothed"][1][0]  # image-left eye first
    assert doc["frames"][1]["pts"] == pytest.approx(0.04)
    # a face seen throughout a clean clip is restored in full in every frame
    assert all(f["faces"][0]["weight"] == 1.0 for f in doc["frames"])


def test_default_config_file_mirrors_the_dataclasses():
    from pathlib import Path

    from gpenvideo.config import load_config
    cfg_path = Path(__file__).resolve().parents[1] / "configs" / "default.toml"
    assert load_config(cfg_path) == RestoreConfig()


def test_detect_stage_batches_frames_and_keeps_their_order():
    class Recording:
        batch_size = 3

        def __init__(self):
            self.calls = []

        def detect(self, images):
            self.calls.append(len(images))
            return [[det((float(img[0, 0, 0]), 0))] for img in images]

    detector = Recording()
    stage = DetectStage(detector)
    out = []
    for i in range(7):
        img = np.full((8, 8, 3), i, np.uint8)
        out += stage.process(Frame(index=i, pts=i, duration=1, image=img))
        assert len(out) == 3 * ((i + 1) // 3)  # held back until a batch is full
    out += stage.flush()
    assert detector.calls == [3, 3, 1]
    assert [f.index for f in out] == list(range(7))
    assert [f.detections[0].landmarks[0, 0] - BASE[0, 0] for f in out] == list(range(7))


needs_facexlib = pytest.mark.skipif(
    importlib.util.find_spec("facexlib") is None,
    reason="facexlib is not installed (pip install --no-deps facexlib; .ci/run does)")


def _frames(clip: str, n: int) -> list[np.ndarray]:
    from gpenvideo.media.decode import Decoder

    with Decoder(shared_file("media", clip)) as dec:
        return [f.image for f, _ in zip(dec.frames(), range(n))]


@needs_facexlib
def test_retinaface_agrees_with_yunet_on_a_real_clip():
    from gpenvideo.config import DetectConfig
    from gpenvideo.detector import RetinaFaceDetector, YuNetDetector

    weights = shared_file("weights", "detection_mobilenet0.25_Final.pth")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    retina = RetinaFaceDetector(weights, DetectConfig(backend="retinaface", batch_size=8), device)
    yunet = YuNetDetector(weights.parent / "face_detection_yunet_2026may.onnx", DetectConfig())
    images = _frames("sadtalker_WDA_KatieHill_000.mp4", 16)
    for ours, ref in zip(retina.detect(images), yunet.detect(images)):  # one batch of 16
        assert len(ours) == len(ref) == 1
        iod = np.linalg.norm(ref[0].landmarks[1] - ref[0].landmarks[0])
        assert ours[0].landmarks[0, 0] < ours[0].landmarks[1, 0]  # image-left eye first
        assert np.linalg.norm(ours[0].landmarks - ref[0].landmarks, axis=1).max() < 0.15 * iod
        assert ours[0].score > 0.9


@needs_facexlib
def test_retinaface_batches_frames_of_different_sizes_as_it_detects_them_alone():
    from gpenvideo.models.retinaface import detect_batch, load_retinaface

    net = load_retinaface(shared_file("weights", "detection_mobilenet0.25_Final.pth"),
                          "mobilenet0.25")
    image = _frames("sadtalker_WDA_AlexandriaOcasioCortez_000.mp4", 1)[0]
    images = [image, np.ascontiguousarray(image[64:, 32:]), image[:, ::-1].copy()]
    together = detect_batch(net, images, 0.6, 0.3)
    for rows, img in zip(together, images):
        alone = detect_batch(net, [img], 0.6, 0.3)[0]
        assert rows.shape == alone.shape == (1, 15)
        np.testing.assert_allclose(rows, alone, atol=1e-2)
    # the cropped picture's face is the same face, shifted by the crop (a multiple of the
    # network's coarsest stride, 32, so its grid of anchors stays put on the face)
    np.testing.assert_allclose(together[1][0, 5:].reshape(5, 2) + [32, 64],
                               together[0][0, 5:].reshape(5, 2), atol=1.5)


@needs_facexlib
def test_retinaface_priors_and_decoding_match_facexlib(monkeypatch):
    import sys
    import types

    from gpenvideo.models import retinaface as ours

    # facexlib's retinaface_utils imports torchvision (for NMS only): stand in an empty module
    monkeypatch.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))
    path = Path(importlib.util.find_spec("facexlib").submodule_search_locations[0])
    spec = importlib.util.spec_from_file_location("_fx_utils",
                                                  path / "detection" / "retinaface_utils.py")
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    cfg = {"min_sizes": [[16, 32], [64, 128], [256, 512]], "steps": [8, 16, 32], "clip": False}
    for h, w in ((480, 640), (301, 517)):
        anchors = ours.priors(h, w)
        expected = ref.PriorBox(cfg, image_size=(h, w)).forward()
        torch.testing.assert_close(anchors, expected)
        gen = torch.Generator().manual_seed(h)
        loc = torch.randn(len(anchors), 4, generator=gen)
        landm = torch.randn(len(anchors), 10, generator=gen)
        boxes, points = ours.decode(loc, landm, anchors)
        torch.testing.assert_close(boxes, ref.decode(loc, anchors, [0.1, 0.2]))
        torch.testing.assert_close(points.flatten(-2), ref.decode_landm(landm, anchors,
                                                                        [0.1, 0.2]))


def test_nms_keeps_the_best_of_overlapping_boxes():
    from gpenvideo.models.retinaface import nms

    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 9]],
                     np.float32)
    scores = np.array([0.8, 0.9, 0.7, 0.6], np.float32)
    assert list(nms(boxes, scores, 0.5)) == [1, 2]
    assert list(nms(boxes, scores, 0.95)) == [1, 0, 2, 3]


@needs_facexlib
def test_retinaface_resnet50_is_torchvisions_resnet50_trunk():
    from gpenvideo.models.retinaface import RetinaFaceNet, priors

    net = RetinaFaceNet("resnet50")
    trunk = sum(p.numel() for p in net.body.parameters())
    assert trunk == 25_557_032 - (2048 * 1000 + 1000)  # torchvision resnet50 without its fc
    keys = net.state_dict().keys()
    assert "body.layer4.2.bn3.running_var" in keys and "body.layer1.0.downsample.0.weight" in keys
    with torch.inference_mode():
        loc, scores, landm = net.eval()(torch.zeros(1, 3, 96, 160))
    assert loc.shape == (1, len(priors(96, 160)), 4) and landm.shape[-1] == 10
    assert scores.shape == loc.shape[:2]


@needs_facexlib
def test_a_truncated_retinaface_checkpoint_names_the_missing_key(tmp_path):
    from gpenvideo.errors import WeightsError
    from gpenvideo.models.retinaface import load_retinaface

    state = torch.load(shared_file("weights", "detection_mobilenet0.25_Final.pth"),
                       map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if "LandmarkHead" not in k}
    bad = tmp_path / "detection_mobilenet0.25_Final.pth"
    torch.save(state, bad)
    with pytest.raises(WeightsError, match=r"missing key '.*LandmarkHead"):
        load_retinaface(bad, "mobilenet0.25")


def test_retinaface_without_facexlib_names_the_extra(monkeypatch):
    from gpenvideo.config import DetectConfig
    from gpenvideo.detector import RetinaFaceDetector
    from gpenvideo.errors import InputError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "facexlib" else real(name, *a))
    with pytest.raises(InputError, match=r"pip install 'gpenvideo\[retinaface\]'"):
        RetinaFaceDetector("unused.pth", DetectConfig(backend="retinaface"), "cpu")


@needs_facexlib
def test_track_command_with_retinaface_follows_the_face(tmp_path):
    from gpenvideo.cli import main

    path = talking_head(tmp_path / "film.mp4", 50)  # two seconds of the real footage
    out = tmp_path / "tracks.json"
    assert main(["track", str(path), "-o", str(out), "--detector", "retinaface",
                 "--weights-dir", str(SHARED / "weights"), "--quiet"]) == 0
    doc = json.loads(out.read_text())
    assert len(doc["frames"]) == 50
    assert all(len(f["faces"]) == 1 for f in doc["frames"])
    assert len({f["faces"][0]["track"] for f in doc["frames"]}) == 1


def test_lookahead_is_enough_frames_to_give_the_final_answer():
    rng = np.random.default_rng(3)
    path = [det((3 * i + rng.normal(0, 1.5), 40 * np.sin(i / 9) + rng.normal(0, 1.5)))
            for i in range(80)]
    dets = [[] if i in (20, 21, 22, 50) else [d] for i, d in enumerate(path)]
    streamed, whole = Tracker(TrackConfig()), Tracker(TrackConfig())
    whole.lookahead = 10 ** 6  # holds everything until flush: sees the whole future
    released = []
    for i, ds in enumerate(dets):
        out = streamed.process(Frame(index=i, pts=i, duration=1,
                                     image=np.full((120, 400, 3), 128, np.uint8), detections=ds))
        released += [(i, f.index) for f in out]
    # each frame leaves exactly `lookahead` frames after it arrived
    assert released and all(i - k == streamed.lookahead for i, k in released)
    ref = run(whole, dets)
    got = run(Tracker(TrackConfig()), dets)
    assert len(got) == len(ref) == 80
    for g, r in zip(got, ref):
        assert len(g.faces) == len(r.faces) == 1
        np.testing.assert_allclose(g.faces[0].smoothed, r.faces[0].smoothed, atol=1e-4)
        assert g.faces[0].weight == r.faces[0].weight  # the fade, too, is final when handed on
    assert min(f.faces[0].weight for f in got) == 0.0  # (the 3-frame gap fades out)


def test_a_gap_in_a_noisy_moving_track_is_filled_with_one_id():
    # a small face (20 px between the eyes) moving 3-4 px a frame with 1.5 px of detector
    # noise, missed for 3 frames: extrapolating from its last two detections alone would
    # miss it by about 10 px when it comes back, and start a new track
    rng = np.random.default_rng(3)
    dets = [[det((3 * i + rng.normal(0, 1.5), 40 * np.sin(i / 9) + rng.normal(0, 1.5)))]
            for i in range(40)]
    for i in (20, 21, 22):
        dets[i] = []
    out = run(Tracker(TrackConfig()), dets)
    assert all(len(f.faces) == 1 for f in out)
    assert {f.faces[0].track_id for f in out} == {1}
    assert [f.index for f in out if f.faces[0].raw is None] == [20, 21, 22]


def test_max_faces_keeps_the_largest():
    dets = [[det((0, 0), scale=1.0), det((150, 0), scale=2.0), det((300, 0), scale=1.5)]
            for _ in range(12)]
    out = run(Tracker(TrackConfig(max_faces=2)), dets)
    for frame in out:
        widths = sorted(round(float(f.box[2] - f.box[0])) for f in frame.faces)
        assert widths == [50, 60]  # scales 1.5 and 2 (box = landmark spread + 20 px)


def test_large_frames_are_detected_at_the_capped_size_and_mapped_back():
    import cv2

    from gpenvideo.config import DetectConfig
    from gpenvideo.detector import YuNetDetector

    model = shared_file("weights", "face_detection_yunet_2026may.onnx")
    image = _frames("sadtalker_WDA_KatieHill_000.mp4", 1)[0]
    big = cv2.resize(image, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)  # 1536 px
    small = YuNetDetector(model, DetectConfig()).detect([image])[0]
    capped = YuNetDetector(model, DetectConfig(max_side=512)).detect([big])[0]
    assert len(small) == len(capped) == 1
    iod = np.linalg.norm(small[0].landmarks[1] - small[0].landmarks[0])
    # detected on the picture shrunk back to 512 px: 3x the small picture's points
    assert np.abs(capped[0].landmarks - 3 * small[0].landmarks).max() < 0.1 * 3 * iod
    assert np.abs(capped[0].box - 3 * small[0].box).max() < 0.1 * 3 * iod


@pytest.mark.parametrize("backend", ["yunet", "retinaface"])
def test_min_face_size_and_score_threshold_drop_faces(backend):
    from gpenvideo.config import DetectConfig
    from gpenvideo.detector import create_detector

    if backend == "retinaface" and importlib.util.find_spec("facexlib") is None:
        pytest.skip("facexlib is not installed (pip install --no-deps facexlib; .ci/run does)")
    weights = str(shared_file("weights", "face_detection_yunet_2026may.onnx").parent)
    image = _frames("sadtalker_WDA_KatieHill_000.mp4", 1)[0]
    found = create_detector(DetectConfig(backend=backend), weights).detect([image])[0]
    assert len(found) == 1
    side = float(min(found[0].box[2] - found[0].box[0], found[0].box[3] - found[0].box[1]))
    score = found[0].score
    for cfg in (DetectConfig(backend=backend, min_face_size=int(side) + 2),
                DetectConfig(backend=backend, score_threshold=min(1.0, score + 1e-3))):
        assert create_detector(cfg, weights).detect([image])[0] == []
    kept = DetectConfig(backend=backend, min_face_size=int(side) - 2,
                        score_threshold=score - 1e-3)
    assert len(create_detector(kept, weights).detect([image])[0]) == 1


@needs_facexlib
def test_retinaface_default_threshold_keeps_the_sample_clips_face_and_drops_her_cap_badge():
    from gpenvideo.api import track_video
    from gpenvideo.config import DetectConfig
    from gpenvideo.detector import score_threshold

    sample = Path(__file__).resolve().parents[1] / "samples" / "grace_hopper_homemovie.mp4"
    weights = str(shared_file("weights", "detection_mobilenet0.25_Final.pth").parent)
    assert score_threshold(DetectConfig(backend="retinaface")) == 0.9
    assert score_threshold(DetectConfig(backend="retinaface", score_threshold=0.5)) == 0.5
    cfg = RestoreConfig().replace("detect", backend="retinaface").replace(
        "model", weights_dir=weights)
    doc = track_video(sample, config=cfg)
    assert all(len(f["faces"]) == 1 for f in doc["frames"])
    # at a YuNet-like 0.6 the badge on her cap (scores up to 0.78) becomes a second track,
    # and GPEN would paint a face on it
    loose = track_video(sample, config=cfg, score_threshold=0.6)
    assert len({x["track"] for f in loose["frames"] for x in f["faces"]}) == 2


def test_auto_detector_is_retinaface_on_a_gpu_with_its_weights_else_yunet(tmp_path, monkeypatch):
    from gpenvideo import detector
    from gpenvideo.config import DetectConfig
    from gpenvideo.detector import resolve_backend, score_threshold, weights_name

    auto = DetectConfig()
    assert auto.backend == "auto"
    assert resolve_backend(auto, None, "cpu").backend == "yunet"  # no GPU: YuNet on the CPU
    assert resolve_backend(DetectConfig(backend="retinaface"), None, "cpu").backend == \
        "retinaface"
    monkeypatch.setattr(detector, "_on_cuda", lambda device: device.startswith("cuda"))
    monkeypatch.setenv("GPENVIDEO_WEIGHTS", str(tmp_path / "none"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert resolve_backend(auto, str(empty), "cuda").backend == "yunet"  # its weights missing
    if importlib.util.find_spec("facexlib") is None:
        return
    retina = shared_file("weights", "detection_mobilenet0.25_Final.pth")
    gpu = resolve_backend(auto, str(retina.parent), "cuda")
    assert gpu.backend == "retinaface" and score_threshold(gpu) == 0.9
    assert weights_name(auto, str(retina.parent), "cuda") == "retinaface-mobilenet0.25"
    assert weights_name(auto, str(retina.parent), "cpu") == "yunet"
    with pytest.raises(ValueError, match="resolve_backend"):
        score_threshold(auto)


@pytest.mark.parametrize("hold", [0, 1])
def test_a_gap_while_a_face_fades_in_or_out_does_not_blink_the_restoration(hold):
    # a face entering at frame 20, missed over 23-25 while it fades in; one leaving after
    # frame 39, missed over 35-38 while it fades out (with hold_frames 0, over 37 alone); a
    # third face in every frame keeps the film going. Fading out across those gaps and back
    # in would blink the restoration: the weight must rise (fall) monotonically along one
    # raised-cosine ramp from the track's first frame (to its last)
    ramp = 5
    entering = {i: det((150 + i, 0)) for i in range(20, 60) if i not in (23, 24, 25)}
    out_gap = (37,) if hold == 0 else (35, 36, 37, 38)
    leaving = {i: det((300 - i, 0)) for i in range(40) if i not in out_gap}
    dets = [[det((i, 0))] + [d[i] for d in (entering, leaving) if i in d] for i in range(60)]
    cfg = TrackConfig(ramp_frames=ramp, hold_frames=hold)
    out = run(Tracker(cfg), dets)
    whole = Tracker(cfg)
    whole.lookahead = 10 ** 6  # sees the whole future: the weights handed on are final
    assert [[f.weight for f in g.faces] for g in out] == \
        [[f.weight for f in g.faces] for g in run(whole, dets)]
    tracks = {}  # track id -> its weight in each frame it is in
    for g in out:
        for f in g.faces:
            tracks.setdefault(f.track_id, {})[g.index] = f.weight
    assert len(tracks) == 3
    w_in, w_out = (next(w for w in tracks.values() if min(w) == 20),
                   next(w for w in tracks.values() if max(w) == 39))
    rising = [(k + 1) / (ramp + 1) for k in range(ramp)]
    assert sorted(w_in) == list(range(20, 60))
    np.testing.assert_allclose([w_in[20 + k] for k in range(ramp)],
                               [0.5 - 0.5 * np.cos(np.pi * x) for x in rising])
    assert np.all(np.diff([w_in[i] for i in range(20, 30)]) >= 0)
    assert all(w_in[i] == 1.0 for i in range(20 + ramp, 60))
    assert sorted(w_out) == list(range(40))
    np.testing.assert_allclose([w_out[39 - k] for k in range(ramp)],
                               [0.5 - 0.5 * np.cos(np.pi * x) for x in rising])
    assert np.all(np.diff([w_out[i] for i in range(30, 40)]) <= 0)
    assert all(w_out[i] == 1.0 for i in range(40 - ramp))
    steady = next(w for w in tracks.values() if len(w) == 60)
    assert all(w == 1.0 for w in steady.values())


def test_a_long_gap_while_a_face_fades_in_still_fades_it_out():
    # the same entering face lost for 8 frames (a hand in front) during its fade-in: no face
    # is restored onto the hand, the gap's frames away from a detection get 0
    dets = [[det((i, 0))] + ([det((150 + i, 0))] if i >= 20 and not 23 <= i < 31 else [])
            for i in range(60)]
    out = run(Tracker(TrackConfig()), dets)
    w = {g.index: f.weight for g in out for f in g.faces if f.track_id == 2}
    assert all(w[i] == 0.0 for i in range(24, 30)) and w[40] == 1.0


def test_a_blank_frame_in_a_gap_while_a_face_fades_in_still_gets_0_alone():
    # the entering face's gap (23-25) is bridged by its fade-in, but frame 24 is blown out to
    # white: no face to restore there (weight 0), its neighbours stay on the ramp
    texture = np.random.default_rng(5).integers(0, 256, (120, 400, 3), np.uint8)
    white = np.full_like(texture, 255)
    dets = [[det((150 + i, 0))] if i >= 20 and i not in (23, 24, 25) else [] for i in range(50)]
    out = run(Tracker(TrackConfig(ramp_frames=5, hold_frames=1)), dets,
              image=lambda i: white if i == 24 else texture)
    w = {g.index: f.weight for g in out for f in g.faces}
    assert sorted(w) == list(range(20, 50))
    assert w[24] == 0.0
    assert np.all(np.diff([w[i] for i in range(20, 24)]) > 0) and w[23] > 0.5
    assert all(w[i] == 1.0 for i in range(25, 50))  # the ramp's 5 frames are 20-24
