"""--mask parsing: facexlib's ParseNet narrows the paste-back to the face itself."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from conftest import shared_file, tiny_gpen

from gpenvideo import align
from gpenvideo.cli import main
from gpenvideo.compositor import Compositor
from gpenvideo.config import CompositeConfig
from gpenvideo.errors import InputError, WeightsError
from gpenvideo.frames import Frame
from gpenvideo.parsing import BORDER, FaceParser, parsenet_class

needs_facexlib = pytest.mark.skipif(
    importlib.util.find_spec("facexlib") is None,
    reason="facexlib is not installed (pip install --no-deps facexlib; .ci/run does)")

LANDMARKS = np.array([[50, 45], [70, 45], [60, 55], [52, 65], [68, 65]], np.float64)


def test_parsing_mask_narrows_the_paste_to_the_face():
    size = 64
    comp = Compositor(CompositeConfig(color_match=False), size, 1.0)
    parsed = np.zeros((size, size), np.float32)
    parsed[:, size // 2:] = 1.0  # the crop's right half is face, its left half hair
    m = align.face_transform(LANDMARKS, size)
    image = np.full((120, 120, 3), 100, np.uint8)
    frame = Frame(0, 0, 0, image)
    comp.paste(frame, m, np.zeros((size, size, 3), np.uint8),
               np.full((size, size, 3), 250, np.uint8), parsed)
    image = frame.image
    inv = align.invert(m)
    template = align.warp(comp.mask, inv, (120, 120))
    face = align.warp(comp.mask * parsed, inv, (120, 120))
    assert np.all(image[face == 0] == 100)  # hair side and background as they were
    assert np.all(image[face > 0.99] > 245)  # the face restored
    hair = (template > 0.99) & (face == 0)
    assert hair.sum() > 100  # the template alone would have pasted over these pixels


def test_missing_facexlib_names_the_extra(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(InputError, match=r"pip install 'gpenvideo\[retinaface\]'"):
        parsenet_class()


def parsenet_checkpoint(path, favour: int | None = None):
    """A ParseNet state_dict saved at `path`: random weights, or with the label output fixed
    to class `favour` everywhere (weights zero, that label's bias high)."""
    torch.manual_seed(0)
    net = parsenet_class()(in_size=512, out_size=512, parsing_ch=19)
    state = net.state_dict()
    if favour is not None:
        state["out_mask_conv.conv2d.weight"].zero_()
        state["out_mask_conv.conv2d.bias"].zero_()
        state["out_mask_conv.conv2d.bias"][favour] = 10.0
    torch.save(state, path)
    return path


@needs_facexlib
def test_face_labels_give_a_soft_face_mask_and_hair_gives_none(tmp_path):
    crops = np.random.default_rng(0).integers(0, 256, (2, 96, 96, 3), np.uint8)
    skin = FaceParser(parsenet_checkpoint(tmp_path / "skin.pth", favour=1))(crops)
    assert skin.shape == (2, 96, 96) and skin.dtype == np.float32
    assert skin[:, 30:66, 30:66].min() > 0.99  # all face: fully pasted inside
    edge = BORDER * 96 // 512
    assert skin[:, :edge].max() < 0.05 and skin[:, :, -edge:].max() < 0.05  # faded at the edge
    hair = FaceParser(parsenet_checkpoint(tmp_path / "hair.pth", favour=17))(crops[:1])
    assert hair.max() == 0.0


@needs_facexlib
def test_a_wrong_parsenet_checkpoint_is_refused_naming_the_key(tmp_path):
    state = torch.load(parsenet_checkpoint(tmp_path / "p.pth"), weights_only=True)
    del state["out_mask_conv.conv2d.bias"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(WeightsError, match="out_mask_conv.conv2d.bias"):
        FaceParser(tmp_path / "broken.pth")


def test_restore_with_mask_parsing_and_no_parsenet_names_the_fetch_command(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr("gpenvideo.models.weights.REPO_WEIGHTS", tmp_path / "none")
    clip = shared_file("media", "sadtalker_WDA_KatieHill_000.mp4")
    weights_dir = shared_file("weights", "face_detection_yunet_2026may.onnx").parent
    code = main(["restore", str(clip), "-o", str(tmp_path / "o.mp4"), "--quiet",
                 "--weights", str(tiny_gpen(tmp_path)), "--weights-dir", str(weights_dir),
                 "--mask", "parsing"])
    assert code == 2
    err = capsys.readouterr().err
    assert "parsing_parsenet.pth" in err and "gpenvideo weights fetch parsenet" in err
    assert "--weights-dir" in err and "--weights PATH" not in err  # --weights is for GPEN
    assert not (tmp_path / "o.mp4").exists()
