"""5-point similarity alignment to the GPEN face template, and warps in both directions
(OpenCV on CPU, torch grid_sample on GPU; the two agree)."""

from __future__ import annotations

import cv2
import numpy as np

# The authors' 5-point template for a 512 x 512 crop (left eye, right eye, nose tip, left mouth
# corner, right mouth corner; x, y). Other crop sizes scale it: template(S) = this * S / 512.
TEMPLATE_512 = np.array([
    [202.0407, 242.884],
    [309.4302, 242.29],
    [256.0768, 303.9592],
    [211.9598, 366.8282],
    [300.8911, 366.3363],
], dtype=np.float64)


def template(size: int) -> np.ndarray:
    """(5, 2) float64 template points for a size x size crop."""
    return TEMPLATE_512 * (size / 512.0)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src onto dst.

    src, dst: (K, 2) points. Returns the (2, 3) float64 matrix M with dst ~ M @ [x, y, 1].
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    var_s = (s**2).sum() / len(src)
    scale = (sig * np.diag(sign)).sum() / var_s
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def face_transform(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(2, 3) matrix from frame coordinates to the size x size aligned crop."""
    return umeyama(landmarks, template(size))


def invert(m: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine matrix."""
    return cv2.invertAffineTransform(np.asarray(m, np.float64))


def warp(image: np.ndarray, m: np.ndarray, size: tuple[int, int] | int,
         border_value: float = 0.0, cubic: bool = False, replicate: bool = False
         ) -> np.ndarray:
    """Warp of `image` by `m` into an output of `size` (w, h); bilinear (the official crop), or
    bicubic (sharper paste-back: the round trip keeps > 45 dB). Outside `image`: border_value,
    or with `replicate` its nearest edge pixel (no black seeps into pixels near the edge)."""
    w, h = (size, size) if isinstance(size, int) else size
    flags = cv2.INTER_CUBIC if cubic else cv2.INTER_LINEAR
    border = cv2.BORDER_REPLICATE if replicate else cv2.BORDER_CONSTANT
    return cv2.warpAffine(image, np.asarray(m, np.float64), (w, h), flags=flags,
                          borderMode=border, borderValue=border_value)


def warp_torch(images, matrices, size: int, cubic: bool = False, replicate: bool = False):
    """GPU warp that matches `warp`: images (N, C, H, W) float tensor (N = 1 serves every
    matrix), matrices (N, 2, 3) frame->crop (numpy or tensor); bilinear, or bicubic like
    `warp(..., cubic=True)`; zeros outside, or the nearest edge pixel with `replicate`.
    Returns (N, C, size, size) float tensor."""
    import torch
    import torch.nn.functional as F

    m = torch.as_tensor(np.asarray(matrices), dtype=torch.float64)
    if images.shape[0] == 1 and m.shape[0] > 1:
        images = images.expand(m.shape[0], -1, -1, -1)
    n, _, h, w = images.shape
    inv = torch.from_numpy(np.stack([invert(x) for x in m.numpy()])).to(images.device)
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64, device=images.device),
                            torch.arange(size, dtype=torch.float64, device=images.device),
                            indexing="ij")
    ones = torch.ones_like(xs)
    grid = torch.stack([xs, ys, ones], -1).reshape(1, -1, 3)  # (1, S*S, 3)
    src = grid @ inv.transpose(1, 2)  # (N, S*S, 2) source pixel coordinates
    gx = src[..., 0] * (2.0 / (w - 1)) - 1.0
    gy = src[..., 1] * (2.0 / (h - 1)) - 1.0
    norm = torch.stack([gx, gy], -1).reshape(n, size, size, 2).to(images.dtype)
    return F.grid_sample(images, norm, mode="bicubic" if cubic else "bilinear",
                         padding_mode="border" if replicate else "zeros", align_corners=True)
