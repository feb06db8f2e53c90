"""RetinaFace (facexlib's mobilenet0.25 and resnet50 detectors), batched, without torchvision.

facexlib's own RetinaFace class imports torchvision (for a layer getter, its ResNet-50 and NMS)
and PIL at module level, and torchvision has no CPU build for every torch. The network's layers
live in facexlib's `detection/retinaface_net.py`, which needs torch alone: that file is loaded on
its own, assembled here under the attribute names of facexlib's RetinaFace (so its checkpoints
load strictly), with a torchvision-compatible ResNet-50 trunk. Priors, box and landmark decoding
follow facexlib's retinaface_utils (SSD-style offsets, variances 0.1 and 0.2), run on the whole
batch on the model's device; the few boxes above the score threshold are suppressed on the CPU.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import nn

from .facexlib_files import facexlib_module
from .weights import compare_state_dict, read_state_dict

MEAN_BGR = (104.0, 117.0, 123.0)  # subtracted from 0-255 BGR input, as in training
VARIANCES = (0.1, 0.2)
STEPS = (8, 16, 32)
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
MAX_CANDIDATES = 5000  # per image, highest scores first, before suppression
# name: (stages the FPN reads, channels of the first of them, FPN/SSH channels)
ARCHS = {
    "mobilenet0.25": (("stage1", "stage2", "stage3"), 64, 64),
    "resnet50": (("layer2", "layer3", "layer4"), 512, 256),
}


def facexlib_net() -> ModuleType:
    """facexlib's detection/retinaface_net.py, loaded from its file alone."""
    return facexlib_module("detection/retinaface_net.py", "the retinaface detector",
                           "--detector yunet")


