"""Face parsing masks (`--mask parsing`): facexlib's ParseNet labels every pixel of a restored
face (skin, brows, eyes, glasses, ears, nose, mouth, lips / hair, hat, neck, clothes,
background), so the paste-back covers the face itself and leaves hair, hands in front of the
face and the background as decoded, where the template's ellipse would blend them.

The parsing network comes from facexlib's file alone (models/facexlib_files.py says why) and its
weights through gpenvideo's weights lookup.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .models.facexlib_files import facexlib_module
from .models.weights import compare_state_dict, read_state_dict

PARSE_SIZE = 512  # ParseNet's input and output size
# CelebAMask-HQ labels 0-18: background, skin, l/r brow, l/r eye, eyeglasses, l/r ear, earring,
# nose, mouth, upper/lower lip, neck, necklace, cloth, hair, hat. The face is what the restorer
# redraws (as in GFPGAN's and CodeFormer's paste-back): 1-13 and 15.
FACE_CLASSES = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15)
BLUR_SIGMA = 11.0 * 2 ** 0.5  # at 512 px: GFPGAN's two Gaussian blurs of sigma 11
BORDER = 10  # px at 512 cleared, so no edge of the crop can show


def parsenet_class() -> type[torch.nn.Module]:
    """facexlib's ParseNet class, loaded from its module file alone."""
    return facexlib_module("parsing/parsenet.py", "--mask parsing", "--mask template").ParseNet


def load_parsenet(checkpoint: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """ParseNet (512 in, 19 labels out) with `checkpoint` loaded strictly, in eval mode."""
    net = parsenet_class()(in_size=PARSE_SIZE, out_size=PARSE_SIZE, parsing_ch=19)
    state = read_state_dict(checkpoint)
    compare_state_dict(state, net.state_dict(), checkpoint, "facexlib ParseNet")
    net.load_state_dict(state)
    return net.eval().to(device)


class FaceParser:
    """Soft face masks of restored crops: (N, S, S, 3) uint8 BGR in, (N, S, S) float32 in
    [0, 1] out (1 on the face, 0 on hair, background and the crop's border)."""

    def __init__(self, checkpoint: str | Path, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.net = load_parsenet(checkpoint, self.device)
        radius = int(3 * BLUR_SIGMA)
        x = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-0.5 * (x / BLUR_SIGMA) ** 2)
        self._kernel = (kernel / kernel.sum()).to(self.device)
        self._face = torch.zeros(19, dtype=torch.bool, device=self.device)
        self._face[list(FACE_CLASSES)] = True

    def __call__(self, crops: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Masks as numpy for numpy crops; for a tensor on a GPU, a tensor left there."""
        masks = self.masks(crops)
        if isinstance(crops, torch.Tensor) and crops.device.type != "cpu":
            return masks
        return masks.cpu().numpy()

    @torch.inference_mode()
    def masks(self, crops: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(N, S, S) float32 masks on this parser's device."""
        size = crops.shape[1]
        if not isinstance(crops, torch.Tensor):
            crops = torch.from_numpy(np.ascontiguousarray(crops))
        x = crops.to(self.device)
        x = x.flip(-1).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # BGR -> RGB in [-1, 1]
        if size != PARSE_SIZE:
            x = F.interpolate(x, size=(PARSE_SIZE, PARSE_SIZE), mode="bilinear",
                              antialias=size > PARSE_SIZE, align_corners=False)
        labels = self.net(x)[0].argmax(dim=1)  # (N, 512, 512)
        mask = self._face[labels].float()[:, None]
        mask = self._blur(mask)
        mask[..., :BORDER, :] = 0
        mask[..., -BORDER:, :] = 0
        mask[..., :, :BORDER] = 0
        mask[..., :, -BORDER:] = 0
        if size != PARSE_SIZE:
            mask = F.interpolate(mask, size=(size, size), mode="bilinear", align_corners=False)
        return mask[:, 0].clamp_(0, 1)

    def _blur(self, mask: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian blur, zero outside the crop."""
        k = self._kernel
        pad = len(k) // 2
        mask = F.conv2d(F.pad(mask, (pad, pad, 0, 0)), k.view(1, 1, 1, -1))
        return F.conv2d(F.pad(mask, (0, 0, pad, pad)), k.view(1, 1, -1, 1))
