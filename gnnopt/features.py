"""Per-element optimizer features: momenta and the log/sign preprocessing.

Each parameter element carries momenta ``m_beta <- beta * m_beta + g`` for the betas in
:data:`BETAS` (no ``(1 - beta)`` factor). The raw features of an element are
``[theta, g, m_0.5, ..., m_0.9999]``; each raw value ``x`` is preprocessed as in
Andrychowicz et al. 2016 ("Learning to learn by gradient descent by gradient descent",
appendix A) with ``p = 10``::

    (log|x| / p, sign x)   if |x| >= exp(-p)
    (-1, exp(p) * x)       otherwise

so every element is described by ``2 * (2 + len(BETAS))`` numbers (:data:`FEATURE_SIZE`).
"""
from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor

BETAS: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999, 0.9999)
RAW_FEATURES: int = 2 + len(BETAS)  # theta, grad, one momentum per beta
FEATURE_SIZE: int = 2 * RAW_FEATURES
PREPROCESS_P: float = 10.0
#: per-tensor inputs of a rule's scale module (:func:`gnnopt.functional.tensor_features`)
TENSOR_FEATURE_SIZE: int = 10
_CHUNK = 32768  # elements per chunk of element_features


def update_momenta(momenta: Tensor, grad: Tensor, betas: Tensor) -> Tensor:
    """Return ``betas * momenta + grad``.

    Shapes:
        momenta: ``[len(BETAS), P]``; grad: ``[P]``; betas: ``[len(BETAS)]``.
    """
    return torch.addcmul(grad.unsqueeze(0), betas.unsqueeze(1), momenta)


def preprocess(raw: Tensor, p: float = PREPROCESS_P) -> Tensor:
    """Log/sign preprocessing of raw features (Andrychowicz et al. 2016, app. A).

    Shapes:
        raw: ``[..., F]`` -> ``[..., 2F]`` laid out as ``[log part (F) | sign part (F)]``.
    """
    threshold = math.exp(-p)
    magnitude = raw.abs()
    large = magnitude >= threshold
    # clamp before the log so small values never produce -inf (and NaN gradients)
    log_part = torch.where(large, magnitude.clamp_min(threshold).log() / p, -1.0)
    sign_part = torch.where(large, torch.sign(raw), raw * math.exp(p))
    return torch.cat([log_part, sign_part], dim=-1)


def element_features(theta: Tensor, grad: Tensor, momenta: Tensor) -> Tensor:
    """Features of every element of a flat parameter vector.

    Shapes:
        theta, grad: ``[P]``; momenta: ``[len(BETAS), P]`` -> ``[P, FEATURE_SIZE]``.
    """
    # in chunks of elements, so that the temporaries of the preprocessing stay small
    chunks = [slice(start, start + _CHUNK) for start in range(0, theta.shape[0], _CHUNK)]
    tracked = torch.is_grad_enabled() and any(t.requires_grad for t in (theta, grad, momenta))
    if not tracked:  # written into one table: the chunks are never held twice
        out = theta.new_empty(theta.shape[0], FEATURE_SIZE)
        for rows in chunks:
            out[rows] = preprocess(torch.stack([theta[rows], grad[rows], *momenta[:, rows]], dim=1))
        return out
    parts = [preprocess(torch.stack([theta[rows], grad[rows], *momenta[:, rows]], dim=1)) for rows in chunks]
    if len(parts) == 1:
        return parts[0]
    return torch.cat(parts) if parts else theta.new_zeros(0, FEATURE_SIZE)


class LazyFeatures:
    """The ``[P, FEATURE_SIZE]`` table of :func:`element_features`, computed only for the rows
    asked for (``feats[rows]``, a slice or an index tensor) and never held whole: what a rule
    that reads its features by rows (``UpdateRule.reads_features_by_rows``) gets in an
    optimizer step, where no gradient flows. It saves the table's 56 bytes per parameter, and
    reads each parameter's own tensors (no joined copies of the parameters, gradients or
    momenta).

    Shapes:
        thetas, grads: one tensor per parameter, ``[*shape_t]``; momenta: ``[len(BETAS),
        *shape_t]`` each; rows number the elements of the tensors laid end to end (``P``).
    """

    def __init__(self, thetas: Sequence[Tensor], grads: Sequence[Tensor], momenta: Sequence[Tensor]) -> None:
        self.parts = [(t.reshape(-1), g.reshape(-1), m.reshape(len(BETAS), -1))
                      for t, g, m in zip(thetas, grads, momenta)]
        sizes = [t.shape[0] for t, _, _ in self.parts]
        self.offsets = [0, *itertools.accumulate(sizes)]
        self.shape = torch.Size((self.offsets[-1], FEATURE_SIZE))
        first = thetas[0] if thetas else torch.zeros(0)
        self.dtype, self.device = torch.float32, first.device

    def _part(self, i: int, rows: slice | Tensor) -> Tensor:
        theta, grad, momenta = self.parts[i]
        return element_features(theta[rows].float(), grad[rows].float(), momenta[:, rows].float())

    def __getitem__(self, rows: slice | Tensor) -> Tensor:
        if isinstance(rows, slice):
            start, stop, step = rows.indices(self.shape[0])
            if step != 1:
                raise ValueError("LazyFeatures reads slices of consecutive rows only")
            pieces = []
            i = bisect.bisect_right(self.offsets, start) - 1
            while start < stop and i < len(self.parts):
                begin, end = start - self.offsets[i], min(stop, self.offsets[i + 1]) - self.offsets[i]
                if end > begin:
                    pieces.append(self._part(i, slice(begin, end)))
                start, i = self.offsets[i] + max(begin, end), i + 1
            if not pieces:
                return self.new_zeros(0, FEATURE_SIZE)
            return torch.cat(pieces) if len(pieces) > 1 else pieces[0]
        out = self.new_empty(rows.shape[0], FEATURE_SIZE)
        owner = torch.searchsorted(torch.tensor(self.offsets[1:], device=rows.device), rows, right=True)
        for i in owner.unique().tolist():
            where = owner == i
            out[where] = self._part(i, rows[where] - self.offsets[i])
        return out

    def __len__(self) -> int:
        return self.shape[0]

    def new_zeros(self, *size: int) -> Tensor:
        return torch.zeros(*size, dtype=self.dtype, device=self.device)

    def new_empty(self, *size: int) -> Tensor:
        return torch.empty(*size, dtype=self.dtype, device=self.device)