class Bottleneck(nn.Module):
    """torchvision's ResNet bottleneck (stride on the 3x3 convolution), same parameter names."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes * 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def resnet50_trunk() -> OrderedDict[str, nn.Module]:
    """torchvision's resnet50 up to layer4 (what RetinaFace's layer getter keeps)."""
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        conv1=nn.Conv2d(3, 64, 7, 2, 3, bias=False), bn1=nn.BatchNorm2d(64),
        relu=nn.ReLU(inplace=True), maxpool=nn.MaxPool2d(3, 2, 1))
    inplanes = 64
    for i, (planes, blocks, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2),
                                                  (512, 3, 2)), start=1):
        seq = [Bottleneck(inplanes, planes, stride)]
        inplanes = planes * 4
        seq += [Bottleneck(inplanes, planes) for _ in range(blocks - 1)]
        layers[f"layer{i}"] = nn.Sequential(*seq)
    return layers


class RetinaFaceNet(nn.Module):
    """RetinaFace as facexlib builds it (same state_dict keys). forward: (N, 3, H, W) float
    BGR minus MEAN_BGR -> box offsets (N, P, 4), face scores (N, P), landmark offsets
    (N, P, 10), P priors in `priors(H, W)` order."""

    def __init__(self, arch: str) -> None:
        super().__init__()
        stages, first, width = ARCHS[arch]
        net = facexlib_net()
        if arch == "mobilenet0.25":
            backbone = net.MobileNetV1()
            trunk = OrderedDict((name, getattr(backbone, name)) for name in stages)
        else:
            trunk = resnet50_trunk()
        self._stages = stages
        self.body = nn.ModuleDict(trunk)
        self.fpn = net.FPN([first, first * 2, first * 4], width)
        self.ssh1 = net.SSH(width, width)
        self.ssh2 = net.SSH(width, width)
        self.ssh3 = net.SSH(width, width)
        self.ClassHead = net.make_class_head(fpn_num=3, inchannels=width)
        self.BboxHead = net.make_bbox_head(fpn_num=3, inchannels=width)
        self.LandmarkHead = net.make_landmark_head(fpn_num=3, inchannels=width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        levels = []
        for name, layer in self.body.items():
            x = layer(x)
            if name in self._stages:
                levels.append(x)
        fpn = self.fpn(levels)
        features = [self.ssh1(fpn[0]), self.ssh2(fpn[1]), self.ssh3(fpn[2])]
        loc = torch.cat([h(f) for h, f in zip(self.BboxHead, features)], dim=1)
        logits = torch.cat([h(f) for h, f in zip(self.ClassHead, features)], dim=1)
        landm = torch.cat([h(f) for h, f in zip(self.LandmarkHead, features)], dim=1)
        return loc, logits.softmax(dim=-1)[..., 1], landm


def load_retinaface(checkpoint: str | Path, arch: str,
                    device: str | torch.device = "cpu") -> RetinaFaceNet:
    """RetinaFaceNet with `checkpoint` (facexlib's detection_*_Final.pth) loaded strictly."""
    net = RetinaFaceNet(arch)
    state = read_state_dict(checkpoint)
    compare_state_dict(state, net.state_dict(), checkpoint, f"RetinaFace {arch}",
                       optional=lambda key: key.endswith("num_batches_tracked"))
    net.load_state_dict(state, strict=False)
    return net.eval().to(device)


def priors(height: int, width: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """(P, 4) anchors (cx, cy, w, h) relative to the image, in the heads' output order: per
    level, rows then columns, then the level's two sizes (facexlib's PriorBox)."""
    out = []
    for step, sizes in zip(STEPS, MIN_SIZES):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        cy = (torch.arange(rows, dtype=torch.float32, device=device) + 0.5) * step / height
        cx = (torch.arange(cols, dtype=torch.float32, device=device) + 0.5) * step / width
        cy, cx = torch.meshgrid(cy, cx, indexing="ij")
        wh = torch.tensor([[s / width, s / height] for s in sizes], device=device)
        centers = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2).expand(-1, len(sizes), 2)
        out.append(torch.cat([centers, wh.expand(rows * cols, -1, -1)], dim=-1).reshape(-1, 4))
    return torch.cat(out)


def decode(loc: torch.Tensor, landm: torch.Tensor, anchors: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Offsets (..., P, 4) and (..., P, 10) to corner boxes (..., P, 4) and landmarks
    (..., P, 5, 2), relative to the image."""
    center, size = anchors[:, :2], anchors[:, 2:]
    c = center + loc[..., :2] * VARIANCES[0] * size
    wh = size * torch.exp(loc[..., 2:] * VARIANCES[1])
    boxes = torch.cat([c - wh / 2, c + wh / 2], dim=-1)
    points = center[:, None] + landm.unflatten(-1, (5, 2)) * VARIANCES[0] * size[:, None]
    return boxes, points


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression (overlap = intersection over union),
    highest score first."""
    order = np.argsort(-scores, kind="stable")
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        lo = np.maximum(boxes[i, :2], boxes[rest, :2])
        hi = np.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
        iou = inter / np.maximum(area[i] + area[rest] - inter, 1e-12)
        order = rest[iou <= threshold]
    return np.asarray(keep, np.int64)


def detect_batch(net: RetinaFaceNet, images: list[np.ndarray], score_threshold: float,
                 nms_threshold: float) -> list[np.ndarray]:
    """images: (H, W, 3) uint8 BGR. Per image an (n, 15) float32 array: box x1, y1, x2, y2,
    score, then 5 landmarks (x, y) in the network's order, in image pixels. Images of one size
    run as one batch (padding smaller ones would move detections near their edges)."""
    out: list[np.ndarray] = [np.zeros((0, 15), np.float32)] * len(images)
    by_size: dict[tuple[int, ...], list[int]] = {}
    for k, image in enumerate(images):
        by_size.setdefault(image.shape, []).append(k)
    for indices in by_size.values():
        rows = _detect_same_size(net, np.stack([images[k] for k in indices]), score_threshold,
                                 nms_threshold)
        for k, r in zip(indices, rows):
            out[k] = r
    return out


@torch.inference_mode()
def _detect_same_size(net: RetinaFaceNet, images: np.ndarray, score_threshold: float,
                      nms_threshold: float) -> list[np.ndarray]:
    device = next(net.parameters()).device
    _, height, width, _ = images.shape
    x = torch.from_numpy(images).to(device, non_blocking=True)
    mean = torch.tensor(MEAN_BGR, device=device).view(1, 3, 1, 1)
    loc, scores, landm = net(x.permute(0, 3, 1, 2).float() - mean)
    boxes, points = decode(loc, landm, priors(height, width, device))
    scale = torch.tensor([width, height], dtype=torch.float32, device=device)
    rows = torch.cat([boxes * scale.repeat(2), scores[..., None], (points * scale).flatten(-2)],
                     dim=-1)
    top = scores.topk(min(MAX_CANDIDATES, scores.shape[1]), dim=1).indices
    out = []
    for k in range(len(images)):
        cand = rows[k, top[k]]
        cand = cand[cand[:, 4] > score_threshold].cpu().numpy()
        out.append(cand[nms(cand[:, :4], cand[:, 4], nms_threshold)].astype(np.float32))
    return out
