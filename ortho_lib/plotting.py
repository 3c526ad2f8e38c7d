r"""Plotting helpers: decision boundaries in 2-D and decision surfaces in 3-D.

Static figures are drawn with matplotlib on an ``ax`` the caller owns; :func:`decision_surfaces_plotly`
builds an interactive (rotatable) plotly figure of the same 3-D surfaces, which
:func:`ortho_lib.notebook.show_plotly` displays in the book, Jupyter and Colab.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ._checks import check_float, check_int, check_labels, check_size, check_tensor, to_numpy
from .network import TwoLayerParams, _check_params, network_output

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


def _check_lim(lim: object) -> tuple[float, float]:
    """The plotting range ``(low, high)``: two finite numbers with ``low < high``."""
    if not isinstance(lim, (Sequence, np.ndarray, torch.Tensor)) or isinstance(lim, (str, bytes)) or len(lim) != 2:
        raise TypeError(f"lim must be a pair (low, high) of numbers, got {lim!r}")
    lo, hi = check_float("lim[0]", lim[0]), check_float("lim[1]", lim[1])
    if not lo < hi:
        raise ValueError(f"lim must be (low, high) with low < high, got {tuple(lim)!r}")
    return lo, hi


def _check_points(params: TwoLayerParams, X: object, y: object) -> tuple[np.ndarray, np.ndarray]:
    """``X`` ``(n, d)`` and its labels ``y`` ``(n,)`` in +-1, as NumPy arrays for plotting."""
    X = check_tensor("X", X, shape=(None, params.d))
    y = check_labels("y", y, X.shape[0])
    return to_numpy(X), to_numpy(y)


def _model(params: object, d: int, what: str) -> TwoLayerParams:
    params = _check_params(params, single=True)
    if params.d != d:
        raise ValueError(f"params must take {d}-D inputs for {what}, got d = {params.d}")
    return TwoLayerParams(*(t.detach() for t in (params.W, params.b, params.u, params.c)))


def decision_grid_2d(
    params: TwoLayerParams, lim: Sequence[float] = (-1.0, 1.0), res: int = 301
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""$N$ on a ``res x res`` grid of $[\text{lim}_0,\text{lim}_1]^2$: returns ``(xx, yy, values)``, each ``(res, res)``."""
    params = _model(params, 2, "a 2-D plot")
    lo, hi = _check_lim(lim)
    res = check_int("res", res, low=2)
    check_size("res", res, res, 3)
    t = torch.linspace(lo, hi, res, dtype=params.W.dtype)
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
    params = _model(params, 2, "a 2-D plot")
    Xn, yp = _check_points(params, X, y)
    if data_line is not None:
        data_line = to_numpy(check_tensor("data_line", data_line, shape=(2,))).astype(float)
        if not np.any(data_line):
            raise ValueError("data_line must be a non-zero direction")
    xx, yy, vals = decision_grid_2d(params, lim, res)
    ax.contourf(xx, yy, vals, levels=[-np.inf, 0, np.inf], colors=[NEG_COLOR, POS_COLOR], alpha=0.18)
    ax.contour(xx, yy, vals, levels=[0], colors="k", linewidths=1.5)
    if data_line is not None:
        v = data_line / np.linalg.norm(data_line)
        s = np.array([-3.0, 3.0])
        ax.plot(s * v[0], s * v[1], ls="--", color="0.5", lw=1, label="data subspace $P$")
    _labelled_points_2d(ax, Xn, yp, lim, title, edge="k", size=45)


def zero_crossings_3d(
    params: TwoLayerParams, lim: Sequence[float] = (0.0, 1.0), res: int = 61, res_z: int = 201
) -> np.ndarray:
    r"""Points of the decision surface $N=0$ in the cube ``lim^3``.

    Along each vertical line of a ``res x res`` grid, the sign changes of $N$ over ``res_z`` heights are
    located by linear interpolation. Returns an array ``(k, 3)`` of surface points.
    """
    params = _model(params, 3, "a 3-D plot")
    lo, hi = _check_lim(lim)
    res = check_int("res", res, low=2)
    res_z = check_int("res_z", res_z, low=2)
    check_size("res and res_z", res, res, res_z, 3)
    t = torch.linspace(lo, hi, res, dtype=params.W.dtype)
    tz = torch.linspace(lo, hi, res_z, dtype=params.W.dtype)
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


