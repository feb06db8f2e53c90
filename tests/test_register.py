"""Registration of the aligned crop over time (gpenvideo.register)."""

from __future__ import annotations

import json

import av
import cv2
import numpy as np
import pytest
from conftest import SHARED, shared_file, tiny_gpen
from scipy.signal import savgol_filter

from gpenvideo import align
from gpenvideo.config import DetectConfig, RegisterConfig, TrackConfig
from gpenvideo.detector import DetectStage, create_detector
from gpenvideo.engine import run_chain
from gpenvideo.frames import Frame, TrackedFace
from gpenvideo.media.decode import Decoder
from gpenvideo.quality import QUALITY_SIZE, TrackLedger
from gpenvideo.register import TEMPLATE_EYE_DISTANCE, Registrar, crop_motion, landmark_matrix
from gpenvideo.tracker import Tracker

CLIP = "sadtalker_WDA_KatieHill_000.mp4"
FRAMES = 100


@pytest.fixture(scope="module")
def tracked():
    """The first FRAMES frames of a real clip, detected and tracked (one face)."""
    path = shared_file("media", CLIP)
    detector = create_detector(DetectConfig(), str(SHARED / "weights"), "cpu")
    with Decoder(path) as dec:
        frames = [f for f in dec.frames() if f.index < FRAMES]
    return list(run_chain(frames, [DetectStage(detector), Tracker(TrackConfig())]))


def register(frames: list[Frame], cfg: RegisterConfig | None = None) -> list[Frame]:
    """Copies of `frames` (faces and all) through a fresh Registrar."""
    copies = [Frame(index=f.index, pts=f.pts, duration=f.duration, image=f.image,
                    faces=list(f.faces)) for f in frames]
    return list(run_chain(copies, [Registrar(cfg)]))


def test_registration_holds_the_face_still_in_its_crop(tracked):
    out = register(tracked)
    assert all(len(f.faces) == 1 and f.faces[0].matrix is not None for f in out)
    images = [f.image for f in out]
    raw = np.stack([f.faces[0].raw if f.faces[0].raw is not None else f.faces[0].smoothed
                    for f in tracked]).astype(np.float64)
    sg = savgol_filter(raw, 9, 2, axis=0, mode="interp")
    savgol, _ = crop_motion(images, [align.face_transform(p, 512) for p in sg])
    smoother, _ = crop_motion(images, [landmark_matrix(f.faces[0]) for f in tracked])
    full, left_out = crop_motion(images, [f.faces[0].matrix for f in out])
    assert left_out == 0
    assert full < 0.7 * savgol
    assert full < 0.7 * smoother
    # corrections stay within the clamp, relative to each frame's own landmark transform
    limit = RegisterConfig().max_shift * TEMPLATE_EYE_DISTANCE
    for before, after in zip(tracked, out):
        shift = after.faces[0].matrix - landmark_matrix(before.faces[0])
        assert np.allclose(shift[:, :2], 0)
        assert np.linalg.norm(shift[:, 2]) <= limit + 1e-9


