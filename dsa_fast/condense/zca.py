"""ZCA whitening, as the published trajectory-matching runs use it on CIFAR (kornia's
``ZCAWhitening(eps=0.1)`` fitted on the whole training set, applied to train and test images).

Fitted on the images in [0, 1] (the loaders' normalisation undone: the published runs whiten the
raw pixels), flattened to D values each:

    μ = mean over the N images,  C = (X − μ)ᵀ(X − μ) / (N − 1),  W = (C + eps·I)^(−1/2)
    zca(x) = (x − μ) W

W is computed from the eigendecomposition of C (``torch.linalg.eigh``; C is symmetric positive
semi-definite, so it equals the SVD kornia takes), in float64.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Sequence

import torch
from torch import Tensor

from .data import denormalize

ZCA_EPS = 0.1  # the published runs' kornia.enhance.ZCAWhitening(eps=0.1)


@dataclass
class ZCA:
    """A fitted whitening: ``mean`` [D] and ``transform`` [D, D] (float32), applied to images whose
    loader normalisation (``norm_mean``/``norm_std`` per channel) is undone first."""

    mean: Tensor
    transform: Tensor
    eps: float
    norm_mean: Sequence[float]
    norm_std: Sequence[float]

    def __call__(self, images: Tensor) -> Tensor:
        """Whitened copies of normalised images [N, C, H, W] (the same shape)."""
        x = denormalize(images, self.norm_mean, self.norm_std).reshape(images.shape[0], -1)
        mean, transform = self.mean.to(x), self.transform.to(x)
        return ((x - mean) @ transform).reshape(images.shape)

    def state(self) -> Dict[str, Any]:
        return {"mean": self.mean.cpu(), "transform": self.transform.cpu(), "eps": self.eps,
                "norm_mean": list(self.norm_mean), "norm_std": list(self.norm_std)}

    @classmethod
    def from_state(cls, state: Dict[str, Any]) -> "ZCA":
        return cls(state["mean"], state["transform"], float(state["eps"]), list(state["norm_mean"]),
                   list(state["norm_std"]))


def whitening_matrix(x: Tensor, eps: float) -> Tensor:
    """(C + eps·I)^(−1/2) for the rows of ``x`` [N, D] (C their unbiased covariance), in x's dtype."""
    centred = x - x.mean(dim=0, keepdim=True)
    cov = centred.t() @ centred / (x.shape[0] - 1)
    evals, evecs = torch.linalg.eigh(cov)
    return (evecs * (evals.clamp_min(0) + eps).rsqrt()) @ evecs.t()


def fit_zca(images: Tensor, norm_mean: Sequence[float], norm_std: Sequence[float], eps: float = ZCA_EPS) -> ZCA:
    """The whitening of normalised ``images`` [N, C, H, W] (computed in float64, kept in float32)."""
    if images.shape[0] < 2:
        raise ValueError(f"dsa_fast.condense: ZCA needs at least 2 images, got {images.shape[0]}")
    x = denormalize(images, norm_mean, norm_std).reshape(images.shape[0], -1).double()
    w = whitening_matrix(x, eps)
    return ZCA(x.mean(dim=0).float().cpu(), w.float().cpu(), float(eps), list(norm_mean), list(norm_std))
