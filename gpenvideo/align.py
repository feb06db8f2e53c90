"""5-point similarity alignment to the GPEN face template, warps in both directions (OpenCV on
CPU, torch grid_sample on GPU; the two agree), the face mask in crop coordinates and the
geometry of pasting a crop back (shared by the CPU and the GPU face path)."""

from __future__ import annotations

import math
from dataclasses import dataclass

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


def face_transform(landmarks: np.ndarray, size: int,
                   aspect: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """(2, 3) matrix from frame coordinates to the size x size aligned crop. aspect: (x, y)
    display size of one frame pixel (TrackedFace.aspect): the similarity is fitted to the face
    as displayed, so on non-square pixels the matrix also undoes their stretch."""
    ax, ay = aspect
    if ax == ay == 1.0:
        return umeyama(landmarks, template(size))
    shown = umeyama(np.asarray(landmarks, np.float64) * (ax, ay), template(size))
    return shown * np.array([ax, ay, 1.0])  # frame -> display -> crop


def hanning(shape: tuple[int, ...]) -> np.ndarray:
    """(h, w) float32 Hanning window for `phase_shift` on patches of `shape` (h, w, ...)."""
    return cv2.createHanningWindow((shape[1], shape[0]), cv2.CV_32F)


def phase_shift(a: np.ndarray, b: np.ndarray, window: np.ndarray) -> tuple[np.ndarray, float]:
    """Phase correlation of two grey images of one shape (h, w), each with its mean removed
    first (a windowed mean would pull the peak towards no motion): (dx, dy) float64 such that
    b(x) ~ a(x - (dx, dy)) (the content moved by that much from a to b), sub-pixel, in pixels,
    and the peak's response (about 0..1, the share of the energy that moved together: low for
    an occluder, blur, a turn). a, b and window: float32 (or all float64), window from
    `hanning`. Raises cv2.error when the shapes or dtypes differ."""
    (dx, dy), response = cv2.phaseCorrelate(a - a.mean(), b - b.mean(), window)
    return np.array([dx, dy]), float(response)


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


def grey_small_torch(images, size: int):
    """(N, S, S, 3) or (N, 3, S, S) tensors (any dtype), S a multiple of `size` -> (N, size,
    size) float32 tensor on their device: each image area-averaged to `size`, then its
    channels averaged (quality.grey_small's order: both linear, the same grey)."""
    import torch

    x = images.detach()
    if not (x.shape[1] == 3 and x.shape[-1] != 3):
        x = x.permute(0, 3, 1, 2)  # (N, 3, S, S)
    x = x.float()
    if x.shape[-2:] != (size, size):
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="area")
    return x.mean(1)


def warp_torch(images, matrices, size: int | tuple[int, int], cubic: bool = False,
               replicate: bool = False):
    """GPU warp that matches `warp`: images (N, C, H, W) float tensor (N = 1 serves every
    matrix), matrices (N, 2, 3) frame->crop (numpy or tensor); bilinear, or bicubic like
    `warp(..., cubic=True)`; zeros outside, or the nearest edge pixel with `replicate`.
    size: the output's side, or its (w, h). Returns (N, C, h, w) float tensor."""
    import torch
    import torch.nn.functional as F

    m = torch.as_tensor(np.asarray(matrices), dtype=torch.float64)
    if images.shape[0] == 1 and m.shape[0] > 1:
        images = images.expand(m.shape[0], -1, -1, -1)
    n, _, h, w = images.shape
    out_w, out_h = (size, size) if isinstance(size, int) else size
    inv = torch.from_numpy(np.stack([invert(x) for x in m.numpy()])).to(images.device)
    ys, xs = torch.meshgrid(torch.arange(out_h, dtype=torch.float64, device=images.device),
                            torch.arange(out_w, dtype=torch.float64, device=images.device),
                            indexing="ij")
    ones = torch.ones_like(xs)
    grid = torch.stack([xs, ys, ones], -1).reshape(1, -1, 3)  # (1, out_h*out_w, 3)
    src = grid @ inv.transpose(1, 2)  # (N, out_h*out_w, 2) source pixel coordinates
    gx = src[..., 0] * (2.0 / max(w - 1, 1)) - 1.0
    gy = src[..., 1] * (2.0 / max(h - 1, 1)) - 1.0
    norm = torch.stack([gx, gy], -1).reshape(n, out_h, out_w, 2).to(images.dtype)
    return F.grid_sample(images, norm, mode="bicubic" if cubic else "bilinear",
                         padding_mode="border" if replicate else "zeros", align_corners=True)


# Face region in crop units (fractions of the crop size): the ellipse on which the mask reaches
# 0, around the template's eyes (y 0.47), nose and mouth (y 0.72), reaching the forehead and
# past the chin, and ending well inside the crop on all four sides (x 0.10-0.90, y 0.07-0.95),
# so neither the crop's edge nor anything beyond it (padding) can reach the frame.
MASK_CENTER = (0.5, 0.51)
MASK_AXES = (0.40, 0.44)


