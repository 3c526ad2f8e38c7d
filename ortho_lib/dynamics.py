r"""Training dynamics: networks at many moments of their runs, and their robustness orthogonal to the data.

:func:`snapshots` trains each of ``E`` networks to each of ``K`` step counts (or target margins) in one
call of :func:`ortho_lib.train`: the ``E * K`` copies form one stack whose members differ only in
``max_steps`` (or ``target_margin``), so the sweep engine trains them together, and member $(e, k)$ is
exactly network $e$ after ``steps[k]`` updates (every backend reproduces the reference loop's iterates).
With step counts growing geometrically the cost is a small multiple of the longest run.

:func:`orthogonal_profile` measures, at given points of $P$, what the book tracks along a run: the
orthogonal gradient $g_\perp(x) = \Pi_\perp\nabla_x N(x)$ beside Theorem A's prediction
$\mathbb E\|g_\perp\|^2 = \beta^2\|u_{I(x)}\|^2\ell$, the output $|N(x)|$, and the exact distance to the
first sign change along $-\operatorname{sign}N(x)\,g_\perp(x)$ (:func:`ortho_lib.flip_norm_along`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ._checks import check_float, check_int, check_tensor
from .gradients import active_second_layer_norm_sq
from .network import TwoLayerParams, _stack, _check_params, default_beta, network_output, orthogonal_gradient
from .perturbations import flip_norm_along
from .subspaces import Subspace, _check_subspace
from .training import TrainConfig, TrainResult, train


@dataclass(frozen=True)
class Snapshots:
    r"""What :func:`snapshots` returns: ``E`` networks, each at ``K`` moments of its run.

    Attributes:
        result: the :class:`~ortho_lib.training.TrainResult` of the ``E * K`` stack; member ``e * K + k`` is
            network ``e`` at moment ``k``.
        E: the number of networks.
        K: the number of moments.
        by: ``"steps"`` or ``"margins"``: what the moments were given as.
        points: the ``K`` step counts or target margins.
    """

    result: TrainResult
    E: int
    K: int
    by: str
    points: tuple

    def at(self, e: int, k: int) -> TwoLayerParams:
        """Network ``e`` at moment ``k``."""
        e = check_int("e", e, low=-self.E, high=self.E - 1) % self.E
        k = check_int("k", k, low=-self.K, high=self.K - 1) % self.K
        return self.result.params.member(e * self.K + k)

    def _grid(self, values: Tensor) -> Tensor:
        return values.reshape(self.E, self.K)

    @property
    def steps(self) -> Tensor:
        """``(E, K)`` int64: updates made by each snapshot."""
        return self._grid(self.result.steps)

    @property
    def margin(self) -> Tensor:
        r"""``(E, K)``: the train margin $\min_j y_jN(x_j)$ of each snapshot."""
        return self._grid(self.result.final_margin)

    @property
    def reached(self) -> Tensor:
        """``(E, K)`` bool: whether each snapshot reached its target margin (``by="margins"``; else all False)."""
        return self._grid(self.result.reached)


def snapshots(
    params: Union[TwoLayerParams, Sequence[TwoLayerParams]],
    X: Tensor,
    y: Tensor,
    config: TrainConfig,
    *,
    steps: Optional[Sequence[int]] = None,
    margins: Optional[Sequence[float]] = None,
    sub: Optional[Subspace] = None,
    backend: str = "auto",
) -> Snapshots:
    r"""Train each network to each of several step counts, or to each of several margins, in one call.

    Exactly one of ``steps`` and ``margins`` is given.  With ``steps``, snapshot $k$ of network $e$ is network
    $e$ after ``steps[k]`` updates of ``config`` (its ``target_margin`` is dropped); with ``margins``, it is
    network $e$ stopped at the first iterate whose train margin reaches ``margins[k]`` (or after
    ``config.max_steps`` updates).  Both are exact: the copies follow the same iteration, and stop at
    different moments.

    Args:
        params: one network, a list of ``E`` networks or a stack.
        X: ``(n, d)`` training inputs shared by every network, or ``(E, n, d)`` one set per network.
        y: ``(n,)`` labels, or ``(E, n)``.
        config: the :class:`~ortho_lib.training.TrainConfig` of every run.
        steps: ``K`` step counts ``>= 0``.  margins: ``K`` target margins.
        sub: the data subspace, if the inputs lie in it (lets the engine train in its coordinates).
        backend: as in :func:`ortho_lib.train`.
    Returns:
        :class:`Snapshots`.
    """
    if isinstance(params, TwoLayerParams):
        nets = params.members() if params.is_stack else [_check_params(params)]
    elif isinstance(params, Sequence) and not isinstance(params, (str, bytes)):
        nets = _stack(list(params), "params").members()
    else:
        raise TypeError(f"params must be TwoLayerParams or a list of them, got {type(params).__name__}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if (steps is None) == (margins is None):
        raise ValueError("steps and margins: give exactly one of them")
    by = "steps" if steps is not None else "margins"
    points = steps if steps is not None else margins
    if isinstance(points, (str, bytes, Tensor)) or not isinstance(points, Sequence) or len(points) == 0:
        raise TypeError(f"{by} must be a non-empty list of numbers, got {type(points).__name__}")
    if by == "steps":
        points = tuple(check_int(f"steps[{i}]", t, low=0, high=10**12) for i, t in enumerate(points))
        configs = [config.replace(max_steps=t, target_margin=None, strict=False) for t in points]
    else:
        points = tuple(check_float(f"margins[{i}]", g) for i, g in enumerate(points))
        configs = [config.replace(target_margin=g) for g in points]
    E, K = len(nets), len(points)
    X = check_tensor("X", X, ndim=(2, 3))
    if X.ndim == 3:
        if X.shape[0] != E:
            raise ValueError(f"X must have a leading axis of E = {E} (one training set per network), got {X.shape[0]}")
        X = X.repeat_interleave(K, dim=0)
    if isinstance(y, Tensor) and y.ndim == 2:
        if y.shape[0] != E:
            raise ValueError(f"y must have a leading axis of E = {E} (one label set per network), got {y.shape[0]}")
        y = y.repeat_interleave(K, dim=0)
    members = [p for p in nets for _ in range(K)]
    result = train(members, X, y, configs * E, sub=sub, backend=backend)
    return Snapshots(result=result, E=E, K=K, by=by, points=points)


class OrthogonalProfile(NamedTuple):
    r"""Robustness orthogonal to the data at ``n`` points (what :func:`orthogonal_profile` returns; each ``(n,)``).

    Attributes:
        gperp: $\|g_\perp(x)\|$.
        uI_sq: $\|u_{I(x)}\|^2$ ($= k/m$ for the sign second layer).
        output: $|N(x)|$.
        flip: the exact distance along $-\operatorname{sign}N(x)\,g_\perp(x)/\|g_\perp(x)\|$ to the first sign change
            (``inf`` if none; ``nan`` where $N(x) = 0$ or $g_\perp(x) = 0$).
        beta, ell: the initialisation scale and the codimension used by :attr:`predicted_rms`.
    """

    gperp: Tensor
    uI_sq: Tensor
    output: Tensor
    flip: Tensor
    beta: float
    ell: int

    @property
    def rms(self) -> float:
        r"""$\bigl(\operatorname{mean}_x \|g_\perp(x)\|^2\bigr)^{1/2}$."""
        return float(self.gperp.pow(2).mean().sqrt())

    @property
    def predicted_rms(self) -> float:
        r"""Theorem A's $\bigl(\beta^2\,\ell\,\operatorname{mean}_x\|u_{I(x)}\|^2\bigr)^{1/2}$ (exact in mean square)."""
        return math.sqrt(self.beta**2 * self.ell * float(self.uI_sq.mean()))


