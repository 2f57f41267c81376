"""``host_cache``: ``functools.lru_cache`` for the host-side work that depends only on a call's
settings and shapes (parsed strategies, launch plans), so eager calls pay it once.

NB: under ``torch.compile`` the wrapped function is called directly: Dynamo ignores an lru_cache
wrapper anyway (it traces the function and warns about the wrapper), and the traced graph holds
the plan as constants, so nothing is lost.
"""
from __future__ import annotations

import functools

import torch


def host_cache(maxsize: int):
    def decorate(fn):
        cached = functools.lru_cache(maxsize=maxsize)(fn)

        @functools.wraps(fn)
        def call(*args):
            if torch.compiler.is_compiling():
                return fn(*args)
            return cached(*args)

        return call

    return decorate
