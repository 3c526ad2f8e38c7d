r"""Subspaces that real images lie in, or only near (the chapter *Real images*).

Three kinds of "orthogonal to the data" for a training set $X$ (rows $x_j \in \mathbb R^d$, pixels):

* **always-zero pixels** — :func:`zero_pixels` finds the pixels $Z$ that are $0$ in every training
  image; the training images lie in the coordinate subspace $P_Z = \mathrm{span}\{e_p : p \notin Z\}$ and
  :func:`pixel_subspace` returns it (with $P_Z^\perp = \mathrm{span}\{e_p : p \in Z\}$, $\ell_0 = |Z|$);
* **principal components** — :func:`data_spectrum` gives the singular values $\sigma_1 \ge \sigma_2 \ge
  \dots$ of the (uncentred) $X$ with right singular vectors $v_r$ (a full orthonormal basis of
  $\mathbb R^d$, $\sigma_r = 0$ beyond the rank); :func:`pca_subspace` is $P_k = \mathrm{span}(v_1, \dots,
  v_k)$, and projecting the images onto it puts them exactly on a $k$-dimensional subspace;
* **directions training leaves alone** — since every update of the first layer is a combination of
  training inputs, $W(T) - W(0) = CX$ for some matrix $C$, and along $v_r$ the first layer moves by
  exactly $\sigma_r\,C a_r$ ($a_r$ the left singular vector).  :func:`movement_ratios` measures
  $\rho_r = \|(W(T) - W(0))v_r\| / \|W(0)v_r\|$; :func:`gradient_energy_ratios` compares, along $v_r$, the
  part of the input gradient that training added with the part left from the initialisation, and
  :func:`effective_codimension` counts the directions where the second is at least the first: the
  book's effective codimension $\ell_{\mathrm{eff}}$.

For the multi-class network of :mod:`ortho_lib.mlp` (PyTorch's initialisation, i.i.d. uniform entries):
:func:`multiclass_gperp_statistic` (the orthogonal part of the loss's input gradient, normalised by its
exact conditional mean), :func:`class_direction` (one perturbation supported on $Z$ that pushes every
image towards a class) and :func:`fooling_rates` / :func:`first_order_target_norms` (how many images it
sends there, measured and to first order).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ._checks import check_classes, check_dtype, check_float, check_int, check_seed, check_tensor
from .network import TwoLayerParams, _check_params
from .subspaces import Subspace

__all__ = [
    "zero_pixels",
    "pixel_subspace",
    "balanced_subset",
    "pixel_gperp_statistic",
    "Spectrum",
    "data_spectrum",
    "pca_subspace",
    "tail_gperp_statistic",
    "movement_ratios",
    "gradient_energy_ratios",
    "EffectiveCodimension",
    "effective_codimension",
    "UNIFORM_KURTOSIS",
    "multiclass_gperp_statistic",
    "class_direction",
    "fooling_rates",
    "first_order_target_norms",
]

#: $\mu_4/\sigma^4$ of a uniform distribution on $[-a, a]$ (PyTorch's ``nn.Linear`` initialisation): $9/5$.
UNIFORM_KURTOSIS = 9.0 / 5.0


# ------------------------------------------------------------------------------------ argument checks

def _check_mask(name: str, zero: object, d: Optional[int] = None) -> Tensor:
    """A ``(d,)`` bool tensor (the pixel mask), else raise naming ``name``."""
    if not isinstance(zero, Tensor) or zero.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool torch.Tensor (True on the always-zero pixels), got "
                        f"{getattr(zero, 'dtype', type(zero).__name__)}")
    if zero.ndim != 1 or (d is not None and zero.shape[0] != d):
        want = "(d,)" if d is None else f"({d},)"
        raise ValueError(f"{name} must have shape {want}, got {tuple(zero.shape)}")
    return zero


def _check_model(name: str, model: object) -> nn.Module:
    """A one-hidden-layer multi-class network with ``hidden`` and ``out`` linear layers (:class:`ortho_lib.mlp.MLP`)."""
    if not isinstance(model, nn.Module) or not isinstance(getattr(model, "hidden", None), nn.Linear) \
            or not isinstance(getattr(model, "out", None), nn.Linear):
        raise TypeError(f"{name} must be an ortho_lib.mlp.MLP (a module with linear layers .hidden and .out), "
                        f"got {type(model).__name__}")
    return model


def _model_inputs(model: nn.Module, X: object, name: str = "X") -> Tensor:
    X = check_tensor(name, X, ndim=2)
    d = model.hidden.in_features
    if X.shape[1] != d:
        raise ValueError(f"{name} must have last dimension d = {d} to match model, got shape {tuple(X.shape)}")
    return X.detach().to(model.hidden.weight.dtype)


# ------------------------------------------------------------------------------------ always-zero pixels

def zero_pixels(X: Tensor) -> Tensor:
    r"""The pixels that are exactly $0$ in every row of ``X``: a ``(d,)`` bool mask $Z$.

    The rows of ``X`` lie in $P_Z = \mathrm{span}\{e_p : p\notin Z\}$, and $\ell_0 = |Z|$ (``int(mask.sum())``)
    is the dimension of the coordinate subspace $P_Z^\perp$ orthogonal to all of them.

    Args:
        X: ``(n, d)`` images as rows (``n >= 1``).
    """
    X = check_tensor("X", X, ndim=2)
    if X.shape[0] == 0:
        raise ValueError("X must hold at least one image")
    return (X.detach() == 0).all(dim=0)


def pixel_subspace(zero: Tensor, *, dtype: torch.dtype = torch.float64) -> Subspace:
    r"""The coordinate subspace $P_Z = \mathrm{span}\{e_p : p \notin Z\}$ with $P_Z^\perp = \mathrm{span}\{e_p : p \in Z\}$.

    ``Subspace.basis`` holds the unit vectors of the other pixels and ``Subspace.perp_basis`` those of the
    pixels in $Z$ (in increasing pixel order), so $\Pi_\perp x$ keeps the pixels of $Z$ and zeroes the rest.

    Args:
        zero: ``(d,)`` bool mask $Z$ (e.g. from :func:`zero_pixels`), with at least one pixel in and one out.
    """
    zero = _check_mask("zero", zero)
    ell = int(zero.sum())
    if not 1 <= ell <= zero.numel() - 1:
        raise ValueError(f"zero must mark at least one pixel and leave at least one unmarked, got {ell} of "
                         f"{zero.numel()} marked")
    dtype = check_dtype("dtype", dtype)
    eye = torch.eye(zero.numel(), dtype=dtype)
    return Subspace(basis=eye[:, ~zero].contiguous(), perp_basis=eye[:, zero].contiguous())


def balanced_subset(X: Tensor, y: Tensor, per_class: int, *, seed: int) -> tuple[Tensor, Tensor]:
    r"""``per_class`` rows of each label of ``y`` (drawn without replacement under ``seed``), in label order.

    Args:
        X: ``(n, d)`` rows.  y: ``(n,)`` labels ($\pm1$ or class indices, float or integer).
        per_class: rows to keep of each label (at most the smallest class size).
    Returns:
        ``(X_sub, y_sub)``: the rows of the smallest label first, each block in the drawn order.
    """
    X = check_tensor("X", X, ndim=2)
    if X.shape[0] == 0:
        raise ValueError("X must hold at least one row")
    if not isinstance(y, Tensor) or y.dtype == torch.bool or y.is_complex():
        raise TypeError(f"y must be a float or integer torch.Tensor of labels, got "
                        f"{getattr(y, 'dtype', type(y).__name__)}")
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ValueError(f"y must be a 1-d tensor with one label per row of X ({X.shape[0]}), got {tuple(y.shape)}")
    if y.is_floating_point() and not bool(torch.isfinite(y).all()):
        raise ValueError("y contains non-finite values (nan or inf)")
    y = y.detach()
    per_class = check_int("per_class", per_class, low=1)
    gen = torch.Generator().manual_seed(check_seed("seed", seed))
    keep = []
    for label in torch.unique(y).tolist():
        rows = torch.nonzero(y == label)[:, 0]
        if rows.numel() < per_class:
            raise ValueError(f"per_class must be at most the size of every class; label {label} has {rows.numel()}")
        keep.append(rows[torch.randperm(rows.numel(), generator=gen)[:per_class]])
    idx = torch.cat(keep)
    return X[idx], y[idx]


def pixel_gperp_statistic(params: TwoLayerParams, zero: Tensor, X: Tensor, *, beta: Optional[float] = None) -> Tensor:
    r"""$\|g_Z(x)\|^2 / (\beta^2\|u_{I(x)}\|^2)$ per row of ``X``: the orthogonal gradient on the pixels $Z$, normalised.

    $g_Z(x)$ is the part of $\nabla_x N(x) = \sum_{i\in I(x)} u_i w_i$ on the pixels of $Z$ (that is
    $\Pi_\perp\nabla_x N$ for $P = P_Z$, see :func:`pixel_subspace`).  For $x$ with $x_Z = 0$ chosen without
    looking at the initial weights on $Z$, it has exactly the law $\chi^2_{\ell_0}$ (Theorem A for the
    coordinate subspace $P_Z$).

    Args:
        params: a network or a stack of ``E``.
        zero: ``(d,)`` bool mask $Z$.
        X: ``(n, d)`` points.
        beta: the initialisation scale (default $1/\sqrt d$).
    Returns:
        ``(n,)`` (``(E, n)`` for a stack); nan where the active set is empty ($u_I = 0$).
    """
    params = _check_params(params)
    zero = _check_mask("zero", zero, params.d)
    X = check_tensor("X", X, ndim=2)
    if X.shape[1] != params.d:
        raise ValueError(f"X must have last dimension d = {params.d} to match params, got shape {tuple(X.shape)}")
    beta = 1.0 / math.sqrt(params.d) if beta is None else check_float("beta", beta, positive=True)
    X = X.detach().to(params.W.dtype)
    with torch.no_grad():
        H = X @ params.W.transpose(-1, -2) + params.b.unsqueeze(-2)
        A = (H > 0).to(X.dtype) * params.u.unsqueeze(-2)                   # u_i 1[i active]
        g = A @ params.W[..., zero]
        uI = (A**2).sum(-1)
        out = (g**2).sum(-1) / (beta**2 * uI)
    return torch.where(uI > 0, out, torch.full_like(out, math.nan))


# ------------------------------------------------------------------------------------ the data's spectrum

class Spectrum(NamedTuple):
    r"""The singular value decomposition of a training set, completed to a basis of $\mathbb R^d$.

    Attributes:
        sigma: ``(d,)`` singular values $\sigma_1 \ge \dots \ge \sigma_d \ge 0$ ($\sigma_r = 0$ for $r$ beyond
            ``rank``).
        directions: ``(d, d)`` orthonormal columns $v_r$ (right singular vectors, then a basis of the null space).
        rank: the number of singular values above the rank tolerance.
    """

    sigma: Tensor
    directions: Tensor
    rank: int


def data_spectrum(X: Tensor) -> Spectrum:
    r"""Singular values and right singular vectors of the uncentred training set ``X`` (rows).

    $X = \sum_r \sigma_r a_r v_r^\top$.  The images are not centred: the subspaces below are linear (through
    0), as in the book's setting.  Singular values at most $\max(n, d)\,\varepsilon\,\sigma_1$ (NumPy's rank
    tolerance) count as $0$ and are set to $0$.

    Args:
        X: ``(n, d)`` rows, float64 recommended.
    """
    X = check_tensor("X", X, ndim=2).detach()
    n, d = X.shape
    if n == 0:
        raise ValueError("X must hold at least one row")
    _, S, Vh = torch.linalg.svd(X, full_matrices=True)
    sigma = torch.zeros(d, dtype=X.dtype)
    sigma[: S.numel()] = S
    tol = max(n, d) * torch.finfo(X.dtype).eps * float(sigma[0]) if sigma.numel() else 0.0
    rank = int((sigma > tol).sum())
    sigma[rank:] = 0.0
    return Spectrum(sigma=sigma, directions=Vh.T.contiguous(), rank=rank)


def _check_spectrum(spectrum: object, d: Optional[int] = None) -> Spectrum:
    """``spectrum`` if it is a :class:`Spectrum` with square ``directions`` (of ``R^d`` when ``d`` is given),
    else raise naming it."""
    if not isinstance(spectrum, Spectrum):
        raise TypeError(f"spectrum must be a Spectrum (from data_spectrum), got {type(spectrum).__name__}")
    V = check_tensor("spectrum.directions", spectrum.directions, ndim=2)
    if V.shape[0] != V.shape[1] or (d is not None and V.shape[0] != d):
        want = "(d, d)" if d is None else f"({d}, {d}) (d = that of params)"
        raise ValueError(f"spectrum.directions must have shape {want}, got {tuple(V.shape)}")
    return spectrum


def pca_subspace(spectrum: Spectrum, k: int) -> Subspace:
    r"""$P_k = \mathrm{span}(v_1, \dots, v_k)$, the top-$k$ principal directions; $P_k^\perp$ is the tail.

    Projecting the images onto $P_k$ (``ol.Pi_P(pca_subspace(s, k), X)``) puts them exactly on a
    $k$-dimensional subspace, of codimension $\ell = d - k$.

    Args:
        spectrum: from :func:`data_spectrum`.
        k: ``1 <= k <= d - 1``.
    """
    spectrum = _check_spectrum(spectrum)
    d = spectrum.directions.shape[0]
    k = check_int("k", k, low=1, high=d - 1)
    V = spectrum.directions
    return Subspace(basis=V[:, :k].contiguous(), perp_basis=V[:, k:].contiguous())


def tail_gperp_statistic(params: TwoLayerParams, X: Tensor, spectrum: Spectrum, ks: Sequence[int], *,
                         beta: Optional[float] = None) -> Tensor:
    r"""$\|\Pi_{\perp,k}\nabla_x N(x)\|^2 / (\beta^2\|u_{I(x)}\|^2 (d - k))$: the gradient in the tail of the spectrum.

    $\Pi_{\perp,k}$ projects onto $P_k^\perp = \mathrm{span}(v_{k+1}, \dots, v_d)$ (:func:`pca_subspace`).  For a
    network trained on images projected onto $P_k$, and $x \in P_k$, the statistic times $d-k$ has exactly the
    law $\chi^2_{d-k}$ (mean $1$ as normalised here); for a network trained on the raw images it measures how
    much larger the gradient in the tail is than the part the initial weights alone would give.

    Args:
        params: a network or a stack of ``E``.
        X: ``(n, d)`` points.
        spectrum: from :func:`data_spectrum`.
        ks: values $1 \le k \le d - 1$.
        beta: the initialisation scale (default $1/\sqrt d$).
    Returns:
        ``(len(ks), n)`` (``(E, len(ks), n)`` for a stack); nan where the active set is empty.
    """
    params = _check_params(params)
    d = params.d
    spectrum = _check_spectrum(spectrum, d)
    X = check_tensor("X", X, ndim=2)
    if X.shape[1] != d:
        raise ValueError(f"X must have last dimension d = {d} to match params, got shape {tuple(X.shape)}")
    if isinstance(ks, (str, bytes)) or not isinstance(ks, Sequence) or not ks:
        raise TypeError(f"ks must be a non-empty sequence of integers, got {ks!r}")
    ks = [check_int(f"ks[{i}]", k, low=1, high=d - 1) for i, k in enumerate(ks)]
    beta = 1.0 / math.sqrt(d) if beta is None else check_float("beta", beta, positive=True)
    X = X.detach().to(params.W.dtype)
    V = spectrum.directions.to(params.W.dtype)
    with torch.no_grad():
        A = ((X @ params.W.transpose(-1, -2) + params.b.unsqueeze(-2)) > 0).to(X.dtype) * params.u.unsqueeze(-2)
        G = (A @ params.W) @ V                                            # gradient in the basis v_r
        tail = torch.flip(torch.cumsum(torch.flip(G**2, [-1]), -1), [-1])  # tail[..., k] = sum_{r >= k} G_r^2
        uI = (A**2).sum(-1)
        out = torch.stack([tail[..., k] / (beta**2 * uI * (d - k)) for k in ks], dim=-2)
    return torch.where(uI.unsqueeze(-2) > 0, out, torch.full_like(out, math.nan))


# ------------------------------------------------------------------------------ how far training moved

def movement_ratios(initial: TwoLayerParams, trained: TwoLayerParams, directions: Tensor) -> Tensor:
    r"""$\rho_r = \|(W(T) - W(0))\,v_r\| \,/\, \|W(0)\,v_r\|$ for each column $v_r$ of ``directions``.

    $\rho_r$ compares how far training moved the first layer along $v_r$ with the size of its random
    initial part there ($\|W(0)v_r\|^2 \sim \beta^2\chi^2_m$).  For GD, SGD and heavy ball (no weight decay)
    $W(T) - W(0) = CX$, so $\rho_r$ is exactly $0$ where $\sigma_r = 0$ and at most
    $\sigma_r\|C\|_{op}/\|W(0)v_r\|$ elsewhere.

    Args:
        initial, trained: the same network before and after training (single networks or stacks of ``E``).
        directions: ``(d, r)`` columns (e.g. ``data_spectrum(X).directions``).
    Returns:
        ``(r,)``, or ``(E, r)`` for stacks.
    """
    initial = _check_params(initial, "initial")
    trained = _check_params(trained, "trained")
    if initial.W.shape != trained.W.shape:
        raise ValueError(f"trained must have the shape of initial ({tuple(initial.W.shape)}), got "
                         f"{tuple(trained.W.shape)}")
    V = check_tensor("directions", directions, ndim=2)
    if V.shape[0] != initial.d:
        raise ValueError(f"directions must have shape (d, r) with d = {initial.d}, got {tuple(V.shape)}")
    dt = torch.promote_types(initial.W.dtype, trained.W.dtype)      # the two networks may differ in precision
    V = V.detach().to(dt)
    W0 = initial.W.detach().to(dt)
    moved = ((trained.W.detach().to(dt) - W0) @ V).norm(dim=-2)
    start = (W0 @ V).norm(dim=-2)
    return moved / start


def gradient_energy_ratios(initial: TwoLayerParams, trained: TwoLayerParams, X: Tensor, directions: Tensor) -> Tensor:
    r"""Per direction, the learned part of the input gradient against its random part: $\lambda_r$.

    The trained network's input gradient splits as $\nabla_x N(x) = g_0(x) + g_\Delta(x)$ with
    $g_0(x) = \sum_{i \in I(x)} u_i\,w_i(0)$ (the initial weights, summed over the trained active set: on an
    exactly orthogonal direction this is all there is) and $g_\Delta(x) = \sum_{i\in I(x)} u_i\,(w_i(T) - w_i(0))$
    (what training added; it lies in the span of the training inputs).  For each column $v_r$,

    .. math:: \lambda_r = \frac{\sum_x \langle g_\Delta(x), v_r\rangle^2}{\sum_x \langle g_0(x), v_r\rangle^2},

    summed over the rows $x$ of ``X``.  $\lambda_r = 0$ exactly where $v_r$ is orthogonal to every training input.

    Args:
        initial, trained: one network before and after training (second layer fixed or trained; the
            active sets and $u$ are the trained network's).
        X: ``(n, d)`` points at which the gradients are taken (e.g. test images).
        directions: ``(d, r)`` columns $v_r$.
    Returns:
        ``(r,)`` ratios.
    """
    initial = _check_params(initial, "initial", single=True)
    trained = _check_params(trained, "trained", single=True)
    if initial.W.shape != trained.W.shape:
        raise ValueError(f"trained must have the shape of initial ({tuple(initial.W.shape)}), got "
                         f"{tuple(trained.W.shape)}")
    X = check_tensor("X", X, ndim=2)
    if X.shape[1] != initial.d or X.shape[0] == 0:
        raise ValueError(f"X must have shape (n, {initial.d}) with n >= 1, got {tuple(X.shape)}")
    V = check_tensor("directions", directions, ndim=2)
    if V.shape[0] != initial.d:
        raise ValueError(f"directions must have shape (d, r) with d = {initial.d}, got {tuple(V.shape)}")
    X, V = X.detach().to(trained.W.dtype), V.detach().to(trained.W.dtype)
    W0 = initial.W.detach().to(trained.W.dtype)                         # the initial network may differ in precision
    with torch.no_grad():
        A = ((X @ trained.W.T + trained.b) > 0).to(X.dtype) * trained.u       # (n, m): u_i 1[i active]
        g0 = A @ (W0 @ V)
        gD = A @ ((trained.W - W0) @ V)
        return (gD**2).sum(0) / (g0**2).sum(0)


class EffectiveCodimension(NamedTuple):
    r"""What :func:`effective_codimension` returns.

    Attributes:
        ell: $\ell_{\mathrm{eff}}$, the number of directions $v_r$ with $\lambda_r \le$ ``threshold``.
        subspace: a :class:`ortho_lib.Subspace` whose ``perp_basis`` spans those directions and whose
            ``basis`` spans the others.
        ratios: ``(d,)`` the $\lambda_r$ of every direction (:func:`gradient_energy_ratios`).
    """

    ell: int
    subspace: Subspace
    ratios: Tensor


def effective_codimension(initial: TwoLayerParams, trained: TwoLayerParams, spectrum: Spectrum, X: Tensor, *,
                          threshold: float = 1.0) -> EffectiveCodimension:
    r"""The effective codimension $\ell_{\mathrm{eff}} = \#\{r : \lambda_r \le \tau\}$ of a trained network.

    A direction $v_r$ of the training set's spectrum is *effectively orthogonal* to the data when, at the
    points ``X``, the part of the input gradient that training added along it is no larger than the part
    left from the initial weights ($\lambda_r \le \tau$, default $\tau = 1$; :func:`gradient_energy_ratios`).
    Every $v_r$ with $\sigma_r = 0$ has $\lambda_r = 0$, so $\ell_{\mathrm{eff}} \ge d - \mathrm{rank}$.

    Args:
        initial, trained: one network before and after training.
        spectrum: the training set's :func:`data_spectrum`.
        X: ``(n, d)`` points at which the gradients are compared.
        threshold: $\tau > 0$.
    Raises:
        ValueError: if every direction or none qualifies (no proper subspace).
    """
    spectrum = _check_spectrum(spectrum, _check_params(initial, "initial", single=True).d)
    threshold = check_float("threshold", threshold, positive=True)
    V = spectrum.directions
    lam = gradient_energy_ratios(initial, trained, X, V)
    frozen = lam <= threshold
    ell = int(frozen.sum())
    if not 1 <= ell <= V.shape[0] - 1:
        raise ValueError(f"threshold: {ell} of {V.shape[0]} directions have ratio <= {threshold}; the effective "
                         "subspace must be proper")
    sub = Subspace(basis=V[:, ~frozen].contiguous(), perp_basis=V[:, frozen].contiguous())
    return EffectiveCodimension(ell=ell, subspace=sub, ratios=lam)


# ------------------------------------------------------------------------------------ multi-class network

def _hidden_terms(model: nn.Module, X: Tensor) -> tuple[Tensor, Tensor]:
    """Activation pattern ``(n, m)`` (float) and logits ``(n, K)``."""
    with torch.no_grad():
        H = model.hidden(X)
        return (H > 0).to(X.dtype), model.out(torch.relu(H))


def multiclass_gperp_statistic(model: nn.Module, zero: Tensor, X: Tensor, y: Tensor, *,
                               init_variance: Optional[float] = None,
                               kurtosis: float = UNIFORM_KURTOSIS) -> tuple[Tensor, Tensor]:
    r"""The orthogonal part of the cross-entropy's input gradient, normalised by its conditional mean.

    For the network $f(x) = A\,\sigma(Vx + b) + c$ with $K$ logits and the loss $\ell = -\log
    \mathrm{softmax}(f(x))_y$, the input gradient is $V^\top \kappa$ with
    $\kappa = \mathbb 1[Vx + b > 0] \odot A^\top(\mathrm{softmax}(f(x)) - e_y)$.  Its part on the pixels $Z$ is
    $g_Z = V_{:,Z}^\top \kappa$.  If the entries of $V(0)$ are i.i.d. with mean $0$, variance $s^2$ and
    fourth moment $\mu_4$ (uniform: $s^2 = 1/(3d)$, $\mu_4/s^4 = 9/5$), $Z$ is always zero in training and
    $x_Z = 0$, then conditionally on everything but $V(0)_{:,Z}$ the statistic
    $q = \|g_Z\|^2 / (s^2\|\kappa\|^2\ell_0)$ has mean exactly $1$ and variance exactly
    $\bigl(2 + (\mu_4/s^4 - 3)\sum_i\kappa_i^4/\|\kappa\|^4\bigr)/\ell_0$.

    The defaults are those of :class:`ortho_lib.mlp.MLP`: PyTorch draws ``nn.Linear`` weights from
    $U(-1/\sqrt d, 1/\sqrt d)$, so $s^2 = 1/(3d)$ and $\mu_4/s^4 = 9/5$.

    Args:
        model: an :class:`ortho_lib.mlp.MLP`.
        zero: ``(d,)`` bool mask $Z$.
        X: ``(n, d)`` images (use ones with $x_Z = 0$ for the exact statement).
        y: ``(n,)`` int64 classes.
        init_variance: $s^2$ (default $1/(3d)$).
        kurtosis: $\mu_4/s^4$ of the initial entries (default: uniform, $9/5$).
    Returns:
        ``(q, var)``: ``(n,)`` statistics and ``(n,)`` their exact conditional variances (nan where
        $\kappa = 0$).
    """
    model = _check_model("model", model)
    X = _model_inputs(model, X)
    d = X.shape[1]
    zero = _check_mask("zero", zero, d)
    K = model.out.out_features
    y = check_classes("y", y, X.shape[0], K)
    kurtosis = check_float("kurtosis", kurtosis, positive=True)
    s2 = 1.0 / (3.0 * d) if init_variance is None else check_float("init_variance", init_variance, positive=True)
    ell0 = int(zero.sum())
    if ell0 == 0:
        raise ValueError("zero must mark at least one pixel")
    act, logits = _hidden_terms(model, X)
    with torch.no_grad():
        resid = torch.softmax(logits, dim=1)
        resid[torch.arange(X.shape[0]), y] -= 1.0
        kappa = act * (resid @ model.out.weight)                    # (n, m)
        gZ = kappa @ model.hidden.weight[:, zero]                   # (n, ell0)
        k2 = (kappa**2).sum(1)
        q = (gZ**2).sum(1) / (s2 * k2 * ell0)
        var = (2.0 + (kurtosis - 3.0) * (kappa**4).sum(1) / k2**2) / ell0
    nan = torch.full_like(q, math.nan)
    return torch.where(k2 > 0, q, nan), torch.where(k2 > 0, var, nan)


def class_direction(model: nn.Module, zero: Tensor, target: int) -> Tensor:
    r"""One perturbation supported on the pixels $Z$ that pushes every image towards class ``target``.

    $z_c = \Pi_Z V^\top (A_c - \bar A)$, with $A_c$ the output weights of class $c$ and $\bar A$ their mean
    over classes: the multi-class analogue of the universal direction $\Pi_\perp W^\top u$.  With $Z$
    always zero in training, $V_{:,Z}$ is frozen, so only $A$ changes it during training.

    Returns:
        ``(d,)`` unit vector, zero off $Z$.
    """
    model = _check_model("model", model)
    d = model.hidden.in_features
    zero = _check_mask("zero", zero, d)
    K = model.out.out_features
    target = check_int("target", target, low=0, high=K - 1)
    with torch.no_grad():
        A = model.out.weight
        a = A[target] - A.mean(0)
        z = torch.zeros(d, dtype=A.dtype)
        z[zero] = (a @ model.hidden.weight)[zero]
    norm = z.norm()
    if float(norm) == 0.0:
        raise ValueError("zero: the direction vanishes (no pixel marked, or zero weights)")
    return z / norm


def fooling_rates(model: nn.Module, X: Tensor, direction: Tensor, norms: Sequence[float] | Tensor, *,
                  target: Optional[int] = None) -> Tensor:
    r"""The fraction of images whose prediction changes (or becomes ``target``) at $x + \alpha\hat z$.

    For each $\alpha$ in ``norms``: the fraction of the rows of ``X`` with
    $\arg\max f(x + \alpha \hat z) \ne \arg\max f(x)$ (``target=None``), or, among the rows not already
    predicted as ``target``, the fraction with $\arg\max f(x + \alpha\hat z) =$ ``target``.

    Args:
        model: an :class:`ortho_lib.mlp.MLP`.  X: ``(n, d)`` images.
        direction: ``(d,)`` (normalised here).  norms: the values of $\alpha \ge 0$.
    Returns:
        ``(len(norms),)`` fractions in $[0, 1]$.
    """
    model = _check_model("model", model)
    X = _model_inputs(model, X)
    if X.shape[0] == 0:
        raise ValueError("X must hold at least one image")
    z = check_tensor("direction", direction, shape=(X.shape[1],)).detach().to(X.dtype)
    if float(z.norm()) == 0.0:
        raise ValueError("direction must be non-zero")
    z = z / z.norm()
    if isinstance(norms, Tensor):
        a = check_tensor("norms", norms, ndim=1).detach().to(X.dtype)
    elif isinstance(norms, (str, bytes)) or not (isinstance(norms, Sequence) or hasattr(norms, "__array__")):
        raise TypeError(f"norms must be a 1-D tensor or a sequence of numbers, got {type(norms).__name__}")
    else:
        values = list(norms) if isinstance(norms, Sequence) else np.asarray(norms).reshape(-1).tolist()
        a = torch.tensor([check_float(f"norms[{i}]", v) for i, v in enumerate(values)], dtype=X.dtype)
    if bool((a < 0).any()):
        raise ValueError("norms must be >= 0")
    if target is not None:
        target = check_int("target", target, low=0, high=model.out.out_features - 1)
    with torch.no_grad():
        pred0 = model(X).argmax(1)
        pool = pred0 != target if target is not None else torch.ones_like(pred0, dtype=torch.bool)
        if not bool(pool.any()):
            raise ValueError("X: every image is already predicted as target")
        out = []
        for alpha in a.tolist():
            pred = model(X + alpha * z).argmax(1)
            hit = (pred == target) if target is not None else (pred != pred0)
            out.append((hit & pool).sum() / pool.sum())
    return torch.stack(out).to(X.dtype)


def first_order_target_norms(model: nn.Module, X: Tensor, direction: Tensor, target: int) -> Tensor:
    r"""First-order distance along $\hat z$ at which class ``target`` overtakes every other logit, per image.

    With the activation pattern of $x$ frozen, $f(x + \alpha\hat z) = f(x) + \alpha J\hat z$,
    $J = A\,\mathrm{diag}(\mathbb 1[Vx + b > 0])\,V$.  Class $c$ leads at $\alpha$ when
    $f_c - f_k + \alpha\,s_k \ge 0$ for every $k$, with $s_k = (J\hat z)_c - (J\hat z)_k$.  A class ahead of $c$
    ($f_k > f_c$) gives the lower bound $\alpha \ge (f_k - f_c)/s_k$ (none is possible if $s_k \le 0$); a class
    behind that gains on $c$ ($s_k < 0$) gives the upper bound $\alpha \le (f_c - f_k)/|s_k|$.  The result is
    the largest lower bound ($0$ if $c$ already leads), or ``inf`` where it exceeds an upper bound or a
    needed rate is $\le 0$: then $c$ never leads along the linearised path.

    Returns:
        ``(n,)`` first-order norms $\alpha^*$.
    """
    model = _check_model("model", model)
    X = _model_inputs(model, X)
    z = check_tensor("direction", direction, shape=(X.shape[1],)).detach().to(X.dtype)
    if float(z.norm()) == 0.0:
        raise ValueError("direction must be non-zero")
    z = z / z.norm()
    target = check_int("target", target, low=0, high=model.out.out_features - 1)
    act, f = _hidden_terms(model, X)
    with torch.no_grad():
        rate = (act * (model.hidden.weight @ z)[None, :]) @ model.out.weight.T    # (n, K): J z per image
        gap = f - f[:, target:target + 1]                                         # f_k - f_c
        speed = rate[:, target:target + 1] - rate                                 # s_k = (J z)_c - (J z)_k
        safe = torch.where(speed != 0, speed, torch.ones_like(speed))
        ahead = gap > 0
        lower = torch.where(ahead, torch.where(speed > 0, gap / safe, torch.full_like(gap, math.inf)),
                            torch.zeros_like(gap)).max(dim=1).values
        upper = torch.where(~ahead & (speed < 0), gap / safe, torch.full_like(gap, math.inf)).min(dim=1).values
        return torch.where(lower <= upper, lower, torch.full_like(lower, math.inf))
