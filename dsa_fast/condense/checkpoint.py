"""Atomic files and the run checkpoint.

Every output is written to a temporary file in the same folder, flushed, fsync'ed and renamed over
the target (then the folder is fsync'ed), so a kill leaves either the old or the new file, never a
torn one.

Checkpoint file layout: one JSON header line after a magic line, then the ``torch.save`` payload::

    DSA_FAST_CONDENSE_CHECKPOINT\\n
    {"version": 1, "payload_bytes": N, "sha256": "..."}\\n
    <N bytes: torch.save(state)>

The header lets a foreign file be told apart from a corrupt one, and the hash catches truncation
or bit rot before anything is unpickled. The payload loads with ``weights_only=True``.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
import tempfile
from typing import Any, Dict, Optional

import numpy as np
import torch

MAGIC = b"DSA_FAST_CONDENSE_CHECKPOINT\n"
VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed: missing, corrupt, foreign or from another run."""


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems do not open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (write, flush, fsync, rename, fsync the folder)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual mode
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)


def atomic_torch_save(obj: Any, path: str) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def save_checkpoint(path: str, state: Dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    header = {"version": VERSION, "payload_bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    atomic_write_bytes(path, MAGIC + json.dumps(header).encode() + b"\n" + payload)


def load_checkpoint(path: str) -> Dict[str, Any]:
    """Read and verify a checkpoint; raise CheckpointError with the reason and what to do."""
    if not os.path.isfile(path):
        raise CheckpointError(
            f"no checkpoint at {path}: the run stopped before its first checkpoint; start it again "
            f"with another --out, or after deleting its folder (the same --seed gives the same run)"
        )
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(MAGIC):
        raise CheckpointError(f"{path} is not a dsa_fast condense checkpoint (foreign file); refusing to resume from it")
    rest = data[len(MAGIC):]
    end = rest.find(b"\n")
    try:
        header = json.loads(rest[:end].decode()) if end >= 0 else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict) or "sha256" not in header or "payload_bytes" not in header:
        raise CheckpointError(f"{path} is corrupt: unreadable header; refusing to resume from it")
    if header.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {header.get('version')}; this dsa_fast reads version "
            f"{VERSION}"
        )
    payload = rest[end + 1:]
    if len(payload) != header["payload_bytes"] or hashlib.sha256(payload).hexdigest() != header["sha256"]:
        raise CheckpointError(
            f"{path} is corrupt (truncated or modified: {len(payload)} of {header['payload_bytes']} payload "
            f"bytes, or a hash mismatch); refusing to resume from it. Start the run again with another --out "
            f"(the same --seed gives the same run)."
        )
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as e:  # a payload that hashes right but does not load: not ours
        raise CheckpointError(f"{path}: the payload does not load ({e}); refusing to resume from it") from e


# -- RNG state --------------------------------------------------------------------------------


def rng_state(generators: Dict[str, torch.Generator]) -> Dict[str, Any]:
    """Every RNG state a run can touch: the run's own generators, torch's global CPU and CUDA
    generators, numpy's and Python's global generators (plain types and tensors only)."""
    np_state = np.random.get_state()
    state: Dict[str, Any] = {
        "generators": {name: g.get_state() for name, g in generators.items()},
        "torch_cpu": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any], generators: Dict[str, torch.Generator]) -> None:
    missing = sorted(set(generators) - set(state["generators"]))
    if missing:
        raise CheckpointError(f"checkpoint lacks the state of generator(s) {missing}")
    for name, g in generators.items():
        s = state["generators"][name]
        try:
            g.set_state(s.to(torch.uint8))
        except RuntimeError as e:
            raise CheckpointError(
                f"checkpoint generator {name!r} does not fit this device ({e}); resume on the device type "
                f"the run was started on"
            ) from e
    torch.set_rng_state(state["torch_cpu"])
    if "torch_cuda" in state and torch.cuda.is_available():
        cuda_states = state["torch_cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
    random.setstate(_as_tuple(state["python"]))
    name, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, cached))


def _as_tuple(x: Any) -> Any:
    """random.setstate wants tuples; a round trip may hand back lists."""
    if isinstance(x, (list, tuple)):
        return tuple(_as_tuple(v) for v in x)
    return x


def config_mismatch(saved: Dict[str, Any], current: Dict[str, Any]) -> Optional[str]:
    """A readable list of the identity settings that differ, or None."""
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}"
             for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
    return "; ".join(diffs) if diffs else None
