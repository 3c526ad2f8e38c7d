r"""Plotting helpers: decision boundaries in 2-D and decision surfaces in 3-D (matplotlib)."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ._checks import check_int, check_tensor
from .network import TwoLayerParams, network_output

POS_COLOR = "#1f77b4"
NEG_COLOR = "#d62728"


def _labelled_points_2d(ax, X2: np.ndarray, y: np.ndarray, lim, title: Optional[str], *, edge: str, size: float) -> None:
    """Scatter the two classes of ``X2`` (``(n, 2)``) on a square ``lim x lim`` frame with labelled axes."""
    ax.scatter(*X2[y > 0].T, c=POS_COLOR, marker="o", edgecolors=edge, s=size, label="$y=+1$", zorder=3)
    ax.scatter(*X2[y < 0].T, c=NEG_COLOR, marker="s", edgecolors=edge, s=size, label="$y=-1$", zorder=3)
    ax.set_xlim(*lim)
    ax.set_ylim(*lim)
    ax.set_aspect("equal")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    if title:
        ax.set_title(title)


def decision_grid_2d(
    params: TwoLayerParams, lim: Sequence[float] = (-1.0, 1.0), res: int = 301
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""$N$ on a ``res x res`` grid of $[\text{lim}_0,\text{lim}_1]^2$: returns ``(xx, yy, values)``, each ``(res, res)``."""
    if params.d != 2:
        raise ValueError(f"params must take 2-D inputs for a 2-D plot, got d = {params.d}")
    res = check_int("res", res, low=2)
    t = torch.linspace(float(lim[0]), float(lim[1]), res, dtype=params.W.dtype)
    xx, yy = torch.meshgrid(t, t, indexing="xy")
    vals = network_output(params, torch.stack([xx.flatten(), yy.flatten()], 1)).reshape(res, res)
    return xx.numpy(), yy.numpy(), vals.numpy()


def plot_decision_boundary_2d(
    ax,
    params: TwoLayerParams,
    X: Tensor,
    y: Tensor,
    *,
    lim: Sequence[float] = (-1.0, 1.0),
    res: int = 301,
    title: Optional[str] = None,
    data_line: Optional[Tensor] = None,
) -> None:
    r"""Shade the regions $N>0$ / $N<0$ on ``ax``, draw the boundary $N=0$, and the labelled points.

    Args:
        X: ``(n, 2)`` points; y: ``(n,)`` labels.
        data_line: optional ``(2,)`` direction of the data line, drawn dashed through the origin.
    """
    X = check_tensor("X", X, shape=(None, 2))
    xx, yy, vals = decision_grid_2d(params, lim, res)
    ax.contourf(xx, yy, vals, levels=[-np.inf, 0, np.inf], colors=[NEG_COLOR, POS_COLOR], alpha=0.18)
    ax.contour(xx, yy, vals, levels=[0], colors="k", linewidths=1.5)
    if data_line is not None:
        v = data_line.detach().double().numpy()
        v = v / np.linalg.norm(v)
        s = np.array([-3.0, 3.0])
        ax.plot(s * v[0], s * v[1], ls="--", color="0.5", lw=1, label="data subspace $P$")
    yp = y.numpy()
    Xn = X.detach().numpy()
    _labelled_points_2d(ax, Xn, yp, lim, title, edge="k", size=45)


def zero_crossings_3d(
    params: TwoLayerParams, lim: Sequence[float] = (0.0, 1.0), res: int = 61, res_z: int = 201
) -> np.ndarray:
    r"""Points of the decision surface $N=0$ in the cube ``lim^3``.

    Along each vertical line of a ``res x res`` grid, the sign changes of $N$ over ``res_z`` heights are
    located by linear interpolation. Returns an array ``(k, 3)`` of surface points.
    """
    if params.d != 3:
        raise ValueError(f"params must take 3-D inputs for a 3-D plot, got d = {params.d}")
    res = check_int("res", res, low=2)
    res_z = check_int("res_z", res_z, low=2)
    t = torch.linspace(float(lim[0]), float(lim[1]), res, dtype=params.W.dtype)
    tz = torch.linspace(float(lim[0]), float(lim[1]), res_z, dtype=params.W.dtype)
    gx, gy, gz = torch.meshgrid(t, t, tz, indexing="ij")
    pts = torch.stack([gx.flatten(), gy.flatten(), gz.flatten()], 1)
    v = network_output(params, pts).reshape(res, res, res_z).numpy()
    s = np.where(v >= 0, 1, -1)  # an exact zero counts as the positive side: each crossing found once
    i, j, k = np.nonzero(s[:, :, :-1] != s[:, :, 1:])
    v0, v1 = v[i, j, k], v[i, j, k + 1]
    tzn = tz.numpy()
    z = tzn[k] + (tzn[k + 1] - tzn[k]) * v0 / (v0 - v1)
    tn = t.numpy()
    return np.stack([tn[i], tn[j], z], 1)


