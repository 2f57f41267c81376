"""The files a run leaves in its folder: synthetic.pt, synthetic.png, metrics.jsonl, summary.json."""
from __future__ import annotations

import io
import json
import os
from typing import Any, Dict, Iterable, List, Optional

import numpy as np
import torch
from torch import Tensor

from .checkpoint import atomic_torch_save, atomic_write_bytes
from .data import DatasetInfo, denormalize

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SYNTHETIC = "synthetic.pt"
SYNTHETIC_PNG = "synthetic.png"
SUMMARY = "summary.json"


def save_synthetic(path: str, images: Tensor, labels: Tensor, info: DatasetInfo, **extra: Any) -> None:
    """synthetic.pt: normalised images [N, C, H, W], labels [N], and the normalisation to undo it.

    Loads with ``torch.load(path, weights_only=True)``.
    """
    obj = {
        "images": images.detach().cpu().clone(),
        "labels": labels.detach().cpu().clone(),
        "dataset": info.name,
        "mean": list(info.mean),
        "std": list(info.std),
        "channel": info.channel,
        "im_size": list(info.im_size),
        "num_classes": info.num_classes,
        **extra,
    }
    atomic_torch_save(obj, path)


def image_grid(images: Tensor, labels: Tensor, mean, std, num_classes: int, pad: int = 2) -> np.ndarray:
    """uint8 [rows*(H+pad)+pad, cols*(W+pad)+pad, C]: one row per class, de-normalised, clamped to
    [0, 1]; padding is white."""
    x = denormalize(images.detach().float().cpu(), mean, std).clamp_(0, 1)
    n, c, h, w = x.shape
    rows = [x[labels.cpu() == k] for k in range(num_classes)]
    cols = max([r.shape[0] for r in rows] + [1])
    grid = torch.ones(c, num_classes * (h + pad) + pad, cols * (w + pad) + pad)
    for i, r in enumerate(rows):
        for j in range(r.shape[0]):
            top, left = pad + i * (h + pad), pad + j * (w + pad)
            grid[:, top:top + h, left:left + w] = r[j]
    return (grid.mul(255).round_().to(torch.uint8).permute(1, 2, 0).numpy())


def save_png(path: str, images: Tensor, labels: Tensor, mean, std, num_classes: int) -> None:
    from PIL import Image

    arr = image_grid(images, labels, mean, std, num_classes)
    img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)  # uint8: 'L' or 'RGB'
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def append_jsonl(path: str, record: Dict[str, Any]) -> None:
    """Append one JSON line and fsync it: a line is either whole or absent after a kill."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_jsonl(path: str, records: Iterable[Dict[str, Any]]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in records).encode())


def write_json(path: str, obj: Dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_json(path: str) -> Optional[Dict[str, Any]]:
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_jsonl(path: str) -> List[Dict[str, Any]]:
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