# The six tetrahedra of the Kuhn (Freudenthal) triangulation of a cube: each is a monotone path from corner 0
# = (0, 0, 0) to corner 7 = (1, 1, 1), corner c = 4 i + 2 j + k at offset (i, j, k).  Every cube of the grid
# is cut the same way, so the tetrahedra of neighbouring cubes share faces and the surface has no cracks.
_KUHN = np.array([[0, 4, 6, 7], [0, 4, 5, 7], [0, 2, 6, 7], [0, 2, 3, 7], [0, 1, 5, 7], [0, 1, 3, 7]])
_CORNERS = np.array([(i, j, k) for i in (0, 1) for j in (0, 1) for k in (0, 1)])


def decision_surface_mesh(
    params: TwoLayerParams, lim: Sequence[float] = (0.0, 1.0), res: int = 31
) -> tuple[np.ndarray, np.ndarray]:
    r"""The decision surface $N = 0$ in the cube ``lim^3`` as a triangle mesh (marching tetrahedra).

    $N$ is evaluated on a ``res^3`` grid; each grid cube is cut into six tetrahedra, and in each tetrahedron
    whose corners are not all on one side ($N > 0$ against $N \le 0$) the surface is the triangle or the
    quadrilateral (two triangles) through the points where $N$, interpolated linearly along the edges,
    vanishes.  A point where an edge crosses zero is computed once, so triangles share their vertices.

    Returns:
        ``(vertices, faces)``: ``(V, 3)`` float64 points and ``(F, 3)`` integer indices into them (both empty
        when $N$ keeps one sign on the grid).
    """
    params = _model(params, 3, "a 3-D plot")
    lo, hi = _check_lim(lim)
    res = check_int("res", res, low=2)
    check_size("res", res, res, res, 3)
    t = torch.linspace(lo, hi, res, dtype=params.W.dtype)
    grid = torch.stack(torch.meshgrid(t, t, t, indexing="ij"), -1)
    vals = network_output(params, grid.reshape(-1, 3)).reshape(res, res, res).double().numpy()
    pts = grid.double().numpy()
    c = res - 1
    # values at the 8 corners of every cube, (c, c, c, 8); keep the cubes the surface passes through
    corner_vals = np.stack([vals[i:i + c, j:j + c, k:k + c] for i, j, k in _CORNERS], -1)
    pos = corner_vals > 0
    cubes = np.argwhere(pos.any(-1) & ~pos.all(-1))                                # (C, 3) cube indices
    if len(cubes) == 0:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    corner_idx = cubes[:, None, :] + _CORNERS[None, :, :]                           # (C, 8, 3) grid indices
    tet_idx = corner_idx[:, _KUHN, :].reshape(-1, 4, 3)                              # (6C, 4, 3)
    flat = np.ravel_multi_index(tuple(np.moveaxis(tet_idx, -1, 0)), vals.shape)     # (6C, 4) grid point ids
    f = vals.reshape(-1)[flat]
    positive = f > 0
    count = positive.sum(1)
    keep = (count > 0) & (count < 4)
    flat, f, positive, count = flat[keep], f[keep], positive[keep], count[keep]
    order = np.argsort(~positive, axis=1, kind="stable")                            # positive corners first
    flat, f = np.take_along_axis(flat, order, 1), np.take_along_axis(f, order, 1)
    P = pts.reshape(-1, 3)

    def crossing(a: int, b: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The zero of N on the edge from corner a (N > 0) to corner b (N <= 0): an edge key and the point."""
        fa, fb = f[rows, a], f[rows, b]
        w = fa / (fa - fb)
        pa, pb = P[flat[rows, a]], P[flat[rows, b]]
        key = np.stack([flat[rows, a], flat[rows, b]], 1)
        return key, pa + w[:, None] * (pb - pa)

    tris = []                                                                        # (key, point) per corner
    one, three, two = np.nonzero(count == 1)[0], np.nonzero(count == 3)[0], np.nonzero(count == 2)[0]
    tris.append([crossing(0, b, one) for b in (1, 2, 3)])                            # one corner above zero
    tris.append([crossing(a, 3, three) for a in (0, 1, 2)])                          # one corner at or below
    q = [crossing(0, 2, two), crossing(0, 3, two), crossing(1, 3, two), crossing(1, 2, two)]
    tris.append([q[0], q[1], q[2]])                                                  # two and two: a quadrilateral
    tris.append([q[0], q[2], q[3]])
    keys = np.concatenate([np.stack([k for k, _ in tri], 1) for tri in tris])        # (F, 3, 2)
    points = np.concatenate([np.stack([p for _, p in tri], 1) for tri in tris])      # (F, 3, 3)
    uniq, first, inverse = np.unique(keys.reshape(-1, 2), axis=0, return_index=True, return_inverse=True)
    vertices = points.reshape(-1, 3)[first]
    faces = inverse.reshape(-1, 3).astype(np.int64)
    return vertices, faces


def plot_decision_surface_3d(
    ax,
    params: TwoLayerParams,
    X: Tensor,
    y: Tensor,
    *,
    lim: Sequence[float] = (0.0, 1.0),
    res: int = 31,
    title: Optional[str] = None,
    cmap: str = "viridis",
):
    r"""Draw the decision surface $N = 0$ on a 3-D ``ax`` as triangles coloured by height, and the points.

    The surface is :func:`decision_surface_mesh`; each triangle's colour is its mean height $x_3$ on the
    scale ``lim`` (the same scale in every panel, so one colour bar serves them all).

    Returns:
        A ``matplotlib.cm.ScalarMappable`` of the height scale, for ``fig.colorbar``.
    """
    import matplotlib as mpl
    from matplotlib.colors import LightSource
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    params = _model(params, 3, "a 3-D plot")
    Xn, yp = _check_points(params, X, y)
    lo, hi = _check_lim(lim)
    vertices, faces = decision_surface_mesh(params, lim, res)
    norm = mpl.colors.Normalize(vmin=lo, vmax=hi)
    mappable = mpl.cm.ScalarMappable(norm=norm, cmap=cmap)
    if len(faces):
        tri = vertices[faces]
        poly = Poly3DCollection(tri, facecolors=mappable.to_rgba(tri[:, :, 2].mean(1)), linewidths=0,
                                alpha=0.55, shade=True, lightsource=LightSource(azdeg=225, altdeg=45))
        ax.add_collection3d(poly)
    ax.scatter(*Xn[yp > 0].T, c=POS_COLOR, marker="o", edgecolors="k", s=36, depthshade=False, label="$y=+1$")
    ax.scatter(*Xn[yp < 0].T, c=NEG_COLOR, marker="s", edgecolors="k", s=36, depthshade=False, label="$y=-1$")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_zlim(lo, hi)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_zlabel("$x_3$")
    if title:
        ax.set_title(title)
    return mappable


def decision_surfaces_plotly(
    networks: Mapping[str, TwoLayerParams],
    X: Tensor,
    y: Tensor,
    *,
    lim: Sequence[float] = (0.0, 1.0),
    res: int = 31,
    height: int = 420,
):
    r"""An interactive plotly figure: the decision surface $N = 0$ of each network in its own rotatable 3-D panel.

    Args:
        networks: panel title -> a network on $\R^3$ (one to four panels, side by side).
        X, y: ``(n, 3)`` training points and their labels, drawn in every panel.
        lim: the cube ``lim^3`` shown; res: grid size of :func:`decision_surface_mesh`.
        height: the figure's height in pixels.
    Returns:
        A ``plotly.graph_objects.Figure`` (surfaces coloured by height on one shared scale, with a colour bar).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not isinstance(networks, Mapping) or not 1 <= len(networks) <= 4:
        raise TypeError(f"networks must be a dict of one to four 'title': network pairs, got {networks!r:.80}")
    for name in networks:
        if not isinstance(name, str):
            raise TypeError(f"networks must have string titles as keys, got {name!r}")
    nets = {name: _model(p, 3, "a 3-D plot") for name, p in networks.items()}
    Xn, yp = _check_points(next(iter(nets.values())), X, y)
    lo, hi = _check_lim(lim)
    res = check_int("res", res, low=2)
    height = check_int("height", height, low=100, high=4000)
    k = len(nets)
    fig = make_subplots(rows=1, cols=k, specs=[[{"type": "scene"}] * k], subplot_titles=list(nets),
                        horizontal_spacing=0.02)
    for col, (name, p) in enumerate(nets.items(), start=1):
        vertices, faces = decision_surface_mesh(p, (lo, hi), res)
        if len(faces):
            v = vertices.astype(np.float32)                          # compact typed arrays in the JSON
            f = faces.astype(np.uint16 if len(v) < 2**16 else np.int32)
            fig.add_trace(go.Mesh3d(x=v[:, 0], y=v[:, 1], z=v[:, 2], i=f[:, 0], j=f[:, 1], k=f[:, 2],
                                    intensity=v[:, 2], colorscale="Viridis", cmin=lo, cmax=hi, opacity=0.8,
                                    showscale=col == 1, name="N = 0", hoverinfo="skip",
                                    colorbar=dict(title="height x3", len=0.8, x=1.0)), row=1, col=col)
        for sign, color, symbol, label in ((1, POS_COLOR, "circle", "y = +1"), (-1, NEG_COLOR, "square", "y = -1")):
            pts = Xn[yp == sign].astype(np.float32)
            fig.add_trace(go.Scatter3d(x=pts[:, 0], y=pts[:, 1], z=pts[:, 2], mode="markers", name=label,
                                       marker=dict(size=4, color=color, symbol=symbol, line=dict(color="black", width=1)),
                                       showlegend=col == 1, legendgroup=label), row=1, col=col)
    axis = dict(range=[lo, hi], nticks=5)
    fig.update_scenes(xaxis=dict(title="x1", **axis), yaxis=dict(title="x2", **axis), zaxis=dict(title="x3", **axis),
                      aspectmode="cube", camera=dict(eye=dict(x=1.9, y=-1.9, z=1.2)))
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=40, b=0), template="plotly_white",
                      legend=dict(orientation="h", x=0.0, y=1.08, bgcolor="rgba(255,255,255,0.6)"))
    return fig


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

    along $\pm e_3$ up to ``max_norm``, exactly (:func:`ortho_lib.perturbations.flip_norm_along`; ``inf`` where
    no flip is found, ``nan`` where $N(p) = 0$).  Evaluated in chunks of ``chunk`` grid points to bound memory.

    Returns:
        ``(xx, yy, dist)``, each ``(res, res)``, with ``xx`` varying along the columns (``indexing="xy"``).
    """
    from .perturbations import flip_norm_along

    params = _model(params, 3, "a vertical flip map")
    h = check_float("height", height)
    res = check_int("res", res, low=2)
    check_size("res", res, res, 3)
    chunk = check_int("chunk", chunk, low=1)
    max_norm = check_float("max_norm", max_norm, positive=True)
    lo, hi = _check_lim(lim)
    dt = params.W.dtype
    t = torch.linspace(lo, hi, res, dtype=dt)
    xx, yy = torch.meshgrid(t, t, indexing="xy")
    pts = torch.stack([xx.flatten(), yy.flatten(), torch.full((res * res,), h, dtype=dt)], 1)
    e3 = torch.tensor([0.0, 0.0, 1.0], dtype=dt)
    dist = torch.cat([flip_norm_along(params, pts[i:i + chunk], e3, max_norm=max_norm, side="both").norm
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

    params = _model(params, 3, "a vertical flip map")
    Xn, yp = _check_points(params, X, y)
    vmin = check_float("vmin", vmin, positive=True)
    if vmin >= check_float("max_norm", max_norm, positive=True):
        raise ValueError(f"vmin must be below max_norm = {max_norm}, got {vmin}")
    xx, yy, dist = normal_flip_map(params, height=height, lim=lim, res=res, max_norm=max_norm)
    shown = np.clip(np.where(np.isfinite(dist), dist, max_norm), vmin, max_norm)
    mesh = ax.pcolormesh(xx, yy, shown, norm=LogNorm(vmin=vmin, vmax=max_norm), cmap="magma", shading="auto")
    plane = torch.stack([torch.as_tensor(xx).flatten(), torch.as_tensor(yy).flatten(),
                         torch.full((xx.size,), float(height), dtype=torch.float64)], 1).to(params.W.dtype)
    vals = network_output(params, plane).reshape(xx.shape).numpy()
    ax.contour(xx, yy, vals, levels=[0], colors="w", linewidths=1.2)
    _labelled_points_2d(ax, Xn[:, :2], yp, lim, title, edge="w", size=40)
    return mesh, dist


# ------------------------------------------------------------ the remedies: the scale of Pi_perp W
def _check_series(names: Sequence[str], values: Sequence[object]) -> list[np.ndarray]:
    """1-D float tensors of one common length, as NumPy arrays (errors name the argument)."""
    out = [to_numpy(check_tensor(name, v, ndim=1)).astype(float) for name, v in zip(names, values)]
    k = out[0].shape[0]
    for name, a in zip(names[1:], out[1:]):
        if a.shape[0] != k:
            raise ValueError(f"{name} must hold one value per entry of {names[0]} ({k}), got {a.shape[0]}")
    if k == 0:
        raise ValueError(f"{names[0]} must hold at least one value")
    return out


def _check_positive(name: str, a: np.ndarray, *, strict: bool = True) -> None:
    bad = ~(a > 0) if strict else a < 0
    if bad.any():
        raise ValueError(f"{name} must be {'positive' if strict else 'non-negative'}, found {a[bad][0]:g}")


def plot_orthogonal_gradient_scale(
    ax,
    scale: Tensor,
    gperp: Tensor,
    uI: Tensor,
    ell: int,
    *,
    xlabel: str = r"scale $s$ of $\Pi_\perp W$",
):
    r"""The orthogonal gradient against the scale of the orthogonal part of the first layer, with its law.

    After training, $\Pi_\perp W(T) = s\,\Pi_\perp W(0)/\beta$ where $s = \beta$ without weight decay (the
    orthogonal part is frozen) and $s = c_T\beta$ with weight decay ($c_T = (1-\eta\lambda)^T$).  For a point
    chosen without looking at $\Pi_\perp W(0)$, $\|g_\perp\|^2/(s^2\|u_I\|^2)$ is exactly $\chi^2_\ell$, so the
    measured $\|g_\perp\|/\|u_I\|$ should scatter around the prediction $s\sqrt\ell$ and lie in the band
    $s[\sqrt{\ell/2}, \sqrt{2\ell}]$ (each side fails with probability at most $e^{-\ell/16}$).  Draws the
    points (log-log), the line and the band on ``ax``.

    Args:
        ax: a matplotlib axes.
        scale: ``(k,)`` the scale $s > 0$ for each measurement.
        gperp: ``(k,)`` measured $\|g_\perp(x_0)\| \ge 0$.
        uI: ``(k,)`` $\|u_{I(x_0)}\| > 0$ at the same points.
        ell: the codimension $\ell$ of the data subspace.
        xlabel: the label of the horizontal axis.
    Returns:
        ``ax``.
    """
    s, g, u = _check_series(("scale", "gperp", "uI"), (scale, gperp, uI))
    _check_positive("scale", s)
    _check_positive("gperp", g, strict=False)
    _check_positive("uI", u)
    ell = check_int("ell", ell, low=1)
    if not isinstance(xlabel, str):
        raise TypeError(f"xlabel must be a string, got {type(xlabel).__name__}")
    grid = np.geomspace(s.min() / 2, s.max() * 2, 100)
    ax.fill_between(grid, np.sqrt(ell / 2) * grid, np.sqrt(2 * ell) * grid, color="C0", alpha=0.15,
                    label=r"bound $s\,[\sqrt{\ell/2}, \sqrt{2\ell}]$ (each side fails w.p. $\leq e^{-\ell/16}$)")
    ax.plot(grid, np.sqrt(ell) * grid, "C0", lw=1.5, label=rf"prediction $s\sqrt{{\ell}}$, $\ell = {ell}$")
    ax.scatter(s, g / u, s=10, color="C3", alpha=0.5, zorder=3, label=r"measured $\|g_\perp(x_0)\| / \|u_I\|$")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(r"$\|g_\perp(x_0)\| \,/\, \|u_I\|$")
    ax.legend(fontsize=8, loc="upper left")        # the points rise along the diagonal
    return ax


def plot_flip_norms_scale(
    ax,
    scale: Tensor,
    flip: Tensor,
    radius: Tensor,
    *,
    data_norm: Optional[float] = None,
    xlabel: str = r"scale $s$ of $\Pi_\perp W$",
):
    r"""Flip norms along the universal direction and certified radii, against the scale of $\Pi_\perp W$.

    For each distinct value of ``scale``: the median measured flip norm with its 10-90% range (an upper
    bound on the smallest flipping perturbation in $P^\perp$) and the median certified radius
    $|N(x_0)|/L$ (a lower bound: no perturbation in $P^\perp$ shorter than it flips $x_0$), on log-log axes;
    optionally the norm of a data point as a horizontal line.

    Args:
        ax: a matplotlib axes.
        scale: ``(k,)`` the scale $s > 0$ for each measurement (points sharing a value form a group).
        flip: ``(k,)`` measured flip norms ($> 0$, finite).
        radius: ``(k,)`` certified radii ($\ge 0$) at the same points.
        data_norm: optional norm of a data point ($> 0$), drawn dotted.
        xlabel: the label of the horizontal axis.
    Returns:
        ``ax``.
    """
    s, f, r = _check_series(("scale", "flip", "radius"), (scale, flip, radius))
    _check_positive("scale", s)
    _check_positive("flip", f)
    _check_positive("radius", r, strict=False)
    if data_norm is not None:
        data_norm = check_float("data_norm", data_norm, positive=True)
    if not isinstance(xlabel, str):
        raise TypeError(f"xlabel must be a string, got {type(xlabel).__name__}")
    groups = np.unique(s)
    med = np.array([np.median(f[s == g]) for g in groups])
    lo = np.array([np.percentile(f[s == g], 10) for g in groups])
    hi = np.array([np.percentile(f[s == g], 90) for g in groups])
    rad = np.array([np.median(r[s == g]) for g in groups])
    ax.errorbar(groups, med, yerr=[med - lo, hi - med], fmt="o", color="C3", capsize=3, zorder=3,
                label=r"measured flip norm along $z$ (median, 10-90%)")
    ax.plot(groups, rad, "C0s-", lw=1.5, ms=4, label=r"certified radius $|N(x_0)|/L$ (median)")
    if data_norm is not None:
        ax.axhline(data_norm, color="gray", ls=":", label=rf"norm of a data point, {data_norm:.3g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(r"perturbation norm in $P^\perp$")
    ax.legend(fontsize=8, loc="upper right")       # both curves fall from the upper left
    return ax
