"""The restoration stage: faces of many frames gathered into GPU batches.

RestoreStage aligns every tracked face to the model's crop size (with the registered matrix, or
its smoothed landmarks), runs GPEN on the faces of up to `frames_per_batch` frames at once, and
attaches each restored crop with its frame->crop transform to the frame. With a torch device
(the GPU GPEN runs on) it also runs the face path there (FacePath: shrink to the face's size in
the frame, colour match, masks, warp into a patch over the face, its alpha times the strength),
so only that small patch and its alpha cross back.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from . import align
from .config import CompositeConfig
from .frames import Frame, RestoredFace, TrackedFace, to_uint8

AREA_CACHE = 64  # area-averaging matrices (one per shrunk size) a FacePath keeps


def crop_matrix(face: TrackedFace, size: int) -> np.ndarray:
    """(2, 3) frame -> size x size crop: the registered matrix when there is one, else the
    similarity of the smoothed landmarks onto the template."""
    if face.matrix is not None:
        return np.asarray(face.matrix, np.float64) * (size / 512)
    return align.face_transform(face.smoothed, size, face.aspect)


class RestoreStage:
    """restore_fn: (N, S, S, 3) uint8 BGR crops (numpy, or a tensor on warp_device) -> the same
    shape restored, numpy or a tensor (e.g. GPENRunner.restore). warp_device: a torch device to
    cut the crops on (the GPU the model runs on: each frame is uploaded once and its crops never
    cross the bus before GPEN); None cuts them with OpenCV. parse_fn: restored crops ->
    (N, S, S) face masks (parsing.FaceParser), or None for the template mask. composite and
    strength: with a warp_device, the face path runs there too (FacePath) and each face comes
    with its patch (and with grey_size, the quality figures' small greys of crop and restored
    face: RestoredFace.greys); None leaves it to the compositor. Results are attached as
    `frame.restored`."""

    name = "restore"
    context = 0

    def __init__(self, restore_fn, size: int, batch_faces: int = 8, warp_device=None,
                 parse_fn=None, composite: CompositeConfig | None = None,
                 strength: float = 1.0, grey_size: int | None = None) -> None:
        self.restore_fn = restore_fn
        self.parse_fn = parse_fn  # restored crops -> (N, S, S) face masks (FaceParser), or None
        self.warp_device = warp_device
        self.face_path = None
        if warp_device is not None and composite is not None:
            self.face_path = FacePath(composite, size, strength, warp_device, grey_size)
        self.size = size
        self.batch_faces = max(1, batch_faces)
        self.lookahead = 4 * self.batch_faces
        self._pending: list[Frame] = []
        self._faces = 0

    def process(self, frame: Frame) -> Iterable[Frame]:
        self._pending.append(frame)
        self._faces += len(frame.faces)
        if self._faces >= self.batch_faces or len(self._pending) >= self.lookahead:
            return self._run()
        return ()

    def flush(self) -> Iterable[Frame]:
        return self._run()

    def _run(self) -> list[Frame]:
        frames, self._pending, self._faces = self._pending, [], 0
        jobs, crops = [], []
        for frame in frames:
            frame.restored = []
            faces = frame.faces if frame.emit else []
            if not faces:
                continue
            image8 = to_uint8(frame.image)
            matrices = [crop_matrix(face, self.size) for face in faces]
            jobs += [(frame, face, m) for face, m in zip(faces, matrices)]
            if self.warp_device is None:
                crops += [align.warp(image8, m, self.size, cubic=True, replicate=True)
                          for m in matrices]
            else:
                crops.append(self._warp_on_device(image8, matrices))
        if not jobs:
            return frames
        if self.warp_device is None:
            batch = np.stack(crops)
        else:
            import torch

            batch = torch.cat(crops)
        restored = self.restore_fn(batch)
        masks = self.parse_fn(restored) if self.parse_fn else [None] * len(jobs)
        greys = [None] * len(jobs)
        if self.face_path is not None:
            patches, greys = self.face_path(batch, restored, masks, jobs)
        else:
            if self.warp_device is not None:
                batch = batch.cpu().numpy()  # the compositor blends with the source crop
            patches = [None] * len(jobs)
        for (frame, face, m), crop, out, mask, patch, grey in zip(jobs, batch, restored, masks,
                                                                  patches, greys):
            frame.restored.append(RestoredFace(face.track_id, m, crop, out, mask, face.weight,
                                               patch, grey))
        return frames

    def _warp_on_device(self, image8: np.ndarray, matrices: list[np.ndarray]):
        """(F, S, S, 3) uint8 tensor of one frame's crops, cut on warp_device (bicubic, the
        frame's edge pixels repeated beyond it)."""
        import torch

        t = to_device(image8, self.warp_device).permute(2, 0, 1)[None].float()
        out = align.warp_torch(t, np.stack(matrices), self.size, cubic=True, replicate=True)
        return out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def to_device(array: np.ndarray, device):
    """`array` as a tensor on `device`; to a GPU through pinned memory without blocking (the
    copy is queued on the current stream, so work queued after it sees the data)."""
    import torch

    # copied, not wrapped: a Frame's picture is read-only (torch.from_numpy warns on those)
    dtype = torch.from_numpy(np.zeros(0, array.dtype)).dtype
    if device.type != "cuda":
        return torch.tensor(array, dtype=dtype, device=device)
    pinned = torch.empty(array.shape, dtype=dtype, pin_memory=True)
    pinned.numpy()[...] = array
    return pinned.to(device, non_blocking=True)


