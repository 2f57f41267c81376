"""Explicit seeding: every random stream of a run is derived from ``--seed``; no wall clock.

Streams (``derive_seed(seed, STREAM, ...)``) are independent of each other, so evaluating more or
less often does not change the synthetic set, and the baseline and the evaluation of model k use
the same network initialisations (a paired comparison).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch

STREAM_CONTROL = 0  # per-iteration network seeds and (rng='compat') per-class DiffAugment seeds (CPU generator)
STREAM_SAMPLE = 1  # real-batch sampling (generator on the data device)
STREAM_INIT = 2  # initial synthetic set
STREAM_EVAL = 3  # evaluation model k: network init, shuffling, per-sample augmentation
STREAM_BASELINE = 4  # choice of the random real images of the baseline
STREAM_AUGMENT = 5  # rng='device': the base of the per-class DiffAugment keys (steps.class_keys)
STREAM_EXPERT = 6  # expert k of an experts folder: network init, shuffling, per-sample augmentation


# A run's seed (--seed): a non-negative signed 64-bit integer, as config.json and a checkpoint keep it.
RUN_SEED_MAX = 2**63 - 1
RUN_SEEDS = "an integer in [0, 2**63 - 1]"


def check_run_seed(seed: int) -> int:
    """``seed`` if it is a run seed (``RUN_SEEDS``), else a ValueError that names the range."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= RUN_SEED_MAX:
        raise ValueError(f"dsa_fast.condense: seed must be {RUN_SEEDS}, got {seed!r}")
    return seed


def derive_seed(seed: int, *tags: int) -> int:
    """A 63-bit seed for the stream ``tags`` of run ``seed`` (numpy SeedSequence mixing)."""
    check_run_seed(seed)
    state = np.random.SeedSequence([int(seed), *[int(t) for t in tags]]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def generator(device, seed: int) -> torch.Generator:
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(seed)
    return g


@contextlib.contextmanager
def global_rng_kept(device) -> Iterator[None]:
    """torch's global generators (the CPU one and ``device``'s) are restored after the block.

    Seeded DiffAugment calls (rng='compat') reseed the global generators, as the official code does.
    """
    dev = torch.device(device)
    devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


@contextlib.contextmanager
def global_rng_scope(device, seed: int) -> Iterator[None]:
    """Seed torch's global generators for the block, and restore their previous state afterwards.

    Network initialisation and DiffAugment's unseeded (seed=-1) draws use the global generators.
    """
    with global_rng_kept(device):
        torch.manual_seed(seed)
        yield
