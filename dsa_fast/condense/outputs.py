"""The files a run leaves in its folder: synthetic.pt, synthetic.png, metrics.jsonl, summary.json."""
from __future__ import annotations

import io
import json
import os
from typing import Any, Dict, Iterable, List, Optional

import torch
from torch import Tensor

from .checkpoint import atomic_torch_save, atomic_write_bytes
from .data import DatasetInfo, class_label, denormalize

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


# A synthetic image is a few dozen pixels: the picture scales it up by a whole factor (nearest
# neighbour, so every pixel stays a visible square) to about CELL_PIXELS on its longer side, within
# MAX_PICTURE_WIDTH for sets of many images per class.
CELL_PIXELS = 96
MAX_PICTURE_WIDTH = 8192
GAP = 4  # white pixels around every image


def set_picture(images: Tensor, labels: Tensor, info: DatasetInfo):
    """The set as a grid a person reads at a glance (a PIL image, 'L' or 'RGB'): one row per class,
    named on the left (``data.class_label``), its images de-normalised, clamped to [0, 1] and scaled
    up; white background."""
    from PIL import Image, ImageDraw, ImageFont

    x = denormalize(images.detach().float().cpu(), info.mean, info.std).clamp_(0, 1)
    n, c, h, w = x.shape
    rows = [x[labels.cpu() == k] for k in range(info.num_classes)]
    cols = max([r.shape[0] for r in rows] + [1])
    scale = max(1, min(CELL_PIXELS // max(h, w), MAX_PICTURE_WIDTH // (cols * (w + GAP))))
    ch, cw = h * scale, w * scale
    names = [class_label(info.name, k) for k in range(info.num_classes)]
    font = ImageFont.load_default(size=max(10, min(ch // 3, 20)))
    left = GAP + max(int(ImageDraw.Draw(Image.new("L", (1, 1))).textlength(t, font=font)) for t in names) + 2 * GAP
    mode, white, ink = ("L", 255, 0) if c == 1 else ("RGB", (255, 255, 255), (0, 0, 0))
    picture = Image.new(mode, (left + cols * (cw + GAP), GAP + info.num_classes * (ch + GAP)), white)
    draw = ImageDraw.Draw(picture)
    for i, row in enumerate(rows):
        top = GAP + i * (ch + GAP)
        draw.text((GAP, top + ch // 2), names[i], fill=ink, font=font, anchor="lm")
        for j in range(row.shape[0]):
            pixels = row[j].mul(255).round_().to(torch.uint8).permute(1, 2, 0).numpy()
            tile = Image.fromarray(pixels[:, :, 0] if c == 1 else pixels).resize((cw, ch), Image.NEAREST)
            picture.paste(tile, (left + j * (cw + GAP), top))
    return picture


def save_png(path: str, images: Tensor, labels: Tensor, info: DatasetInfo) -> None:
    """``set_picture`` as a PNG, with the rows' names also in its ``rows`` text entry (one per line)."""
    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    meta.add_text("rows", "\n".join(class_label(info.name, k) for k in range(info.num_classes)))
    buf = io.BytesIO()
    set_picture(images, labels, info).save(buf, format="PNG", pnginfo=meta)
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