def orthogonal_profile(
    params: TwoLayerParams, sub: Subspace, X: Tensor, *, beta: Optional[float] = None, max_norm: float = math.inf
) -> OrthogonalProfile:
    r"""The orthogonal gradient, its Theorem A prediction, the output and the exact orthogonal flip norm at points of $P$.

    Args:
        params: a single network.
        sub: the data subspace $P$ (its codimension $\ell$ enters the prediction).
        X: ``(n, d)`` points (of $P$, for the prediction to apply).
        beta: the scale of the initial first layer (default :func:`ortho_lib.default_beta`).
        max_norm: report ``inf`` for flips farther than this.
    Returns:
        :class:`OrthogonalProfile`.
    """
    params = _check_params(params, single=True)
    sub = _check_subspace(sub, params.d, against="the network's inputs")
    X = check_tensor("X", X, ndim=2)
    if X.shape[1] != params.d:
        raise ValueError(f"X must have d = {params.d} columns to match the network, got shape {tuple(X.shape)}")
    beta = default_beta(params.d) if beta is None else check_float("beta", beta, positive=True)
    max_norm = check_float("max_norm", max_norm, positive=True, allow_inf=True)
    X = X.detach().to(params.W.dtype)
    g = orthogonal_gradient(params, sub, X).detach()
    gn = g.norm(dim=1)
    flat = gn == 0
    if bool(flat.any()):  # no active neuron: no direction to follow (the flip is reported as nan)
        g = torch.where(flat[:, None], sub.perp_basis[:, 0].to(g.dtype)[None, :], g)
    flip = flip_norm_along(params, X, g, max_norm=max_norm).norm
    flip = torch.where(flat, torch.full_like(flip, math.nan), flip)
    with torch.no_grad():
        out = network_output(params, X).abs()
    return OrthogonalProfile(gperp=gn, uI_sq=active_second_layer_norm_sq(params, X).detach(), output=out.detach(),
                             flip=flip.detach(), beta=beta, ell=sub.ell)


def loglog_slope(x: Union[Sequence[float], Tensor], y: Union[Sequence[float], Tensor]) -> float:
    r"""The least-squares slope of $\log y$ against $\log x$.

    Args:
        x, y: the same number (at least two) of positive finite values, as 1-D float tensors, sequences
            of numbers or arrays (NumPy, pandas); ``x`` must hold at least two distinct values.
    Returns:
        The slope $b$ of the fit $\log y \approx a + b\log x$.
    """
    def values(name: str, v: object) -> Tensor:
        if isinstance(v, Tensor):
            return check_tensor(name, v, ndim=1).detach().cpu().double()
        if isinstance(v, (str, bytes)) or not (isinstance(v, Sequence) or hasattr(v, "__array__")):
            raise TypeError(f"{name} must be a 1-D float tensor or a sequence of numbers, got {type(v).__name__}")
        return torch.tensor([check_float(f"{name}[{i}]", t) for i, t in enumerate(np.asarray(v).reshape(-1).tolist())],
                            dtype=torch.float64)

    xs, ys = values("x", x), values("y", y)
    if xs.shape != ys.shape or xs.numel() < 2:
        raise ValueError(f"x and y must hold the same number (>= 2) of values, got {xs.numel()} and {ys.numel()}")
    if not bool((xs > 0).all()):
        raise ValueError("x must be positive (its logarithm is fitted)")
    if not bool((ys > 0).all()):
        raise ValueError("y must be positive (its logarithm is fitted)")
    lx, ly = xs.log(), ys.log()
    lx = lx - lx.mean()
    if float(lx.pow(2).sum()) == 0:
        raise ValueError("x must hold at least two distinct values")
    return float((lx * (ly - ly.mean())).sum() / lx.pow(2).sum())
