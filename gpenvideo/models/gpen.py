"""GPEN (Yang et al., "GAN Prior Embedded Network for Blind Face Restoration in the Wild",
CVPR 2021), written in plain PyTorch from the network's description.

GPEN is a StyleGAN2 generator whose per-layer noise inputs are replaced by the feature maps of a
convolutional encoder of the degraded face ("GAN prior embedded"):

    face (N,3,S,S) ─▶ encoder: ecd0 (1x1) and ecd1..ecd{log2 S-2} (blur + stride-2 conv)
        feature maps S, S/2, ..., 4 ──┐                   │ 4x4 map, flattened
                                      │             final_linear ─▶ w (N, style_dim)
                                      │                   │ style MLP (pixel norm + n_mlp linears)
    constant 4x4 ─▶ conv1 ─▶ [upsample conv, conv] per resolution ─▶ ... ─▶ RGB (N,3,S,S)
                     ▲ each StyledConv concatenates weight * encoder map of its resolution

Module and parameter names follow the released checkpoints so that they load with strict=True.
No custom CUDA op: upfirdn2d and the fused leaky ReLU are written with standard PyTorch ops, and
modulated convolutions scale activations instead of weights, so a batch runs as ordinary
(cuDNN) convolutions rather than one grouped convolution per sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.2
ACT_GAIN = math.sqrt(2.0)  # fused leaky ReLU output gain
DEMOD_EPS = 1e-8
PIXELNORM_EPS = 1e-8
MIN_SIZE, MAX_SIZE = 8, 2048


@dataclass(frozen=True)
class GPENConfig:
    """Constructor arguments of the GPEN generator (FullGenerator in the authors' code)."""

    size: int  # input and output resolution S, a power of two from 8 to 2048
    style_dim: int = 512  # width of the style vector and the style MLP
    n_mlp: int = 8  # linear layers in the style MLP
    channel_multiplier: int = 2  # widens the layers of 64 px and above
    narrow: float = 1.0  # scales every layer's width
    blur_kernel: tuple[int, ...] = (1, 3, 3, 1)  # anti-aliasing filter taps
    lr_mlp: float = 0.01  # equalized learning-rate multiplier of the style MLP
    isconcat: bool = True  # encoder features are concatenated (True) or added (False)

    def __post_init__(self) -> None:
        log = math.log2(self.size) if self.size > 0 else 0.5
        if log != int(log) or not MIN_SIZE <= self.size <= MAX_SIZE:
            raise ValueError(f"GPEN size must be a power of two from {MIN_SIZE} to {MAX_SIZE}, "
                             f"got {self.size}")

    @property
    def log_size(self) -> int:
        return int(math.log2(self.size))

    @property
    def n_latent(self) -> int:
        """Number of style vectors the synthesis network consumes."""
        return 2 * self.log_size - 2

    def channels(self, resolution: int) -> int:
        """Feature channels at a resolution: 512 up to 32 px, then halving per octave from
        256*channel_multiplier at 64 px, all scaled by `narrow` and truncated."""
        if resolution <= 32:
            return int(512 * self.narrow)
        return int(16384 // resolution * self.channel_multiplier * self.narrow)


# --------------------------------------------------------------------------- building blocks


def blur_kernel_2d(taps: tuple[int, ...], gain: float = 1.0) -> torch.Tensor:
    """Normalized outer product of 1-D taps, times `gain` (factor**2 after an upsample)."""
    k = torch.tensor(taps, dtype=torch.float32)
    k = k[None, :] * k[:, None]
    return k / k.sum() * gain


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample by zero insertion, pad (negative pads crop), FIR filter, downsample.

    x: (N, C, H, W); kernel: (kh, kw), applied per channel (true convolution, so flipped).
    Returns (N, C, (H*up + pad0 + pad1 - kh) // down + 1, same for W).
    """
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    weight = kernel.flip([0, 1]).to(x.dtype)[None, None].expand(c, 1, *kernel.shape)
    x = F.conv2d(x, weight, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           stride: int = 1, padding: int = 0) -> torch.Tensor:
    """F.conv2d whose CPU result does not depend on the thread count or the batch size.

    For 1x1 kernels PyTorch picks its own im2col + GEMM convolution instead of oneDNN when it
    runs on one thread with fewer than 16 samples, and the two round differently (1e-7), which
    changes a few output levels and then every packet of the encoded video. CPU float32 1x1
    convolutions therefore always take oneDNN here (the path PyTorch takes on 2+ threads).
    Under torch.compile the plain convolution is traced (the oneDNN op has no meta kernel).
    """
    if (weight.shape[-2:] == (1, 1) and x.device.type == "cpu" and x.dtype == torch.float32
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
            and not torch.compiler.is_compiling()):
        return torch.ops.aten.mkldnn_convolution(x.contiguous(), weight.contiguous(), bias,
                                                 [padding] * 2, [stride] * 2, [1, 1], 1)
    return F.conv2d(x, weight, bias, stride, padding)


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """sqrt(2) * leaky_relu(x + bias, 0.2); bias broadcasts over the channel axis (dim 1)."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return F.leaky_relu(x + bias.view(shape).to(x.dtype), LEAKY_SLOPE) * ACT_GAIN


class FusedLeakyReLU(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + PIXELNORM_EPS)


class Blur(nn.Module):
    """FIR low-pass filter (the anti-aliasing of up- and downsampling)."""

    def __init__(self, taps: tuple[int, ...], pad: tuple[int, int], gain: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("kernel", blur_kernel_2d(taps, gain))
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x upsampling of the RGB skip path: zero insertion and a blur of gain 4."""

    factor = 2

    def __init__(self, taps: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("kernel", blur_kernel_2d(taps, self.factor**2))
        p = len(taps) - self.factor
        self.pad = ((p + 1) // 2 + self.factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class EqualConv2d(nn.Module):
    """Convolution with equalized learning rate: weights scaled by 1/sqrt(fan_in) at run time."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0,
                 bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = 1 / math.sqrt(in_ch * kernel**2)
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d(x, self.weight * self.scale, self.bias, self.stride, self.padding)


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate and an optional fused leaky ReLU."""

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activate: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activate:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated convolution: per-sample input-channel scales from the style,
    optional demodulation (unit output variance), optional 2x transposed-conv upsampling."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False,
                 blur_taps: tuple[int, ...] = (1, 3, 3, 1)) -> None:
        super().__init__()
        if upsample:  # (created first: the checkpoints list blur.kernel before modulation)
            factor = 2
            p = (len(blur_taps) - factor) - (kernel - 1)
            self.blur = Blur(blur_taps, pad=((p + 1) // 2 + factor - 1, p // 2 + 1),
                             gain=factor**2)
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel, kernel))
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)
        self.scale = 1 / math.sqrt(in_ch * kernel**2)
        self.demodulate, self.upsample = demodulate, upsample
        self.padding = kernel // 2

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """x: (N, in, H, W); style: (N, style_dim). Returns (N, out, H or 2H, W or 2W)."""
        s = self.modulation(style).to(x.dtype)  # (N, in)
        w = (self.weight[0] * self.scale).to(x.dtype)  # (out, in, k, k)
        x = x * s[:, :, None, None]
        if self.upsample:
            out = F.conv_transpose2d(x, w.transpose(0, 1), stride=2)  # (N, out, 2H+1, 2W+1)
        else:
            out = conv2d(x, w, padding=self.padding)
        if self.demodulate:
            # 1/sqrt(sum over in, k, k of (w * s)^2) per sample and output channel: (N, out)
            w_sq = w.float().pow(2).sum(dim=(2, 3))  # (out, in)
            demod = torch.rsqrt(s.float().pow(2) @ w_sq.t() + DEMOD_EPS)
            out = out * demod.to(out.dtype)[:, :, None, None]
        if self.upsample:
            out = self.blur(out)
        return out


class NoiseInjection(nn.Module):
    """Where StyleGAN2 injects random noise, GPEN injects `weight * encoder feature map`."""

    def __init__(self, isconcat: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.isconcat = isconcat

    def forward(self, x: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        injected = self.weight.to(x.dtype) * feature
        return torch.cat((x, injected), dim=1) if self.isconcat else x + injected


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int, dtype: torch.dtype) -> torch.Tensor:
        return self.input.to(dtype).expand(batch, -1, -1, -1)


class StyledConv(nn.Module):
    """Modulated conv, encoder-feature injection, fused leaky ReLU (bias over 2C if concat)."""

    def __init__(self, in_ch: int, out_ch: int, style_dim: int, upsample: bool,
                 blur_taps: tuple[int, ...], isconcat: bool) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, style_dim, upsample=upsample,
                                    blur_taps=blur_taps)
        self.noise = NoiseInjection(isconcat)
        self.activate = FusedLeakyReLU(out_ch * (2 if isconcat else 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, style), feature))


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB (no demodulation), added to the upsampled previous RGB."""

    def __init__(self, in_ch: int, style_dim: int, upsample: bool,
                 blur_taps: tuple[int, ...]) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_taps)
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor,
                skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, style) + self.bias.to(x.dtype)
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class ConvLayer(nn.Sequential):
    """Encoder layer: [blur,] equalized conv (stride 2 when downsampling), fused leaky ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, downsample: bool = False,
                 blur_taps: tuple[int, ...] = (1, 3, 3, 1)) -> None:
        layers: list[nn.Module] = []
        if downsample:
            p = (len(blur_taps) - 2) + (kernel - 1)
            layers.append(Blur(blur_taps, pad=((p + 1) // 2, p // 2)))
            layers.append(EqualConv2d(in_ch, out_ch, kernel, stride=2, bias=False))
        else:
            layers.append(EqualConv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False))
        layers.append(FusedLeakyReLU(out_ch))
        super().__init__(*layers)


# --------------------------------------------------------------------------- the networks


class StyleGenerator(nn.Module):
    """The StyleGAN2 synthesis network with its style MLP (`generator.*` in checkpoints)."""

    def __init__(self, cfg: GPENConfig) -> None:
        super().__init__()
        taps, cat = cfg.blur_kernel, 2 if cfg.isconcat else 1
        self.style = nn.Sequential(PixelNorm(), *[
            EqualLinear(cfg.style_dim, cfg.style_dim, lr_mul=cfg.lr_mlp, activate=True)
            for _ in range(cfg.n_mlp)])
        ch4 = cfg.channels(4)
        self.input = ConstantInput(ch4)
        self.conv1 = StyledConv(ch4, ch4, cfg.style_dim, False, taps, cfg.isconcat)
        self.to_rgb1 = ToRGB(ch4 * cat, cfg.style_dim, upsample=False, blur_taps=taps)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_ch = ch4
        for log_res in range(3, cfg.log_size + 1):
            out_ch = cfg.channels(2**log_res)
            self.convs.append(StyledConv(in_ch * cat, out_ch, cfg.style_dim, True, taps,
                                         cfg.isconcat))
            self.convs.append(StyledConv(out_ch * cat, out_ch, cfg.style_dim, False, taps,
                                         cfg.isconcat))
            self.to_rgbs.append(ToRGB(out_ch * cat, cfg.style_dim, upsample=True,
                                      blur_taps=taps))
            in_ch = out_ch

    def forward(self, latent: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        """latent: (N, n_latent, style_dim); features: encoder maps, 4x4 first, then each larger
        map twice (one per conv of its resolution). Returns RGB (N, 3, S, S)."""
        out = self.input(latent.shape[0], features[0].dtype)  # (N, ch4, 4, 4)
        out = self.conv1(out, latent[:, 0], features[0])
        skip = self.to_rgb1(out, latent[:, 1])
        for k, (up_conv, conv, to_rgb) in enumerate(
                zip(self.convs[::2], self.convs[1::2], self.to_rgbs), start=1):
            out = up_conv(out, latent[:, 2 * k - 1], features[2 * k - 1])
            out = conv(out, latent[:, 2 * k], features[2 * k])
            skip = to_rgb(out, latent[:, 2 * k + 1], skip)
        return skip


class GPEN(nn.Module):
    """The GPEN face restorer (FullGenerator). Call on an (N, 3, S, S) RGB batch in [-1, 1];
    returns the restored batch in the same space, and the (N, n_latent, style_dim) latents with
    `return_latents=True`. Deterministic: no random noise at inference."""

    def __init__(self, cfg: GPENConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.generator = StyleGenerator(cfg)
        taps = cfg.blur_kernel
        self.ecd0 = nn.Sequential(ConvLayer(3, cfg.channels(cfg.size), 1))
        in_ch = cfg.channels(cfg.size)
        for i, log_res in enumerate(range(cfg.log_size, 2, -1), start=1):
            out_ch = cfg.channels(2 ** (log_res - 1))
            setattr(self, f"ecd{i}", nn.Sequential(ConvLayer(in_ch, out_ch, 3, True, taps)))
            in_ch = out_ch
        self.final_linear = nn.Sequential(
            EqualLinear(cfg.channels(4) * 4 * 4, cfg.style_dim, activate=True))

    @property
    def encoder(self) -> list[nn.Module]:
        return [getattr(self, f"ecd{i}") for i in range(self.cfg.log_size - 1)]

    def forward(self, x: torch.Tensor, return_latents: bool = False):
        """x: (N, 3, S, S) RGB in [-1, 1]. Returns (N, 3, S, S) [and (N, n_latent, style_dim)]."""
        maps = []
        for layer in self.encoder:  # S, S/2, ..., 4
            x = layer(x)
            maps.append(x)
        w = self.final_linear(x.flatten(1).float())  # (N, style_dim)
        style = self.generator.style(w)
        latent = style[:, None, :].expand(-1, self.cfg.n_latent, -1)
        # deepest map once (conv1), then every larger map twice (both convs of its resolution)
        features = [maps[-1]] + [m for m in reversed(maps[:-1]) for _ in range(2)]
        image = self.generator(latent, features)
        return (image, latent) if return_latents else image
