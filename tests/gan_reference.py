"""A literal re-implementation of the published GAN DiffAugment (Zhao et al., NeurIPS 2020), written
from its formulas: the oracle tests/test_gan.py compares dsa_fast.gan against. Each op makes the
same generator calls (torch.rand / torch.randint on x's device, x's dtype for the colours) in the
same order, and computes as the published code computes (tensor op by tensor op)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _uniform(x):
    return torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device)


def brightness(x):
    return x + (_uniform(x) - 0.5)


def saturation(x):
    m = x.mean(dim=1, keepdim=True)
    return (x - m) * (_uniform(x) * 2) + m


def contrast(x):
    m = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - m) * (_uniform(x) + 0.5) + m


def translation(x, ratio=0.125):
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    th = torch.randint(-sh, sh + 1, size=[n, 1, 1], device=x.device)
    tw = torch.randint(-sw, sw + 1, size=[n, 1, 1], device=x.device)
    b, i, j = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(h, device=x.device),
                             torch.arange(w, device=x.device), indexing="ij")
    # One zero pixel of padding on every side; a source index clamped into the padded image reads
    # the padding (0) whenever it falls outside.
    i = torch.clamp(i + th + 1, 0, h + 1)
    j = torch.clamp(j + tw + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    return padded.permute(0, 2, 3, 1)[b, i, j].permute(0, 3, 1, 2)


def cutout(x, ratio=0.5):
    n, _, h, w = x.shape
    bh, bw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oh = torch.randint(0, h + (1 - bh % 2), size=[n, 1, 1], device=x.device)
    ow = torch.randint(0, w + (1 - bw % 2), size=[n, 1, 1], device=x.device)
    b, i, j = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(bh, device=x.device),
                             torch.arange(bw, device=x.device), indexing="ij")
    i = torch.clamp(i + oh - bh // 2, 0, h - 1)
    j = torch.clamp(j + ow - bw // 2, 0, w - 1)
    mask = torch.ones(n, h, w, dtype=x.dtype, device=x.device)
    mask[b, i, j] = 0
    return x * mask.unsqueeze(1)


POLICY = {"color": (brightness, saturation, contrast), "translation": (translation,), "cutout": (cutout,)}


def diff_augment(x, policy="", channels_first=True):
    if not policy:
        return x
    if not channels_first:
        x = x.permute(0, 3, 1, 2)
    for token in policy.split(","):
        for op in POLICY[token]:
            x = op(x)
    if not channels_first:
        x = x.permute(0, 2, 3, 1)
    return x.contiguous()