class FacePath:
    """The face path on a torch device (the GPU GPEN runs on; the CPU in tests): for each face,
    shrink the crop, the restored face and the mask to the face's size in the frame (area
    averaging), colour-match there, and warp face and alpha (times the strength) into a patch
    over the face's bounding box in the frame (after --upscale). Matches compositor.face_patch
    (OpenCV) within rounding. On CUDA the patches come back through pinned memory on a copy
    stream of their own, with one wait per batch, not per face; so do the quality figures'
    small greys of each crop and restored face (grey_size), so nothing else waits on the GPU."""

    def __init__(self, cfg: CompositeConfig, size: int, strength: float, device,
                 grey_size: int | None = None) -> None:
        import torch

        self.cfg = cfg
        self.size = size
        self.strength = strength
        self.device = torch.device(device)
        self.grey_size = grey_size if grey_size and size % grey_size == 0 else None
        self.mask = torch.from_numpy(align.face_mask(size, cfg.mask_feather)).to(self.device)
        self._area: dict[tuple[int, int], object] = {}  # (src, dst) -> (dst, src) weights
        cuda = self.device.type == "cuda"
        self._copy_stream = torch.cuda.Stream(self.device) if cuda else None

    def __call__(self, crops, restored, masks, jobs) -> tuple[list, list]:
        """crops, restored: (N, S, S, 3) uint8 tensors (or numpy); masks: (N, S, S) or Nones;
        jobs: (frame, TrackedFace, matrix) per face. Returns per face the patch tuple of
        RestoredFace.patch, or None where nothing is pasted, and per face the pair of
        RestoredFace.greys (Nones without grey_size)."""
        import torch

        with torch.inference_mode():
            crops = self._tensor(crops)
            restored = self._tensor(restored)
            out, pending = [], []
            for k, (frame, face, matrix) in enumerate(jobs):
                strength = self.strength * face.weight
                h, w = frame.image.shape[:2]
                up = self.cfg.upscale
                place = align.placement(align.scaled_transform(matrix, up), self.size,
                                        w * up, h * up)
                if strength <= 0 or place is None:
                    out.append(None)
                    continue
                mask = self.mask if masks[k] is None else self.mask * self._tensor(masks[k])
                face_px, alpha = self.patch(place, crops[k], restored[k], mask, strength)
                out.append((place.x0, place.y0, face_px, alpha))
                pending.append(len(out) - 1)
            greys = None
            if self.grey_size is not None:
                greys = torch.cat([align.grey_small_torch(x, self.grey_size)
                                   for x in (crops, restored)])  # (2N, q, q)
            patches, greys = self._to_host(out, pending, greys)
            n = len(jobs)
            if greys is None:
                return patches, [None] * n
            return patches, [(greys[k], greys[n + k]) for k in range(n)]

    def patch(self, place: align.Placement, crop, restored, mask, strength: float):
        """One face: crop, restored (S, S, 3) uint8 tensors, mask (S, S) float32 tensor ->
        face (h, w, 3) float32 and alpha (h, w) float32 tensors on the device."""
        import torch

        face = restored.permute(2, 0, 1).float()  # (3, S, S)
        src = crop.permute(2, 0, 1).float()
        mask = mask[None].float()  # (1, S, S)
        if place.side != self.size:
            shrink = self._weights(self.size, place.side)
            face, src, mask = (shrink @ x @ shrink.T for x in (face, src, mask))
        if self.cfg.color_match:
            grid = self._weights(place.side, align.COLOR_GRID)
            diff = grid @ (src - face) @ grid.T  # (3, 16, 16) low frequencies
            face = face + torch.nn.functional.interpolate(
                diff[None], size=(place.side, place.side), mode="bicubic",
                align_corners=False)[0]
        region = (place.x1 - place.x0, place.y1 - place.y0)
        face = align.warp_torch(face[None], place.to_patch[None], region, cubic=True,
                                replicate=True)[0]
        alpha = align.warp_torch(mask[None], place.to_patch[None], region)[0, 0]
        if strength < 1.0:  # blended with the frame's own pixels (compositor.face_patch)
            alpha = alpha * strength
        return face.permute(1, 2, 0), alpha

    def _weights(self, src: int, dst: int):
        key = (src, dst)
        if key not in self._area:
            if len(self._area) >= AREA_CACHE:
                self._area.clear()
            self._area[key] = to_device(align.area_weights(src, dst).astype(np.float32),
                                        self.device)
        return self._area[key]

    def _tensor(self, x):
        import torch

        if isinstance(x, torch.Tensor):
            return x.to(self.device)
        return to_device(np.asarray(x), self.device)

    def _to_host(self, out: list, pending: list[int],
                 greys=None) -> tuple[list, np.ndarray | None]:
        """The patches as numpy arrays, and `greys` (a tensor, or None) as one: on CUDA copied
        on the copy stream into pinned memory, all waited for once."""
        import torch

        if self._copy_stream is None:
            return ([None if p is None else (p[0], p[1], p[2].contiguous().numpy(),
                                             p[3].contiguous().numpy()) for p in out],
                    None if greys is None else greys.numpy())
        host_greys = None
        stream = self._copy_stream
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for k in pending:
                x0, y0, face, alpha = out[k]
                host = []
                for t in (face.contiguous(), alpha.contiguous()):
                    pinned = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
                    pinned.copy_(t, non_blocking=True)
                    t.record_stream(stream)  # keep its memory until the copy is done
                    host.append(pinned)
                out[k] = (x0, y0, host[0], host[1])
            if greys is not None:
                host_greys = torch.empty(greys.shape, dtype=greys.dtype, pin_memory=True)
                host_greys.copy_(greys, non_blocking=True)
                greys.record_stream(stream)
        stream.synchronize()  # one wait per batch
        return ([None if p is None else (p[0], p[1], p[2].numpy(), p[3].numpy()) for p in out],
                None if host_greys is None else host_greys.numpy())
