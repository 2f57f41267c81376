"""Atomic files and the run checkpoint.

Every output is written to a temporary file in the same folder, flushed, fsync'ed and renamed over
the target (then the folder is fsync'ed), so a kill leaves either the old or the new file, never a
torn one.

``checkpoint.pt`` is a plain ``torch.save`` file (``torch.load(path, weights_only=True)`` reads it):
a dict whose ``"format"`` entry is ``CHECKPOINT_FORMAT``. Before unpickling, ``load_checkpoint``
checks the CRC-32 that torch's zip container stores for every member (``torch.load`` itself does
not), so truncation or bit rot is reported as corruption instead of resuming from wrong values.
Checkpoints in the earlier layout (a magic line, a JSON header with the payload's sha256, then the
``torch.save`` payload) are still read.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
import tempfile
import zipfile
from typing import Any, Dict, Optional

import numpy as np
import torch

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "dsa_fast.condense/1"
LEGACY_MAGIC = b"DSA_FAST_CONDENSE_CHECKPOINT\n"  # the earlier layout: magic, JSON header, payload


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
    """Write ``state`` (which must carry ``"format": CHECKPOINT_FORMAT``) atomically as a torch file."""
    atomic_torch_save(state, path)


def _restart_hint(path: str) -> str:
    run_dir = os.path.dirname(os.path.abspath(path))
    return (f"delete it and resume with --resume {run_dir} to start the run again from iteration 0 "
            f"(same settings and seed: the same run)")


def load_checkpoint(path: str) -> Dict[str, Any]:
    """Read and verify a checkpoint; raise CheckpointError with the reason and what to do."""
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}")
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(LEGACY_MAGIC):
        payload = _legacy_payload(path, data)
    elif zipfile.is_zipfile(io.BytesIO(data)):
        try:
            bad = zipfile.ZipFile(io.BytesIO(data)).testzip()  # CRC-32 of every member
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            bad = f"unreadable zip structure ({e})"
        if bad is not None:
            raise CheckpointError(f"{path} is corrupt (truncated or modified: {bad} fails its check); refusing "
                                  f"to resume from it; {_restart_hint(path)}")
        payload = data
    else:
        raise CheckpointError(f"{path} is not a dsa_fast condense checkpoint (not a torch file, or truncated); "
                              f"refusing to resume from it; {_restart_hint(path)}")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as e:  # intact container, but not plain tensors and data: not ours
        raise CheckpointError(f"{path} is not a dsa_fast condense checkpoint (it does not load with "
                              f"weights_only=True: {type(e).__name__}); refusing to resume from it") from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not a dsa_fast condense checkpoint (format {got!r}, expected "
                              f"{CHECKPOINT_FORMAT!r}); refusing to resume from it")
    return state


def _legacy_payload(path: str, data: bytes) -> bytes:
    rest = data[len(LEGACY_MAGIC):]
    end = rest.find(b"\n")
    try:
        header = json.loads(rest[:end].decode()) if end >= 0 else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict) or header.get("version") != 1 or "sha256" not in header:
        raise CheckpointError(f"{path} is corrupt: unreadable header; refusing to resume from it; "
                              f"{_restart_hint(path)}")
    payload = rest[end + 1:]
    if len(payload) != header.get("payload_bytes") or hashlib.sha256(payload).hexdigest() != header["sha256"]:
        raise CheckpointError(f"{path} is corrupt (truncated or modified: sha256 mismatch); refusing to resume "
                              f"from it; {_restart_hint(path)}")
    return payload


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