def plot_decision_surface_3d(
    ax,
    params: TwoLayerParams,
    X: Tensor,
    y: Tensor,
    *,
    lim: Sequence[float] = (0.0, 1.0),
    res: int = 61,
    title: Optional[str] = None,
) -> np.ndarray:
    r"""Scatter the decision surface $N=0$ (coloured by height) and the labelled points on a 3-D ``ax``.

    Returns the surface points that were drawn, ``(k, 3)``.
    """
    X = check_tensor("X", X, shape=(None, 3))
    S = zero_crossings_3d(params, lim, res)
    if len(S):
        ax.scatter(S[:, 0], S[:, 1], S[:, 2], c=S[:, 2], cmap="viridis", s=2, alpha=0.35, linewidths=0)
    yp = y.numpy()
    Xn = X.detach().numpy()
    ax.scatter(*Xn[yp > 0].T, c=POS_COLOR, marker="o", edgecolors="k", s=30, depthshade=False, label="$y=+1$")
    ax.scatter(*Xn[yp < 0].T, c=NEG_COLOR, marker="s", edgecolors="k", s=30, depthshade=False, label="$y=-1$")
    ax.set_xlim(*lim)
    ax.set_ylim(*lim)
    ax.set_zlim(*lim)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_zlabel("$x_3$")
    if title:
        ax.set_title(title)
    return S


def normal_flip_map(
    params: TwoLayerParams,
    *,
    height: float,
    lim: Sequence[float] = (0.0, 1.0),
    res: int = 61,
    max_norm: float = 1.0,
    chunk: int = 1024,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""The vertical flip distance over the plane $x_3 = h$ of a 3-D network.

    For each point $p = (s, t, h)$ of a ``res x res`` grid of $[\text{lim}_0, \text{lim}_1]^2$,

    .. math:: \delta(p) = \min\{|\tau| : \operatorname{sign} N(p + \tau e_3) \ne \operatorname{sign} N(p)\},

    searched along $\pm e_3$ up to ``max_norm`` by :func:`ortho_lib.perturbations.flip_norm_along`
    (a 64-point scan refined by 20 bisection steps; ``inf`` where no flip is found).  Evaluated in chunks of ``chunk`` grid points to bound memory.

    Returns:
        ``(xx, yy, dist)``, each ``(res, res)``, with ``xx`` varying along the columns (``indexing="xy"``).
    """
    from ._checks import check_float
    from .perturbations import flip_norm_along

    if not isinstance(params, TwoLayerParams):
        raise TypeError(f"params must be TwoLayerParams, got {type(params).__name__}")
    if params.d != 3:
        raise ValueError(f"params must take 3-D inputs for a vertical flip map, got d = {params.d}")
    h = check_float("height", height)
    res = check_int("res", res, low=2)
    chunk = check_int("chunk", chunk, low=1)
    max_norm = check_float("max_norm", max_norm, positive=True)
    if len(lim) != 2 or not float(lim[0]) < float(lim[1]):
        raise ValueError(f"lim must be (low, high) with low < high, got {tuple(lim)!r}")
    dt = params.W.dtype
    t = torch.linspace(float(lim[0]), float(lim[1]), res, dtype=dt)
    xx, yy = torch.meshgrid(t, t, indexing="xy")
    pts = torch.stack([xx.flatten(), yy.flatten(), torch.full((res * res,), h, dtype=dt)], 1)
    e3 = torch.tensor([0.0, 0.0, 1.0], dtype=dt)
    dist = torch.cat([flip_norm_along(params, pts[i:i + chunk], e3, max_norm=max_norm, mode="both",
                                      grid=64, iters=20)
                      for i in range(0, pts.shape[0], chunk)])
    return xx.numpy(), yy.numpy(), dist.reshape(res, res).numpy()


def plot_normal_flip_map(
    ax,
    params: TwoLayerParams,
    X: Tensor,
    y: Tensor,
    *,
    height: float,
    lim: Sequence[float] = (0.0, 1.0),
    res: int = 61,
    max_norm: float = 1.0,
    vmin: float = 1e-2,
    title: Optional[str] = None,
):
    r"""Draw :func:`normal_flip_map` as a log-scaled colour map over the plane $x_3 = h$.

    Also draws the in-plane decision boundary $N(s, t, h) = 0$ (white line) and the labelled points
    (their first two coordinates).  Points with no flip within ``max_norm`` get the top colour.

    Returns:
        ``(mesh, dist)``: the ``QuadMesh`` (for a colour bar) and the ``(res, res)`` distance map.
    """
    from matplotlib.colors import LogNorm

    from ._checks import check_float

    X = check_tensor("X", X, shape=(None, 3))
    vmin = check_float("vmin", vmin, positive=True)
    xx, yy, dist = normal_flip_map(params, height=height, lim=lim, res=res, max_norm=max_norm)
    shown = np.clip(np.where(np.isfinite(dist), dist, max_norm), vmin, max_norm)
    mesh = ax.pcolormesh(xx, yy, shown, norm=LogNorm(vmin=vmin, vmax=max_norm), cmap="magma", shading="auto")
    plane = torch.stack([torch.as_tensor(xx).flatten(), torch.as_tensor(yy).flatten(),
                         torch.full((xx.size,), float(height), dtype=torch.float64)], 1).to(params.W.dtype)
    vals = network_output(params, plane).reshape(xx.shape).numpy()
    ax.contour(xx, yy, vals, levels=[0], colors="w", linewidths=1.2)
    yp = y.numpy()
    Xn = X.detach().numpy()
    _labelled_points_2d(ax, Xn[:, :2], yp, lim, title, edge="w", size=40)
    return mesh, dist
