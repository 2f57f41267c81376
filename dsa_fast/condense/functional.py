"""A network run at a flat parameter vector (``torch.func.functional_call``), as trajectory
matching needs it: the expert snapshots are flat vectors, and the unrolled student is a chain of
flat vectors θ_0, θ_1, ... each a differentiable function of the one before.

The module itself is never rewritten: its parameters stay as they are, and each call hands
``functional_call`` views of the flat vector in the order of ``named_parameters()`` (the order of
``net.parameters()``, the one the expert files store).
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn
from torch.func import functional_call


class FlatNetwork:
    """``net`` evaluated at a flat parameter vector: ``FlatNetwork(net)(theta, x)``."""

    def __init__(self, net: nn.Module):
        self.net = net
        named = list(net.named_parameters())
        self.names: List[str] = [n for n, _ in named]
        self.shapes: List[Tuple[int, ...]] = [tuple(p.shape) for _, p in named]
        self.numels: List[int] = [p.numel() for _, p in named]
        self.num_params = sum(self.numels)

    def flatten(self, net: nn.Module = None) -> Tensor:
        """The parameters of ``net`` (default: this network) as one detached vector."""
        net = self.net if net is None else net
        return torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def params(self, theta: Tensor) -> Dict[str, Tensor]:
        """Views of ``theta`` shaped as the module's parameters, by name."""
        if theta.dim() != 1 or theta.numel() != self.num_params:
            raise ValueError(f"dsa_fast.condense: a flat parameter vector of {self.num_params} values is needed, "
                             f"got shape {tuple(theta.shape)}")
        return {n: t.view(s) for n, t, s in zip(self.names, theta.split(self.numels), self.shapes)}

    def __call__(self, theta: Tensor, x: Tensor) -> Tensor:
        return functional_call(self.net, self.params(theta), (x,))

    @torch.no_grad()
    def load(self, theta: Tensor) -> nn.Module:
        """Copy ``theta`` into the module's parameters; returns the module."""
        for p, t in zip(self.net.parameters(), theta.split(self.numels)):
            p.copy_(t.view(p.shape))
        return self.net