def test_an_occluder_falls_back_to_the_landmark_transform(tracked):
    """A textured card slides across the face for 10 frames (the landmarks stay as detected
    on the clean frames): the registration must not follow the card."""
    x0, y0, x1, y1 = tracked[40].faces[0].box.astype(int)
    w, h = x1 - x0, y1 - y0
    card = np.random.default_rng(1).integers(60, 200, (h // 8 + 1, w // 8 + 1, 3), np.uint8)
    card = cv2.resize(card, (w, h), interpolation=cv2.INTER_LINEAR)
    occluded = []
    for f in tracked:
        image = f.image.copy()
        if 40 <= f.index < 50:
            left = x0 - w + int(2 * w * (f.index - 40) / 9)
            a, b = max(left, 0), min(left + w, image.shape[1])
            image[y0:y1, a:b] = card[:, a - left:b - left]
        occluded.append(Frame(index=f.index, pts=f.pts, duration=f.duration, image=image,
                              faces=list(f.faces)))
    clean = register(tracked)
    out = register(occluded)
    limit = RegisterConfig().max_shift * TEMPLATE_EYE_DISTANCE
    for before, after, ref in zip(tracked, out, clean):
        shift = after.faces[0].matrix[:, 2] - landmark_matrix(before.faces[0])[:, 2]
        if 43 <= before.index <= 45:  # the card covers most of the face: landmarks alone
            assert np.linalg.norm(shift) < 0.15 * limit
        # never far from where the registration puts the crop without the card
        assert np.linalg.norm(after.faces[0].matrix - ref.faces[0].matrix) < 0.3 * limit
        if before.index < 30 or before.index >= 60:  # out of reach of the card
            assert np.allclose(after.faces[0].matrix, ref.faces[0].matrix)
    # no jump: around the card the correction changes from frame to frame no more than it
    # does anywhere on the clean clip (where it follows the picture's real motion)
    def shifts(frames):
        return np.array([a.faces[0].matrix[:, 2] - landmark_matrix(b.faces[0])[:, 2]
                         for a, b in zip(frames, tracked)])

    steps = np.linalg.norm(np.diff(shifts(out), axis=0), axis=1)
    clean_steps = np.linalg.norm(np.diff(shifts(clean), axis=0), axis=1)
    assert steps[32:58].max() <= clean_steps.max()


def synthetic_track(frames: int, size: int = 96, seed: int = 0):
    """A textured face moving on a known path in small frames, with noisy landmarks (0.03 eye
    distances of white noise per coordinate). Yields (frame with its face, true frame -> 512
    crop matrix)."""
    rng = np.random.default_rng(seed)
    tex = sum(cv2.resize(rng.random((n, n)).astype(np.float32), (512, 512),
                         interpolation=cv2.INTER_CUBIC) / (1 + i)
              for i, n in enumerate((6, 24, 96)))
    tex = cv2.normalize(tex, None, 30, 225, cv2.NORM_MINMAX)
    tex = cv2.cvtColor(tex.astype(np.uint8), cv2.COLOR_GRAY2BGR)
    iod = 30.0
    for i in range(frames):
        t = i / 25.0
        to_frame = cv2.getRotationMatrix2D((256.0, 256.0), 6 * np.sin(0.7 * t),
                                           iod / TEMPLATE_EYE_DISTANCE)
        to_frame[:, 2] += (size / 2 + 8 * np.sin(0.9 * t) - 256.0,
                           size / 2 + 5 * np.sin(1.3 * t + 1) - 256.0)
        image = cv2.warpAffine(tex, to_frame, (size, size), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT)
        truth = align.TEMPLATE_512 @ to_frame[:, :2].T + to_frame[:, 2]
        noisy = (truth + rng.normal(0, 0.03 * iod, truth.shape)).astype(np.float32)
        face = TrackedFace(track_id=1, box=np.array([0, 0, size, size], np.float32),
                           raw=noisy, smoothed=noisy, score=0.9)
        yield Frame(index=i, pts=i, duration=1, image=image, faces=[face]), \
            align.invert(to_frame)


def test_no_drift_over_a_60_second_track():
    registrar = Registrar()
    truths: dict[int, np.ndarray] = {}
    errors, landmark_errors = [], []
    eyes = np.array([256.0, 242.6])  # the eyes' midpoint in the template

    def error(m: np.ndarray, truth: np.ndarray) -> np.ndarray:
        """(2,) template px from where the truth puts the eyes' midpoint to where m does."""
        at = align.invert(truth) @ np.append(eyes, 1.0)
        return m @ np.append(at, 1.0) - eyes

    def check(frame: Frame) -> None:
        truth = truths.pop(frame.index)
        errors.append(error(frame.faces[0].matrix, truth))
        landmark_errors.append(error(landmark_matrix(frame.faces[0]), truth))

    for frame, truth in synthetic_track(60 * 25):
        truths[frame.index] = truth
        for out in registrar.process(frame):
            check(out)
        # memory stays bounded by the window, however long the track
        assert len(registrar._patches) <= 2 * registrar.half + 2
    for out in registrar.flush():
        check(out)
    err, lm_err = np.asarray(errors), np.asarray(landmark_errors)
    assert len(err) == 1500
    dist = np.linalg.norm(err, axis=1)
    assert dist[-250:].mean() < 1.3 * dist[:250].mean() + 0.5  # no walk away from the truth
    assert dist.max() < 0.15 * TEMPLATE_EYE_DISTANCE
    # frame to frame, the registered crops move much less against the truth than the
    # landmark crops
    jitter = np.linalg.norm(np.diff(err, axis=0), axis=1).mean()
    assert jitter < 0.5 * np.linalg.norm(np.diff(lm_err, axis=0), axis=1).mean()


def test_one_phase_correlation_serves_registration_and_quality_figures(monkeypatch):
    """align.phase_shift finds a known sub-pixel shift of a bright textured patch (its mean is
    removed first), and both the registration (crop_motion) and the per-track quality figures
    (TrackLedger) measure motion with it, not with a copy of their own."""
    rng = np.random.default_rng(3)
    tex = cv2.GaussianBlur(rng.uniform(0, 255, (96, 96)), (0, 0), 1.0).astype(np.float32) + 120
    window = align.hanning((64, 64))
    errors = []
    for d in rng.uniform(-3, 3, (10, 2)):
        moved = cv2.warpAffine(tex, np.array([[1, 0, d[0]], [0, 1, d[1]]]), (96, 96),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        shift, response = align.phase_shift(tex[16:80, 16:80], moved[16:80, 16:80], window)
        assert response > 0.3
        errors.append(np.linalg.norm(shift - d))
    assert np.mean(errors) < 0.2

    shapes = []
    real = align.phase_shift

    def counted(a, b, w):
        shapes.append(a.shape)
        return real(a, b, w)

    monkeypatch.setattr(align, "phase_shift", counted)
    frames = [frame for frame, _ in synthetic_track(3)]
    crop_motion([f.image for f in frames], [landmark_matrix(f.faces[0]) for f in frames])
    assert len(shapes) == 2
    ledger = TrackLedger()
    for frame in frames:
        ledger.measure(frame)
    assert shapes[2:] == [(QUALITY_SIZE, QUALITY_SIZE)] * 2
    assert ledger.rows()[0]["motion"] is not None


def test_registration_off_hands_the_frames_through(tracked):
    out = register(tracked[:5], RegisterConfig(enabled=False))
    assert [f.faces[0].matrix for f in out] == [None] * 5


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory):
    """The first 30 frames of the real clip as a file of its own."""
    src = shared_file("media", CLIP)
    path = tmp_path_factory.mktemp("clip") / "short.mp4"
    with av.open(str(src)) as inp, av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 512, 512, "yuv420p"
        for i, frame in enumerate(inp.decode(video=0)):
            if i == 30:
                break
            for packet in stream.encode(frame.reformat(format="yuv420p")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def short_clip_matrices(short_clip):
    """The Registrar's frame -> 512 crop matrices of the short clip's face, frame by frame."""
    detector = create_detector(DetectConfig(), str(SHARED / "weights"), "cpu")
    with Decoder(short_clip) as dec:
        chain = [DetectStage(detector), Tracker(TrackConfig()), Registrar()]
        return [f.faces[0].matrix for f in run_chain(dec.frames(), chain)]


@pytest.mark.parametrize("extra, size", [([], 2048), (["--model", "gpen-bfr-256"], 256),
                                         (["--weights", "TINY"], 64)])
def test_track_json_has_the_crop_size_and_transforms(short_clip, short_clip_matrices, tmp_path,
                                                     extra, size):
    from gpenvideo.cli import main

    extra = [str(tiny_gpen(tmp_path)) if a == "TINY" else a for a in extra]
    out = tmp_path / "tracks.json"
    assert main(["track", str(short_clip), "-o", str(out), "--weights-dir",
                 str(SHARED / "weights"), "--quiet", *extra]) == 0
    doc = json.loads(out.read_text())
    assert doc["crop_size"] == size
    assert len(doc["frames"]) == 30
    limit = RegisterConfig().max_shift * TEMPLATE_EYE_DISTANCE * size / 512
    moved = 0
    for entry, matrix in zip(doc["frames"], short_clip_matrices):
        face = entry["faces"][0]
        m = np.asarray(face["transform"])
        assert m.shape == (2, 3)
        # the transform takes the smoothed landmarks to the template of a crop of crop_size,
        # up to the registration's clamped shift
        lm = align.face_transform(np.asarray(face["smoothed"]), size)
        # (the JSON's landmarks are rounded to 0.01 px: about 3e-4 of the scale at 512)
        assert np.allclose(m[:, :2], lm[:, :2], rtol=1e-3, atol=3e-4 * size / 512)
        shift = np.linalg.norm(m[:, 2] - lm[:, 2])
        assert shift <= limit + 0.1 * size / 512
        moved += shift > 0.5 * size / 512  # (far above the rounding)
        # it is the registration stage's crop, at crop_size
        assert np.allclose(m, matrix * (size / 512), atol=1e-5)
    assert moved > 0  # the registration did move crops