def face_mask(size: int, feather: float) -> np.ndarray:
    """(size, size) float32 mask in [0, 1]: 0 on and outside the face ellipse (MASK_CENTER,
    MASK_AXES), rising inwards over `feather` * size pixels along a smootherstep (flat at
    both ends of the ramp, so the change starts with fractions of a level), 1 further in. It
    is exactly 0 on a band along every side of the crop (at least 5% of its size)."""
    centre = (np.arange(size, dtype=np.float64) + 0.5) / size  # pixel centres, crop units
    u = (centre - MASK_CENTER[0]) / MASK_AXES[0]  # (size,) along x
    v = (centre - MASK_CENTER[1]) / MASK_AXES[1]  # (size,) along y
    r = np.sqrt(u[None, :] ** 2 + v[:, None] ** 2)  # (size, size) 1 on the ellipse
    # distance to the ellipse in crop units, to first order: (1 - r) / |grad r|
    grad = np.sqrt((u[None, :] / MASK_AXES[0]) ** 2 + (v[:, None] / MASK_AXES[1]) ** 2)
    dist = (1 - r) * r / np.maximum(grad, 1e-9)
    t = np.clip(dist / max(feather, 1e-6), 0.0, 1.0)
    return (t * t * t * (t * (6 * t - 15) + 10)).astype(np.float32)


def from_resized(factor: float) -> np.ndarray:
    """(3, 3) map from the pixel coordinates of an image resized by `factor` to those of the
    image itself, pixel centres kept aligned: x_resized + 0.5 = factor * (x + 0.5)."""
    return np.array([[1 / factor, 0, (1 / factor - 1) / 2],
                     [0, 1 / factor, (1 / factor - 1) / 2],
                     [0, 0, 1]], np.float64)


def scaled_transform(matrix: np.ndarray, factor: int) -> np.ndarray:
    """frame->crop matrix for the frame upscaled by `factor`."""
    if factor == 1:
        return matrix
    return np.asarray(matrix, np.float64) @ from_resized(factor)


COLOR_GRID = 16  # colour matching keeps the source's colour over cells of crop/16 and larger


@dataclass(frozen=True)
class Placement:
    """Where a size x size crop goes in a frame: the patch image[y0:y1, x0:x1] that holds its
    mask's support, the side the crop is first shrunk to (by area averaging; == size when it
    is not), and `to_patch`, the (2, 3) map from that shrunk crop's pixels to the patch's."""

    x0: int
    y0: int
    x1: int
    y1: int
    side: int
    to_patch: np.ndarray


def placement(matrix: np.ndarray, size: int, width: int, height: int) -> Placement | None:
    """The Placement of a crop cut with `matrix` (frame -> crop, (2, 3)) in a width x height
    frame; None when its mask lies outside the frame. A crop much larger than its place in the
    frame is shrunk first (a warp alone would alias the model's fine detail into noise)."""
    inv = invert(matrix)
    (cx, cy), (ax, ay) = MASK_CENTER, MASK_AXES
    corners = np.array([[cx - ax, cy - ay, 1], [cx + ax, cy - ay, 1], [cx - ax, cy + ay, 1],
                        [cx + ax, cy + ay, 1]]) * (size, size, 1) @ inv.T
    pad = 2  # the bicubic taps and rounding
    x0, y0 = np.floor(corners.min(0)).astype(int) - pad
    x1, y1 = np.ceil(corners.max(0)).astype(int) + pad
    x0, y0, x1, y1 = max(int(x0), 0), max(int(y0), 0), min(int(x1), width), min(int(y1), height)
    if x1 <= x0 or y1 <= y0:
        return None
    scale = math.sqrt(abs(np.linalg.det(inv[:, :2])))
    side = math.ceil(size * scale)
    if side < size // 2:
        inv = inv @ from_resized(side / size)
    else:
        side = size
    to_patch = inv.copy()
    to_patch[:, 2] -= (x0, y0)
    return Placement(x0, y0, x1, y1, side, to_patch)


def area_weights(src: int, dst: int) -> np.ndarray:
    """(dst, src) float64 matrix of area averaging from src to dst <= src samples (as OpenCV's
    INTER_AREA shrinks): row i averages the source interval [i, i + 1) * src / dst, partly
    covered samples weighed by their covered share. weights @ x shrinks x along its axis 0."""
    scale = src / dst
    lo = np.arange(dst)[:, None] * scale  # (dst, 1) interval starts
    k = np.arange(src)[None, :]  # (1, src) sample k covers [k, k + 1)
    overlap = np.clip(np.minimum(k + 1, lo + scale) - np.maximum(k, lo), 0, None)
    return overlap / scale
