"""Every public callable of ortho_lib with one valid call and a description of each argument.

The property tests in ``test_bad_inputs.py`` and ``test_valid_variants.py`` draw a callable and an
argument from :data:`CASES`, replace the argument by a bad or edge value of its kind, and check the
answer: a ``TypeError``/``ValueError`` whose message starts with the caller's argument name, or the
result of the equivalent valid call.  A callable added to the library needs one :class:`Case` here
(``test_every_public_callable_has_a_case`` says which are missing).

Argument kinds (:class:`Arg`): ``tensor`` (a float tensor; ``rows="n"`` marks one row per training
point, ``last="d"`` a last axis that must match the input dimension), ``labels`` (+-1), ``classes``
(integer class indices), ``params`` (a ``TwoLayerParams`` or a ``deep.DeepParams``), ``sub``, ``int``, ``seed``,
``float``, ``flag``, ``choice``, ``dtype`` and ``other`` (not mutated).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

import ortho_lib as ol
from ortho_lib import attacks, data, datasets, gradients, maxmargin, mlp, network, notebook, perturbations, plotting, \
    probes, separability, subspaces, theory, training
from ortho_lib import deep, dynamics, image_subspaces, manifolds, norms

F64 = torch.float64


@dataclass
class Arg:
    """How one argument may be mutated (see the module docstring)."""

    kind: str
    rows: Optional[str] = None          # tensors/labels: one row per point of this group
    last: Optional[str] = None          # tensors: last axis must match this dimension group
    ndims: tuple = ()                   # tensors: allowed ranks
    low: Optional[float] = None         # int/seed/float: smallest valid value
    high: Optional[float] = None        # int/float: largest valid value
    strict_low: bool = False            # float: low itself is invalid (x > low)
    strict_high: bool = False           # float: high itself is invalid (x < high)
    optional: bool = False              # None is a valid value
    size: bool = False                  # int: allocates memory in proportion (a huge value must be refused)
    choices: Sequence[str] = ()
    single: bool = True                 # params: a stack is refused
    names: tuple = ()                   # other argument names an error about this one may start with
    inf_ok: bool = False                # float: +inf is valid (no limit)
    tensor_ok: bool = False             # float: a tensor of values is valid too (returns per value)
    variants: bool = True               # the valid variants of this argument apply (not for backend-bound dtypes)


@dataclass
class Case:
    """One valid call of a public callable, and its arguments' kinds."""

    name: str
    fn: Callable
    args: dict
    spec: dict
    f32: str = "equal"                  # float32 variant: "equal" (to float32 precision), "run" or "skip"
    slow: bool = False                  # takes more than ~50 ms: fewer examples
    empty: str = "ok"                   # 0 points: "ok" (an error naming an argument, or a result), "skip"

    def call(self, **overrides: Any) -> Any:
        return self.fn(**{**self.args, **overrides})


# ------------------------------------------------------------------------------------------ fixtures

D, ELL, M, N = 6, 2, 12, 8
SUB = ol.random_subspace(D, ELL, seed=0)
X = ol.sample_on_subspace(SUB, N, seed=1)
V = ol.teacher_direction(SUB, seed=2)
Y = ol.teacher_labels(X, V)
P = ol.init_network(D, M, seed=3, bias="uniform")
P_STACK = ol.TwoLayerParams.stack([P, ol.init_network(D, M, seed=4, bias="uniform")])
P_TRAINED = ol.train(P, X, Y, ol.TrainConfig(lr=0.5, max_steps=5), backend="reference").params
Q = SUB.perp_basis
DIGITS_38 = datasets.load_digits_split(seed=0, classes=(3, 8))
X0 = X[0]
OFFSET = torch.linspace(-1, 1, D, dtype=F64)

XO = ol.data.obtuse_data(4, D, seed=5)
YO = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=F64)
P_ROB = maxmargin.robust_network(XO, YO)

X2, Y2 = data.line_data_2d(5)
P2 = ol.init_network(2, 6, seed=6, bias="uniform")
X3, Y3 = data.chessboard_data_3d(3)
P3 = ol.init_network(3, 6, seed=7, bias="uniform")

with torch.random.fork_rng(devices=[]):
    torch.manual_seed(8)
    MODEL = mlp.MLP(D, 5, 3)
YC = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
_g = torch.Generator().manual_seed(9)
F_TRAIN = torch.randn(24, 3, generator=_g, dtype=F64)
Y_TRAIN = (F_TRAIN[:, 0] > 0).to(torch.int64)
F_TEST = torch.randn(10, 3, generator=_g, dtype=F64)
Y_TEST = (F_TEST[:, 0] > 0).to(torch.int64)
Q_VALUES = torch.linspace(-0.05, 0.3, N, dtype=F64)
SPHERE = ol.manifolds.sphere_manifold(D, 2, radius=1.5, seed=10)
XS = ol.data.sample_sphere_manifold(SPHERE, N, seed=11)
LOG_X = torch.linspace(0.5, 4.0, 5, dtype=F64)
LAM = torch.full((4,), 0.3, dtype=F64)
SCALE_K = torch.tensor([0.1, 0.1, 0.01, 0.01, 0.001, 0.001], dtype=F64)    # the remedies' scale plots
GPERP_K = SCALE_K * torch.linspace(5.0, 7.0, 6, dtype=F64)
UI_K = torch.full((6,), 0.7, dtype=F64)
FLIP_K = 3.0 / SCALE_K
RADIUS_K = 0.5 / SCALE_K
# deep networks (chapter depth): one with non-zero biases (a few steps of training), a stack of two
DP = ol.train(deep.init_network(D, [5, 4], seed=13), X, Y, ol.TrainConfig(lr=0.5, max_steps=3),
              backend="reference").params
DP_STACK = deep.DeepParams.stack([DP, deep.init_network(D, [5, 4], seed=14)])
# other norms: gradients with a part orthogonal to P, a coordinate basis of two of the D coordinates
G_IN = ol.input_gradient(P, X)
Q_COORD = torch.eye(D, dtype=F64)[:, D - 2:]
LINF_START = torch.full((2,), 0.75, dtype=F64)       # flips P2 at X2[1] (the exact L_inf minimum is 0.623)
# real images: the last two "pixels" zero in every row, the spectrum of X, a multi-class network
ZERO = torch.arange(D) >= D - 2
XZ = X * (~ZERO).to(F64)
SPECTRUM = image_subspaces.data_spectrum(X)
_DEEP_FIELDS = ("weights", "biases", "u", "c")       # an error about one field of DeepParams may name another

_AXES: dict = {}


def axes(kind: str = "2d"):
    """A cleared matplotlib axes on the Agg backend (one per kind, reused)."""
    if kind not in _AXES:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig = plt.figure()
        _AXES[kind] = fig.add_subplot(projection="3d" if kind == "3d" else None)
    _AXES[kind].cla()
    return _AXES[kind]


# ------------------------------------------------------------------------------------- shorthands

def T(rows=None, last=None, ndims=(2,), names=(), optional=False) -> Arg:
    return Arg("tensor", rows=rows, last=last, ndims=ndims, names=names, optional=optional)


def LABELS(rows="n", names=()) -> Arg:
    return Arg("labels", rows=rows, names=names)


def PARAMS(single=True, names=()) -> Arg:
    return Arg("params", single=single, names=names)


def SUBS(names=("params", "X", "x", "g")) -> Arg:
    return Arg("sub", names=names)


def INT(low=None, high=None, size=False, optional=False, names=()) -> Arg:
    return Arg("int", low=low, high=high, size=size, optional=optional, names=names)


def SEED() -> Arg:
    return Arg("seed", low=0)


def FLOAT(low=None, high=None, strict_low=False, strict_high=False, optional=False, names=(), inf_ok=False,
          tensor_ok=False) -> Arg:
    return Arg("float", low=low, high=high, strict_low=strict_low, strict_high=strict_high, optional=optional,
               names=names, inf_ok=inf_ok, tensor_ok=tensor_ok)


def POS(**kw) -> Arg:
    return FLOAT(low=0.0, strict_low=True, **kw)


def NONNEG(**kw) -> Arg:
    return FLOAT(low=0.0, **kw)


def FLAG() -> Arg:
    return Arg("flag")


def CHOICE(*choices) -> Arg:
    return Arg("choice", choices=choices)


def DTYPE() -> Arg:
    return Arg("dtype")


OTHER = Arg("other")


def _seeded(fn: Callable, **kw: Any) -> Any:
    """``fn(**kw)`` under a fixed global torch seed (for constructors that draw from the global generator)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return fn(**kw)


def _show_plotly(div_id: str) -> None:
    """:func:`notebook.show_plotly` of an empty figure as the book's build shows it (no browser, output dropped)."""
    import contextlib
    import io
    import os

    import plotly.graph_objects as go

    before = os.environ.get(notebook.ENV)
    os.environ[notebook.ENV] = "0"
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            notebook.show_plotly(go.Figure(), div_id=div_id)
    finally:
        if before is None:
            del os.environ[notebook.ENV]
        else:
            os.environ[notebook.ENV] = before


def _theory(name: str, args: dict, spec: dict, **kw) -> Case:
    return Case(f"theory.{name}", getattr(theory, name), args, spec, **kw)


# ----------------------------------------------------------------------------------------- the cases

CASES: list[Case] = [
    # subspaces
    Case("subspaces.Subspace", subspaces.Subspace, dict(basis=SUB.basis, perp_basis=SUB.perp_basis),
         dict(basis=T(last="dd", names=("Subspace.basis", "Subspace.perp_basis", "Subspace")),
              perp_basis=T(last="dd", names=("Subspace.basis", "Subspace.perp_basis", "Subspace"))), f32="run"),
    Case("subspaces.random_subspace", ol.random_subspace, dict(d=D, ell=ELL, seed=0),
         dict(d=INT(low=2, size=True, names=("ell",)), ell=INT(low=1, high=D - 1), seed=SEED(), dtype=DTYPE())),
    Case("subspaces.coordinate_subspace", ol.coordinate_subspace, dict(d=D, ell=ELL),
         dict(d=INT(low=2, size=True, names=("ell",)), ell=INT(low=1, high=D - 1), dtype=DTYPE())),
    Case("subspaces.subspace_from_vectors", ol.subspace_from_vectors, dict(vectors=X[:3], seed=0),
         dict(vectors=T(), seed=SEED()), f32="run"),
    Case("subspaces.Pi_P", ol.Pi_P, dict(sub=SUB, x=X), dict(sub=SUBS(), x=T(rows="n", last="d", ndims=(1, 2, 3)))),
    Case("subspaces.P_perp", ol.P_perp, dict(sub=SUB, x=X), dict(sub=SUBS(), x=T(rows="n", last="d", ndims=(1, 2, 3)))),
    Case("subspaces.perp_coordinates", subspaces.perp_coordinates, dict(sub=SUB, x=X),
         dict(sub=SUBS(), x=T(rows="n", last="d", ndims=(1, 2, 3)))),
    Case("subspaces.distance_to_subspace", ol.distance_to_subspace, dict(sub=SUB, x=X, offset=OFFSET),
         dict(sub=SUBS(), x=T(rows="n", last="d", ndims=(1, 2, 3)), offset=T(last="d", ndims=(1,), optional=True))),
    # data
    Case("data.sample_on_subspace", ol.sample_on_subspace, dict(sub=SUB, n=N, seed=1, radius=2.0, offset=OFFSET),
         dict(sub=SUBS(), n=INT(low=1, size=True), seed=SEED(), radius=POS(optional=True),
              offset=T(last="d", ndims=(1,), optional=True))),
    Case("data.sphere_data", ol.sphere_data, dict(n=N, d=D, seed=1),
         dict(n=INT(low=1, size=True, names=("d",)), d=INT(low=1, size=True, names=("n",)), seed=SEED(), dtype=DTYPE())),
    Case("data.teacher_direction", ol.teacher_direction, dict(sub=SUB, seed=2), dict(sub=SUBS(), seed=SEED())),
    Case("data.teacher_labels", ol.teacher_labels, dict(X=X, v=V, offset=OFFSET),
         dict(X=T(rows="n", last="d"), v=T(last="d", ndims=(1,)), offset=T(last="d", ndims=(1,), optional=True))),
    Case("data.random_labels", ol.random_labels, dict(n=N, seed=1), dict(n=INT(low=1, size=True), seed=SEED(), dtype=DTYPE())),
    Case("data.check_on_subspace", ol.check_on_subspace, dict(sub=SUB, X=X),
         dict(sub=SUBS(), X=T(rows="n", last="d"), tol=NONNEG(optional=True), offset=T(last="d", ndims=(1,), optional=True))),
    Case("data.line_data_2d", data.line_data_2d, dict(n_points=7), dict(n_points=INT(low=3, size=True), dtype=DTYPE())),
    Case("data.chessboard_data_3d", data.chessboard_data_3d, dict(k=3, height=0.5),
         dict(k=INT(low=2, size=True), height=FLOAT(), dtype=DTYPE())),
    Case("data.obtuse_data", data.obtuse_data, dict(n=4, d=D, seed=5, eps=0.01),
         dict(n=INT(low=1, high=D, names=("d",)), d=INT(low=4, size=True, names=("n",)), seed=SEED(), eps=NONNEG(),
              dtype=DTYPE())),
    Case("data.teacher_problem", ol.teacher_problem, dict(d=D, ell=ELL, n=N, seed=0, n_test=3),
         dict(d=INT(low=2, size=True, names=("ell", "n", "n_test")), ell=INT(low=1, high=D - 1), n=INT(low=1, size=True),
              seed=SEED(), n_test=INT(low=0, size=True), test_seed=Arg("seed", low=0, optional=True), dtype=DTYPE())),
    # datasets
    Case("datasets.load_digits_split", datasets.load_digits_split, dict(seed=0, test_fraction=0.25),
         dict(test_fraction=FLOAT(low=0.0, high=1.0, strict_low=True, strict_high=True), seed=SEED(), shuffle_labels=FLAG()),
         slow=True),
    Case("datasets.load_mnist_split", datasets.load_mnist_split, dict(seed=0, test_fraction=0.25, classes=(3, 8)),
         dict(test_fraction=FLOAT(low=0.0, high=1.0, strict_low=True, strict_high=True), seed=SEED(), shuffle_labels=FLAG()),
         slow=True),
    Case("datasets.binary_task", datasets.binary_task, dict(split=DIGITS_38, positive=3, negative=8),
         dict(positive=INT(low=0, high=9, names=("negative",)), negative=INT(low=0, high=9, names=("positive",))),
         f32="skip"),
    # network
    Case("network.TwoLayerParams", ol.TwoLayerParams, dict(W=P.W, b=P.b, u=P.u, c=P.c),
         dict(W=T(ndims=(2, 3), names=("TwoLayerParams.W", "TwoLayerParams.b", "TwoLayerParams.u", "TwoLayerParams.c")),
              b=T(ndims=(1,), names=("TwoLayerParams.b",)), u=T(ndims=(1,), names=("TwoLayerParams.u",)),
              c=T(ndims=(0,), names=("TwoLayerParams.c",)))),
    Case("network.default_beta", ol.default_beta, dict(d=D), dict(d=INT(low=1))),
    Case("network.init_network", ol.init_network,
         dict(d=D, m=M, seed=3, beta=0.3, u_scale=2.0, second_layer="gaussian", bias="uniform"),
         dict(d=INT(low=1, size=True, names=("m",)), m=INT(low=1, size=True, names=("d",)), seed=SEED(),
              beta=POS(optional=True), u_scale=POS(), second_layer=CHOICE("sign", "gaussian"),
              bias=CHOICE("zero", "uniform"), dtype=DTYPE())),
    Case("network.preactivations", ol.preactivations, dict(params=P, X=X),
         dict(params=PARAMS(single=False, names=("X",)), X=T(rows="n", last="d", ndims=(1, 2), names=("params",)))),
    Case("network.network_output", ol.network_output, dict(params=P, X=X),
         dict(params=PARAMS(single=False, names=("X",)), X=T(rows="n", last="d", ndims=(1, 2), names=("params",)))),
    Case("network.active_set", ol.active_set, dict(params=P, x0=X),
         dict(params=PARAMS(single=False, names=("x0",)), x0=T(rows="n", last="d", ndims=(1, 2), names=("params",)))),
    Case("network.input_gradient", ol.input_gradient, dict(params=P, X=X),
         dict(params=PARAMS(single=False, names=("X",)), X=T(rows="n", last="d", ndims=(1, 2), names=("params",)))),
    Case("network.split_gradient", network.split_gradient, dict(sub=SUB, g=X),
         dict(sub=SUBS(), g=T(rows="n", last="d", ndims=(1, 2, 3), names=("sub",)))),
    Case("network.orthogonal_gradient", ol.orthogonal_gradient, dict(params=P, sub=SUB, X=X),
         dict(params=PARAMS(single=False, names=("X", "sub")), sub=SUBS(),
              X=T(rows="n", last="d", ndims=(1, 2), names=("params",)))),
    Case("network.TwoLayerParams.member", lambda params, e: params.member(e), dict(params=P_STACK, e=1),
         dict(e=INT(low=-2, high=1))),
    Case("network.TwoLayerParams.stack", lambda nets: ol.TwoLayerParams.stack(nets), dict(nets=[P, P]), dict()),
    Case("network.TwoLayerParams.norm_sq", lambda params: params.norm_sq(), dict(params=P), dict()),
    # training
    Case("training.TrainConfig", training.TrainConfig,
         dict(lr=0.1, max_steps=3, target_margin=0.5, optimizer="momentum", momentum=0.5, betas=(0.8, 0.9), eps=1e-7,
              batch_size=None, weight_decay=0.01, norm_penalty=0.0, trained="Wbu", schedule="constant",
              record_every=1, record_params=False, seed=0, strict=False),
         dict(lr=POS(names=("TrainConfig.lr",)), max_steps=INT(low=0, names=("TrainConfig.max_steps",)),
              target_margin=FLOAT(optional=True, names=("TrainConfig.target_margin",)),
              optimizer=CHOICE(*training.OPTIMIZERS), momentum=FLOAT(low=0.0, high=1.0, strict_high=True),
              eps=POS(), batch_size=INT(low=1, optional=True), weight_decay=NONNEG(), norm_penalty=NONNEG(),
              record_every=INT(low=1, optional=True, names=("TrainConfig.record_params",)), record_params=FLAG(),
              seed=SEED(), strict=FLAG(), trained=CHOICE("W", "Wb", "Wbu", "Wbuc"),
              schedule=CHOICE("constant", "max_margin"))),
    Case("training.loss_and_grads", ol.loss_and_grads, dict(params=P, X=X, y=Y),
         dict(params=PARAMS(names=("X",)), X=T(rows="n", last="d", names=("params", "y")), y=LABELS(names=("X",)))),
    Case("training.log_loss", training.log_loss, dict(yf=Y * 0.7), dict(yf=T(ndims=(1, 2)))),
    Case("training.train_margin", ol.train_margin, dict(params=P, X=X, y=Y),
         dict(params=PARAMS(single=False, names=("X",)), X=T(rows="n", last="d", names=("params", "y")),
              y=LABELS(names=("X",))), empty="ok"),
    Case("training.accuracy", ol.accuracy, dict(params=P, X=X, y=Y),
         dict(params=PARAMS(single=False, names=("X",)), X=T(rows="n", last="d", names=("params", "y")),
              y=LABELS(names=("X",)))),
    Case("training.train", ol.train,
         dict(params=P, X=X, y=Y, config=training.TrainConfig(lr=0.5, max_steps=3), backend="reference"),
         dict(params=PARAMS(single=False, names=("X",)), X=T(rows="n", last="d", names=("params", "y")),
              y=LABELS(names=("X",)), backend=CHOICE(*training.BACKENDS), coordinates=CHOICE(*training.COORDINATES),
              sub=Arg("sub", optional=True, names=("X", "params")), dtype=Arg("dtype", optional=True, variants=False),
              stats=OTHER, device=OTHER)),
    Case("training.TrainHistory.at", lambda step: _HISTORY.at(step), dict(step=2), dict(step=INT(low=0))),
    Case("training.TrainResult.member", lambda e: _STACK_RESULT.member(e), dict(e=0), dict(e=INT(low=-2, high=1))),
    # theory
    _theory("tail_probability", dict(ell=10), dict(ell=INT(low=1))),
    _theory("gperp_mean_square", dict(beta=0.3, uI_sq=0.5, ell=4), dict(beta=POS(), uI_sq=NONNEG(), ell=INT(low=1))),
    _theory("gperp_prediction", dict(k=3, m=10, ell=4, d=20),
            dict(k=INT(low=0, high=10), m=INT(low=1, names=("k",)), ell=INT(low=1, high=20), d=INT(low=4, names=("ell",)))),
    _theory("gperp_bounds", dict(beta=0.3, uI_sq=0.5, ell=4), dict(beta=POS(), uI_sq=NONNEG(), ell=INT(low=1))),
    _theory("gperp_bound_failure_exact", dict(ell=7), dict(ell=INT(low=1))),
    _theory("gperp_bound_failure_chernoff", dict(ell=7), dict(ell=INT(low=1))),
    _theory("universal_flip_bound", dict(N0=0.4, m=10, k_opp=3, d=20, ell=4),
            dict(N0=FLOAT(), m=INT(low=3, names=("k_opp",)), k_opp=INT(low=0, high=10), d=INT(low=4, names=("ell",)),
                 ell=INT(low=1, high=20))),
    _theory("alignment_threshold", dict(ell=4, d=20, m=10), dict(ell=INT(low=1), d=INT(low=1), m=INT(low=1))),
    _theory("universal_guarantee", dict(m=10, ell=4), dict(m=INT(low=1), ell=INT(low=1))),
    _theory("universal_tightness_ratio", dict(m=10, k_opp=3, ell=4, t=1.0),
            dict(m=INT(low=3, names=("k_opp",)), k_opp=INT(low=1, high=10), ell=INT(low=1), t=NONNEG())),
    _theory("universal_hypotheses", dict(params=P, sub=SUB), dict(params=PARAMS(names=("sub",)), sub=SUBS())),
    _theory("alignment_failure_bound", dict(m=10, ell=4), dict(m=INT(low=1), ell=INT(low=1))),
    _theory("mean_phi_chi", dict(ell=4, c=0.5), dict(ell=INT(low=1), c=FLOAT(tensor_ok=True))),
    _theory("perp_lipschitz_bound", dict(beta=0.3, m=10, ell=4, t=1.0),
            dict(beta=POS(), m=INT(low=1), ell=INT(low=1), t=NONNEG())),
    _theory("certified_radius", dict(N0=0.4, beta=0.3, m=10, ell=4, t=1.0),
            dict(N0=FLOAT(), beta=POS(), m=INT(low=1), ell=INT(low=1), t=NONNEG())),
    _theory("weight_decay_factor", dict(eta=0.1, lam=0.5, steps=7), dict(eta=POS(), lam=NONNEG(), steps=INT(low=0))),
    _theory("lambert_w0", dict(x=2.0), dict(x=NONNEG())),
    _theory("stationary_norm_bound", dict(lam=0.01), dict(lam=POS())),
    _theory("stationary_margin_bound", dict(lam=0.01, radius_sq=3.0), dict(lam=POS(), radius_sq=POS())),
    _theory("kkt_flip_bound", dict(X=XO, y=YO, margins=torch.full((4,), 1.5, dtype=F64)),
            dict(X=T(rows="n", names=("y", "margins")), y=LABELS(names=("X",)),
                 margins=T(rows="n", ndims=(1,), optional=True, names=("X",)))),
    _theory("orthogonal_max_margin_value", dict(n_pos=3, n_neg=4, d=20),
            dict(n_pos=INT(low=1), n_neg=INT(low=1), d=INT(low=1))),
    _theory("key_quantity_moments", dict(m=10, d=20, k=5),
            dict(m=INT(low=1), d=INT(low=5, names=("k",)), k=INT(low=0, high=20, optional=True))),
    _theory("paper_variance", dict(m=10, d=20), dict(m=INT(low=1), d=INT(low=1))),
    _theory("cantelli_bound", dict(mean=0.5, variance=0.1, threshold=0.1),
            dict(mean=FLOAT(low=0.1, strict_low=True, names=("threshold",)), variance=NONNEG(),
                 threshold=FLOAT(high=0.5, strict_high=True))),
    _theory("projected_separation_probability", dict(k=3, active_fraction=0.4),
            dict(k=INT(low=0), active_fraction=FLOAT(low=0.0, high=1.0, strict_low=True, tensor_ok=True))),
    _theory("cover_separable_probability", dict(n=10, d=4), dict(n=INT(low=1), d=INT(low=1))),
    # gradients
    Case("gradients.active_second_layer_norm_sq", gradients.active_second_layer_norm_sq, dict(params=P, X=X),
         dict(params=PARAMS(names=("X",)), X=T(rows="n", last="d", ndims=(1, 2), names=("params",)))),
    Case("gradients.gperp_chi2_statistic", gradients.gperp_chi2_statistic, dict(params=P_TRAINED, sub=SUB, X=X, beta=0.4),
         dict(params=PARAMS(names=("X", "sub")), sub=SUBS(), X=T(rows="n", last="d", ndims=(1, 2), names=("params",)),
              beta=POS(optional=True))),
    Case("gradients.resample_orthogonal_part", gradients.resample_orthogonal_part, dict(params=P, sub=SUB, seed=4, beta=0.4),
         dict(params=PARAMS(names=("sub",)), sub=SUBS(), seed=SEED(), beta=POS(optional=True))),
    Case("gradients.resampled_gperp_norms", gradients.resampled_gperp_norms,
         dict(params=P_TRAINED, sub=SUB, x0=X0, draws=50, seed=4, beta=0.4, chunk_elements=64),
         dict(params=PARAMS(names=("sub", "x0")), sub=SUBS(), x0=T(last="d", ndims=(1,), names=("params",)),
              draws=INT(low=1, size=True), seed=SEED(), beta=POS(optional=True), chunk_elements=INT(low=1))),
    # perturbations
    Case("perturbations.universal_direction", ol.universal_direction, dict(params=P, sub=SUB),
         dict(params=PARAMS(names=("sub",)), sub=SUBS())),
    Case("perturbations.alignment_coefficients", perturbations.alignment_coefficients, dict(params=P, sub=SUB),
         dict(params=PARAMS(names=("sub",)), sub=SUBS())),
    Case("perturbations.first_order_flip_estimate", perturbations.first_order_flip_estimate, dict(params=P, sub=SUB, X=X),
         dict(params=PARAMS(single=False, names=("sub", "X")), sub=SUBS(),
              X=T(rows="n", last="d", ndims=(1, 2), names=("params",)))),
    Case("perturbations.flip_norm_along", ol.flip_norm_along,
         dict(params=P, X=X, direction=Q[:, 0], side="both", max_norm=50.0),
         dict(params=PARAMS(names=("X", "direction")), X=T(rows="n", last="d", names=("params", "direction")),
              direction=T(last="d", ndims=(1, 2)), side=CHOICE("descend", "both"), max_norm=POS(inf_ok=True))),
    Case("perturbations.opposing_active_count", perturbations.opposing_active_count, dict(params=P, X=X),
         dict(params=PARAMS(names=("X",)), X=T(rows="n", last="d", ndims=(1, 2), names=("params",)))),
    Case("perturbations.robust_projection", perturbations.robust_projection, dict(params=P, sub=SUB),
         dict(params=PARAMS(single=False, names=("sub",)), sub=SUBS())),
    Case("perturbations.universal_flips", perturbations.universal_flips, dict(params=P, sub=SUB, X=X, max_norm=50.0),
         dict(params=PARAMS(names=("X", "sub")), sub=SUBS(), X=T(rows="n", last="d", names=("params",)),
              max_norm=POS(inf_ok=True))),
    Case("perturbations.max_descent_slope", perturbations.max_descent_slope,
         dict(params=P, X=X, direction=Q[:, 0], limit=5.0),
         dict(params=PARAMS(names=("X", "direction")), X=T(rows="n", last="d", names=("params", "direction")),
              direction=T(last="d", ndims=(1, 2)), limit=POS(inf_ok=True))),
    Case("perturbations.initial_alignment", perturbations.initial_alignment, dict(m=5, ell=3, d=6, draws=4, seed=0),
         dict(m=INT(low=1, size=True), ell=INT(low=1, high=5, names=("d",)), d=INT(low=4, names=("ell",)),
              draws=INT(low=1, size=True), seed=SEED())),
    Case("perturbations.one_step_noise", perturbations.one_step_noise, dict(params=P, X=X, y=Y),
         dict(params=PARAMS(names=("X",)), X=T(rows="n", last="d", names=("params", "y")), y=LABELS(names=("X",)))),
    Case("perturbations.fgsm_noise", perturbations.fgsm_noise, dict(params=P, X=X, y=Y),
         dict(params=PARAMS(names=("X",)), X=T(rows="n", last="d", names=("params", "y")), y=LABELS(names=("X",)))),
    Case("perturbations.adversarial_examples", perturbations.adversarial_examples, dict(params=P, X=X, y=Y, eta=0.3),
         dict(params=PARAMS(names=("X",)), X=T(rows="n", last="d", names=("params", "y")), y=LABELS(names=("X",)),
              eta=POS())),
    Case("perturbations.multiclass_noise", perturbations.multiclass_noise,
         dict(model=MODEL, X=X, y=YC, norm="l2", temperature=2.0, targeted=True, n_classes=3),
         dict(X=T(rows="n", last="d", names=("y", "model")), y=Arg("classes", rows="n", high=2, names=("X",)),
              norm=CHOICE("l2", "linf"), temperature=POS(), targeted=FLAG(), n_classes=INT(low=3, names=("y",))),
         f32="skip"),
    # attacks
    Case("attacks.restrict_to_subspace", attacks.restrict_to_subspace, dict(params=P, x0=X0, basis=Q),
         dict(params=PARAMS(names=("x0", "basis")), x0=T(last="d", ndims=(1,), names=("params",)),
              basis=T(names=("params",)))),
    Case("attacks.preactivation_bounds", attacks.preactivation_bounds, dict(params=P, X=X, radius=0.5, basis=Q),
         dict(params=PARAMS(names=("X", "basis")), X=T(rows="n", last="d", ndims=(1, 2), names=("params",)),
              radius=NONNEG(), basis=T(optional=True, names=("params",)))),
    Case("attacks.crown_lower_bound", attacks.crown_lower_bound,
         dict(params=P, X=X, radius=0.05, basis=Q, method="alpha-crown", alpha_steps=5),
         dict(params=PARAMS(names=("X", "basis")), X=T(rows="n", last="d", ndims=(1, 2), names=("params",)),
              radius=NONNEG(), basis=T(optional=True, names=("params",)), method=CHOICE("crown", "alpha-crown"),
              alpha_steps=INT(low=0))),
    Case("attacks.crown_certified_radius", attacks.crown_certified_radius,
         dict(params=P, X=X, basis=Q, iters=8, max_radius=20.0),
         dict(params=PARAMS(names=("X", "basis")), X=T(rows="n", last="d", ndims=(1, 2), names=("params",)),
              basis=T(optional=True, names=("params",)), method=CHOICE("crown", "alpha-crown"), iters=INT(low=1),
              max_radius=POS(), alpha_steps=INT(low=0))),
    Case("attacks.exact_min_distance_milp", attacks.exact_min_distance_milp,
         dict(params=P2, x0=X2[1], radius=1.5, node_limit=2000, time_limit=20.0),
         dict(params=PARAMS(names=("x0",)), x0=T(last="d", ndims=(1,), names=("params",)), radius=POS(optional=True),
              basis=T(optional=True, names=("params",)), node_limit=INT(low=1), time_limit=POS(), verbose=FLAG()),
         slow=True, f32="run"),
    Case("attacks.TwoClassLogits", lambda params, V: attacks.TwoClassLogits(params)(V), dict(params=P, V=X),
         dict(params=PARAMS(names=("V",)), V=T(rows="n", last="d", names=("params",)))),
    Case("attacks.ddn_min_distance", attacks.ddn_min_distance,
         dict(params=P, X=X[:3], steps=3, gamma=0.1, init_epsilon=0.5, seed=1),
         dict(params=PARAMS(names=("X",)), X=T(last="d", ndims=(1, 2), names=("params",)), basis=T(optional=True),
              steps=INT(low=1), gamma=FLOAT(low=0.0, high=1.0, strict_low=True, strict_high=True), init_epsilon=POS(tensor_ok=True),
              seed=SEED()),
         slow=True, f32="run"),
    # maxmargin
    Case("maxmargin.augmented_gram", maxmargin.augmented_gram, dict(X=X), dict(X=T(rows="n"))),
    Case("maxmargin.parameter_norm_sq", maxmargin.parameter_norm_sq, dict(params=P_ROB), dict(params=PARAMS())),
    Case("maxmargin.normalized_margin", maxmargin.normalized_margin, dict(params=P_ROB, X=XO, y=YO),
         dict(params=PARAMS(names=("X",)), X=T(rows="n", last="d", names=("params", "y")), y=LABELS(names=("X",)))),
    Case("maxmargin.fraction_on_margin", maxmargin.fraction_on_margin, dict(params=P_ROB, X=XO, y=YO, rel_tol=0.1),
         dict(params=PARAMS(names=("X",)), X=T(rows="n", last="d", names=("params", "y")), y=LABELS(names=("X",)),
              rel_tol=NONNEG())),
    Case("maxmargin.rescale_to_unit_margin", maxmargin.rescale_to_unit_margin, dict(params=P_ROB, X=XO, y=YO),
         dict(params=PARAMS(names=("X",)), X=T(rows="n", last="d", names=("params", "y")), y=LABELS(names=("X",)))),
    Case("maxmargin.balance_layers", maxmargin.balance_layers, dict(params=P_ROB), dict(params=PARAMS())),
    Case("maxmargin.stationarity_matrix", maxmargin.stationarity_matrix, dict(params=P_ROB, X=XO, y=YO, kink_tol=1e-6),
         dict(params=PARAMS(names=("X",)), X=T(rows="n", last="d", names=("params", "y")), y=LABELS(names=("X",)),
              kink_tol=NONNEG())),
    Case("maxmargin.stationarity_residual", maxmargin.stationarity_residual,
         dict(params=P_ROB, X=XO, y=YO, lam=LAM, kink_tol=1e-6),
         dict(params=PARAMS(names=("X",)), X=T(rows="n", last="d", names=("params", "y", "lam")),
              y=LABELS(names=("X",)), lam=T(rows="n", ndims=(1,), names=("X",)), kink_tol=NONNEG())),
    Case("maxmargin.kkt_multipliers", maxmargin.kkt_multipliers, dict(params=P_ROB, X=XO, y=YO, kink_tol=1e-3, sweeps=5),
         dict(params=PARAMS(names=("X",)), X=T(rows="n", last="d", names=("params", "y")), y=LABELS(names=("X",)),
              kink_tol=NONNEG(), sweeps=INT(low=1)), f32="run"),
    Case("maxmargin.construct_kkt_point", maxmargin.construct_kkt_point,
         dict(X=XO, y=YO, groups=[[0, 2], [1, 3]], tol=1e-9),
         dict(X=T(rows="n", names=("y", "groups")), y=LABELS(names=("X", "groups")), tol=NONNEG(), groups=OTHER),
         empty="skip"),
    Case("maxmargin.certified_kkt_point", maxmargin.certified_kkt_point,
         dict(params=P_ROB, X=XO, y=YO, tol=1e-5, max_rounds=3, eps=1e-9),
         dict(params=PARAMS(names=("X",)), X=T(rows="n", last="d", names=("params", "y")), y=LABELS(names=("X",)),
              tol=POS(), max_rounds=INT(low=1), eps=FLOAT(low=0.0, high=1e-3, strict_low=True, strict_high=True)),
         slow=True, f32="run", empty="skip"),
    Case("maxmargin.direction_distance", maxmargin.direction_distance, dict(first=P_ROB, second=P_ROB),
         dict(first=PARAMS(names=("second",)), second=PARAMS(names=("first",)))),
    Case("maxmargin.smoothed_normalized_margin", maxmargin.smoothed_normalized_margin,
         dict(log_loss=torch.tensor([-1.0, -5.0, -900.0], dtype=F64), norm_sq=torch.tensor([1.0, 2.0, 9.0], dtype=F64),
              n=4),
         dict(log_loss=T(rows="r", ndims=(1,), names=("norm_sq",)), norm_sq=T(rows="r", ndims=(1,), names=("log_loss",)),
              n=INT(low=1))),
    Case("maxmargin.flip_direction", maxmargin.flip_direction, dict(X=X, y=Y),
         dict(X=T(rows="n", names=("y",)), y=LABELS(names=("X",)))),
    Case("maxmargin.robust_network", maxmargin.robust_network, dict(X=XO, y=YO),
         dict(X=T(rows="n", names=("y",)), y=LABELS(names=("X",)))),
    Case("maxmargin.robust_certified_radius", maxmargin.robust_certified_radius,
         dict(X=XO, y=YO, points=XO[:3] * 0.9, labels=YO[:3]),
         dict(X=T(rows="n", last="d", names=("y", "points")), y=LABELS(names=("X",)),
              points=T(rows="q", last="d", names=("X", "labels")), labels=LABELS(rows="q", names=("points",)))),
    # separability
    Case("separability.separating_direction", separability.separating_direction, dict(params=P), dict(params=PARAMS())),
    Case("separability.key_quantity", separability.key_quantity, dict(params=P, X=X, direction=V),
         dict(params=PARAMS(names=("X", "direction")), X=T(rows="n", last="d", names=("params",)),
              direction=T(last="d", ndims=(1,), optional=True, names=("params",)))),
    Case("separability.separation_margins", separability.separation_margins, dict(direction=V, noises=X, y=Y),
         dict(direction=T(last="d", ndims=(1,), names=("noises",)), noises=T(rows="n", last="d", names=("direction", "y")),
              y=LABELS(names=("noises",)))),
    Case("separability.sample_key_quantity", separability.sample_key_quantity, dict(m=5, d=D, draws=40, seed=1, chunk=16),
         dict(m=INT(low=1, size=True, names=("d", "chunk")), d=INT(low=1, size=True, names=("m", "chunk")),
              draws=INT(low=1, size=True), seed=SEED(), chunk=INT(low=1), dtype=DTYPE())),
    Case("separability.span_complement_projector", separability.span_complement_projector, dict(X=X[:2]),
         dict(X=T(), rtol=POS(optional=True))),
    Case("separability.projected_direction", separability.projected_direction, dict(params=P, X=X[:3]),
         dict(params=PARAMS(names=("X",)), X=T(last="d", names=("params",)))),
    Case("separability.projected_key_quantity_moments", separability.projected_key_quantity_moments,
         dict(params=P, X=X, k=3),
         dict(params=PARAMS(names=("X",)), X=T(rows="n", last="d", names=("params",)), k=INT(low=0, high=D))),
    Case("separability.active_mass_fraction", separability.active_mass_fraction, dict(params=P, X=X),
         dict(params=PARAMS(names=("X",)), X=T(rows="n", last="d", names=("params",)))),
    Case("separability.projected_key_quantity_cdf", separability.projected_key_quantity_cdf,
         dict(q=Q_VALUES, params=P_TRAINED, X=X, k=3, nodes=50),
         dict(q=T(rows="n", ndims=(1,), names=("X",)), params=PARAMS(names=("X",)),
              X=T(rows="n", last="d", names=("params", "q")), k=INT(low=1, high=D), nodes=INT(low=10, size=True))),
    Case("separability.linearly_separable", separability.linearly_separable, dict(Z=X, y=Y, rtol=1e-9),
         dict(Z=T(rows="n", names=("y",)), y=LABELS(names=("Z",)), rtol=POS())),
    Case("separability.lazy_decomposition", separability.lazy_decomposition, dict(initial=P, trained=P_TRAINED, X=X),
         dict(initial=PARAMS(names=("trained", "X")), trained=PARAMS(names=("initial",)),
              X=T(rows="n", last="d", names=("initial",)))),
    # mlp, probes
    Case("mlp.MLP", lambda **kw: _seeded(mlp.MLP, **kw), dict(d_in=D, width=5, n_classes=3),
         dict(d_in=INT(low=1, size=True, names=("width",)), width=INT(low=1, size=True, names=("d_in", "n_classes")),
              n_classes=INT(low=2, size=True, names=("width",))), f32="skip"),
    Case("mlp.train_mlp", mlp.train_mlp,
         dict(X=X, y=YC, width=4, lr=0.1, epochs=2, seed=3, batch_size=4, momentum=0.5, snapshot_epochs=(0, 2),
              n_classes=3),
         dict(X=T(rows="n", names=("y",)), y=Arg("classes", rows="n", high=2, names=("X",)),
              width=INT(low=1, size=True), lr=POS(), epochs=INT(low=0, names=("snapshot_epochs",)), seed=SEED(),
              batch_size=INT(low=1), momentum=FLOAT(low=0.0, high=1.0, strict_high=True),
              n_classes=INT(low=3, names=("y",))), slow=True, f32="run"),
    Case("mlp.train_mlps", mlp.train_mlps,
         dict(X=X, y=YC, width=4, lr=0.1, epochs=2, seeds=[3, 4], batch_size=4, momentum=0.5, snapshot_epochs=(0, 2),
              n_classes=3),
         dict(X=T(rows="n", names=("y",)), y=Arg("classes", rows="n", high=2, names=("X",)),
              width=INT(low=1, size=True), lr=POS(), epochs=INT(low=0, names=("snapshot_epochs",)), seeds=OTHER,
              batch_size=INT(low=1), momentum=FLOAT(low=0.0, high=1.0, strict_high=True),
              n_classes=INT(low=3, names=("y",))), slow=True, f32="run"),
    Case("probes.true_class_probability", probes.true_class_probability, dict(model=MODEL, X=X, y=YC),
         dict(model=OTHER, X=T(rows="n", last="d", names=("y", "model")),
              y=Arg("classes", rows="n", high=2, names=("X",))), f32="skip"),
    Case("probes.relative_distance", probes.relative_distance, dict(model=MODEL, reference=MODEL),
         dict(model=OTHER, reference=OTHER), f32="skip"),
    Case("probes.probe_protocol", probes.probe_protocol,
         dict(split=DIGITS_38, lr=0.1, epochs=1, seeds=[1], width=4, batch_size=64, probe_init=False),
         dict(split=OTHER, lr=POS(), epochs=INT(low=0), seeds=OTHER, width=INT(low=1, size=True),
              batch_size=INT(low=1), probe_init=FLAG()), slow=True, f32="skip"),
    Case("probes.linear_probe", probes.linear_probe,
         dict(F_train=F_TRAIN, y_train=Y_TRAIN, F_test=F_TEST, y_test=Y_TEST, C=0.5, max_iter=200),
         dict(F_train=T(rows="ntr", names=("y_train", "F_test")), y_train=Arg("classes", rows="ntr", names=("F_train",)),
              F_test=T(rows="nte", names=("y_test", "F_train")), y_test=Arg("classes", rows="nte", names=("F_test",)),
              C=POS(), max_iter=INT(low=1)), slow=True, f32="run", empty="skip"),
    # plotting
    Case("plotting.decision_grid_2d", plotting.decision_grid_2d, dict(params=P2, lim=(-1.0, 1.0), res=5),
         dict(params=PARAMS(), res=INT(low=2, size=True), lim=Arg("lim"))),
    Case("plotting.plot_decision_boundary_2d", lambda **kw: plotting.plot_decision_boundary_2d(axes("2d"), **kw),
         dict(params=P2, X=X2, y=Y2, res=5, data_line=torch.tensor([1.0, 1.0], dtype=F64)),
         dict(params=PARAMS(), X=T(rows="n", last="d2", names=("y",)), y=LABELS(names=("X",)), res=INT(low=2, size=True),
              lim=Arg("lim"), data_line=T(ndims=(1,), last="d2", optional=True)), slow=True, f32="run"),
    Case("plotting.zero_crossings_3d", plotting.zero_crossings_3d, dict(params=P3, res=4, res_z=5),
         dict(params=PARAMS(), res=INT(low=2, size=True, names=("res_z",)), res_z=INT(low=2, size=True, names=("res",)),
              lim=Arg("lim"))),
    Case("plotting.plot_decision_surface_3d", lambda **kw: plotting.plot_decision_surface_3d(axes("3d"), **kw),
         dict(params=P3, X=X3, y=Y3, res=4), dict(params=PARAMS(), X=T(rows="n", last="d3", names=("y",)),
                                                  y=LABELS(names=("X",)), res=INT(low=2, size=True), lim=Arg("lim")),
         slow=True, f32="run"),
    Case("plotting.decision_surface_mesh", plotting.decision_surface_mesh, dict(params=P3, res=4),
         dict(params=PARAMS(), res=INT(low=2, size=True), lim=Arg("lim")), f32="run"),
    Case("plotting.decision_surfaces_plotly",
         lambda params, **kw: plotting.decision_surfaces_plotly({"net": params}, **kw),
         dict(params=P3, X=X3, y=Y3, res=4, height=300),
         dict(params=PARAMS(), X=T(rows="n", last="d3", names=("y",)), y=LABELS(names=("X",)),
              res=INT(low=2, size=True), height=INT(low=100, high=4000), lim=Arg("lim")), slow=True, f32="run"),
    Case("plotting.normal_flip_map", plotting.normal_flip_map, dict(params=P3, height=0.5, res=4, max_norm=2.0, chunk=5),
         dict(params=PARAMS(), height=FLOAT(), res=INT(low=2, size=True), max_norm=POS(), chunk=INT(low=1),
              lim=Arg("lim"))),
    Case("plotting.plot_normal_flip_map", lambda **kw: plotting.plot_normal_flip_map(axes("2d"), **kw),
         dict(params=P3, X=X3, y=Y3, height=0.5, res=4, max_norm=2.0, vmin=0.01),
         dict(params=PARAMS(), X=T(rows="n", last="d3", names=("y",)), y=LABELS(names=("X",)), height=FLOAT(),
              res=INT(low=2, size=True), max_norm=POS(names=("vmin",)), vmin=POS(names=("max_norm",)), lim=Arg("lim")),
         slow=True, f32="run"),
    Case("plotting.plot_orthogonal_gradient_scale", lambda **kw: plotting.plot_orthogonal_gradient_scale(axes("2d"), **kw),
         dict(scale=SCALE_K, gperp=GPERP_K, uI=UI_K, ell=4),
         dict(scale=T(rows="k", ndims=(1,)), gperp=T(rows="k", ndims=(1,)), uI=T(rows="k", ndims=(1,)),
              ell=INT(low=1)), slow=True, f32="run"),
    Case("plotting.plot_flip_norms_scale", lambda **kw: plotting.plot_flip_norms_scale(axes("2d"), **kw),
         dict(scale=SCALE_K, flip=FLIP_K, radius=RADIUS_K, data_norm=3.0),
         dict(scale=T(rows="k", ndims=(1,)), flip=T(rows="k", ndims=(1,)), radius=T(rows="k", ndims=(1,)),
              data_norm=POS(optional=True)), slow=True, f32="run"),
    # notebook
    Case("notebook.progress_enabled", notebook.progress_enabled, {}, {}),
    Case("notebook.glue", notebook.glue, dict(name="ratio", value=1.5), {}),
    Case("notebook.progress", lambda **kw: list(ol.progress(range(3), **kw)), dict(desc="x", total=3),
         dict(total=INT(low=0, optional=True))),
    # manifolds, curved data (chapter curved_data)
    Case("manifolds.SphereManifold", manifolds.SphereManifold, dict(plane=SPHERE.plane, centre=SPHERE.centre, radius=1.5),
         dict(plane=Arg("sub", names=("SphereManifold.plane", "SphereManifold.centre")),
              centre=T(last="d", ndims=(1,), names=("SphereManifold.centre",)),
              radius=POS(names=("SphereManifold.radius",))), f32="run"),
    Case("manifolds.sphere_manifold", manifolds.sphere_manifold, dict(d=D, k=2, radius=1.5, seed=11),
         dict(d=INT(low=4, size=True, names=("k",)), k=INT(low=2, high=D - 2), radius=POS(names=("norm",)), seed=SEED(),
              norm=POS(optional=True, names=("radius",)), dtype=DTYPE())),
    Case("manifolds.inward_normal", manifolds.inward_normal, dict(sphere=SPHERE, X=XS),
         dict(sphere=OTHER, X=T(rows="n", last="d"))),
    Case("manifolds.antipodes", manifolds.antipodes, dict(sphere=SPHERE, X=XS), dict(sphere=OTHER, X=T(rows="n", last="d"))),
    Case("manifolds.normal_split", manifolds.normal_split, dict(sphere=SPHERE, X=XS, G=X),
         dict(sphere=OTHER, X=T(rows="n", last="d", names=("G",)), G=T(rows="n", last="d", names=("X",)))),
    Case("data.sample_sphere_manifold", data.sample_sphere_manifold, dict(sphere=SPHERE, n=N, seed=12),
         dict(sphere=OTHER, n=INT(low=1, size=True), seed=SEED())),
    # dynamics (chapter optimisers)
    Case("dynamics.snapshots", dynamics.snapshots,
         dict(params=P_STACK, X=X, y=Y, config=training.TrainConfig(lr=0.3, max_steps=2), steps=[0, 2], backend="reference"),
         dict(params=PARAMS(single=False, names=("X",)), X=T(rows="n", last="d", ndims=(2, 3), names=("params", "y")),
              y=LABELS(names=("X",)),
              backend=CHOICE(*training.BACKENDS), sub=Arg("sub", optional=True, names=("X", "params")),
              config=OTHER, steps=OTHER, margins=OTHER), slow=True, f32="run"),
    Case("dynamics.Snapshots.at", lambda e, k: _SNAPSHOTS.at(e, k), dict(e=1, k=0),
         dict(e=INT(low=-2, high=1), k=INT(low=-2, high=1))),
    Case("dynamics.orthogonal_profile", dynamics.orthogonal_profile, dict(params=P, sub=SUB, X=X, beta=0.4, max_norm=50.0),
         dict(params=PARAMS(names=("X", "sub")), sub=SUBS(), X=T(rows="n", last="d", names=("params",)),
              beta=POS(optional=True), max_norm=POS(inf_ok=True)), f32="run"),
    Case("dynamics.loglog_slope", dynamics.loglog_slope, dict(x=LOG_X, y=2 * LOG_X**0.5),
         dict(x=OTHER, y=OTHER)),   # tensors, arrays or lists of numbers (checked in test_dynamics.py)
    # deep networks (chapter depth)
    Case("deep.DeepParams", lambda W1, W2, b1, b2, u, c: deep.DeepParams((W1, W2), (b1, b2), u, c),
         dict(W1=DP.weights[0], W2=DP.weights[1], b1=DP.biases[0], b2=DP.biases[1], u=DP.u, c=DP.c),
         dict(W1=T(names=_DEEP_FIELDS), W2=T(names=_DEEP_FIELDS), b1=T(ndims=(1,), names=("biases",)),
              b2=T(ndims=(1,), names=("biases",)), u=T(ndims=(1,)), c=T(ndims=(0,)))),
    Case("deep.DeepParams.member", lambda params, e: params.member(e), dict(params=DP_STACK, e=1),
         dict(e=INT(low=-2, high=1))),
    Case("deep.DeepParams.stack", lambda nets: deep.DeepParams.stack(nets), dict(nets=[DP, DP]), dict(nets=OTHER)),
    Case("deep.DeepParams.norm_sq", lambda params: params.norm_sq(), dict(params=DP), dict()),
    Case("deep.init_network", deep.init_network,
         dict(d=D, widths=[5, 4], seed=13, beta=0.3, gain=1.5, second_layer="gaussian"),
         dict(d=INT(low=1, size=True, names=("widths",)), widths=OTHER, seed=SEED(), beta=POS(optional=True),
              gain=POS(), second_layer=CHOICE("sign", "gaussian"), dtype=DTYPE())),
    *[Case(f"deep.{name}", getattr(deep, name), dict(params=DP, X=X),
           dict(params=PARAMS(single=False, names=("X",)), X=T(rows="n", last="d", ndims=(1, 2), names=("params",))))
      for name in ("preactivations", "network_output", "backprop_vector", "input_gradient")],
    Case("deep.orthogonal_gradient", deep.orthogonal_gradient, dict(params=DP, sub=SUB, X=X),
         dict(params=PARAMS(single=False, names=("X", "sub")), sub=SUBS(),
              X=T(rows="n", last="d", ndims=(1, 2), names=("params",)))),
    Case("deep.train_margin", deep.train_margin, dict(params=DP, X=X, y=Y),
         dict(params=PARAMS(single=False, names=("X",)), X=T(rows="n", last="d", names=("params", "y")),
              y=LABELS(names=("X",)))),
    Case("deep.flip_norm_along", deep.flip_norm_along,
         dict(params=DP, X=X, direction=Q[:, 0], side="both", max_norm=50.0),
         dict(params=PARAMS(names=("X", "direction")), X=T(rows="n", last="d", names=("params", "direction")),
              direction=T(last="d", ndims=(1, 2)), side=CHOICE("descend", "both"), max_norm=POS(inf_ok=True))),
    Case("deep.universal_direction", deep.universal_direction, dict(params=DP, sub=SUB, X=X),
         dict(params=PARAMS(names=("X", "sub")), sub=SUBS(), X=T(rows="n", last="d", names=("params",)))),
    Case("deep.orthogonal_cosine_cdf", deep.orthogonal_cosine_cdf, dict(c=0.4, rho=0.3, ell=3, nodes=20),
         dict(c=FLOAT(low=-1.0, high=1.0, strict_low=True, strict_high=True, tensor_ok=True),
              rho=FLOAT(low=-1.0, high=1.0, strict_low=True, strict_high=True), ell=INT(low=2),
              nodes=INT(low=10, high=5000))),
    Case("deep.orthogonal_cosine_quantile", deep.orthogonal_cosine_quantile,
         dict(q=0.3, rho=0.3, ell=3, nodes=20, iters=10),
         dict(q=FLOAT(low=0.0, high=1.0, strict_low=True, strict_high=True),
              rho=FLOAT(low=-1.0, high=1.0, strict_low=True, strict_high=True), ell=INT(low=2),
              nodes=INT(low=10, high=5000), iters=INT(low=1))),
    Case("deep.arc_cosine_alignment", deep.arc_cosine_alignment, dict(n_hidden=3, rho0=0.2),
         dict(n_hidden=INT(low=1), rho0=FLOAT(low=-1.0, high=1.0))),
    Case("deep.train", ol.train,       # deep networks through the library's one training call
         dict(params=DP, X=X, y=Y, config=training.TrainConfig(lr=0.5, max_steps=3), backend="reference"),
         dict(params=PARAMS(single=False, names=("X",)), X=T(rows="n", last="d", names=("params", "y")),
              y=LABELS(names=("X",)), backend=CHOICE("auto", "reference"), coordinates=CHOICE("auto", "full"),
              sub=Arg("sub", optional=True, names=("X", "params")), dtype=Arg("dtype", optional=True, variants=False),
              config=OTHER, stats=OTHER, device=OTHER), slow=True),
    # other norms (chapter other_norms)
    *[Case(f"norms.{name}", getattr(norms, name), dict(k=7), dict(k=INT(low=1)))
      for name in ("expected_gaussian_norm", "expected_gaussian_max", "expected_linf_norm", "expected_l1_norm")],
    Case("norms.linf_tail_bound", norms.linf_tail_bound, dict(k=7, t=2.0), dict(k=INT(low=1), t=NONNEG())),
    Case("norms.is_coordinate_basis", norms.is_coordinate_basis, dict(basis=Q_COORD), dict(basis=T())),
    Case("norms.perp_dual_norm", norms.perp_dual_norm, dict(sub=SUB, g=G_IN, norm="linf"),
         dict(sub=SUBS(), g=T(rows="n", last="d", ndims=(1, 2), names=("sub",)), norm=CHOICE("linf", "l1")), slow=True),
    Case("norms.exact_min_linf_milp", norms.exact_min_linf_milp,
         dict(params=P2, x0=X2[1], radius=1.5, start=LINF_START, node_limit=2000, time_limit=20.0),
         dict(params=PARAMS(names=("x0", "start")), x0=T(last="d", ndims=(1,), names=("params", "start")),
              radius=POS(optional=True, names=("start",)), basis=T(optional=True, names=("params",)),
              start=T(last="d", ndims=(1,), optional=True, names=("params", "radius")), node_limit=INT(low=1),
              time_limit=POS(), verbose=FLAG()),
         slow=True, f32="run"),
    Case("norms.linf_pgd_min_epsilon", norms.linf_pgd_min_epsilon,
         dict(params=P, X=X[:3], basis=Q_COORD, upper=torch.full((3,), 20.0, dtype=F64), steps=2, bisections=2, seed=1),
         dict(params=PARAMS(names=("X", "basis")), X=T(rows="n", last="d", names=("params", "upper")),
              basis=T(names=("params",)), upper=T(rows="n", ndims=(1,), names=("X",)), steps=INT(low=1),
              rel_stepsize=POS(), bisections=INT(low=1), seed=SEED()),
         slow=True, f32="run"),
    # real images (chapter real_images)
    Case("image_subspaces.zero_pixels", image_subspaces.zero_pixels, dict(X=XZ), dict(X=T(rows="n"))),
    Case("image_subspaces.pixel_subspace", image_subspaces.pixel_subspace, dict(zero=ZERO),
         dict(zero=OTHER, dtype=DTYPE())),   # a bool mask (checked in test_image_subspaces.py)
    Case("image_subspaces.balanced_subset", image_subspaces.balanced_subset, dict(X=X, y=Y, per_class=2, seed=3),
         dict(X=T(rows="n", names=("y",)), y=Arg("other", rows="n"), per_class=INT(low=1), seed=SEED())),
    Case("image_subspaces.pixel_gperp_statistic", image_subspaces.pixel_gperp_statistic,
         dict(params=P, zero=ZERO, X=XZ, beta=0.4),
         dict(params=PARAMS(single=False, names=("X", "zero")), zero=OTHER,
              X=T(rows="n", last="d", names=("params",)), beta=POS(optional=True))),
    Case("image_subspaces.data_spectrum", image_subspaces.data_spectrum, dict(X=X), dict(X=T(rows="n")),
         f32="run"),   # the null space's basis (and the singular vectors' signs) depend on the rounding
    Case("image_subspaces.pca_subspace", image_subspaces.pca_subspace, dict(spectrum=SPECTRUM, k=3),
         dict(spectrum=OTHER, k=INT(low=1, high=D - 1))),
    Case("image_subspaces.tail_gperp_statistic", image_subspaces.tail_gperp_statistic,
         dict(params=P, X=X, spectrum=SPECTRUM, ks=[1, 4], beta=0.4),
         dict(params=PARAMS(single=False, names=("X", "spectrum")), X=T(rows="n", last="d", names=("params",)),
              spectrum=OTHER, ks=OTHER, beta=POS(optional=True))),
    Case("image_subspaces.movement_ratios", image_subspaces.movement_ratios,
         dict(initial=P, trained=P_TRAINED, directions=SPECTRUM.directions),
         dict(initial=PARAMS(single=False, names=("trained", "directions")),
              trained=PARAMS(single=False, names=("initial", "directions")), directions=T(names=("initial",)))),
    Case("image_subspaces.gradient_energy_ratios", image_subspaces.gradient_energy_ratios,
         dict(initial=P, trained=P_TRAINED, X=X, directions=SPECTRUM.directions),
         dict(initial=PARAMS(names=("trained", "X", "directions")),
              trained=PARAMS(names=("initial", "X", "directions")),
              X=T(rows="n", last="d", names=("initial", "trained")), directions=T(names=("initial", "trained")))),
    Case("image_subspaces.effective_codimension", image_subspaces.effective_codimension,
         dict(initial=P, trained=P_TRAINED, spectrum=SPECTRUM, X=X, threshold=1.0),
         dict(initial=PARAMS(names=("trained", "X", "spectrum")), trained=PARAMS(names=("initial", "X", "spectrum")),
              spectrum=OTHER, X=T(rows="n", last="d", names=("initial", "trained")), threshold=POS())),
    Case("image_subspaces.multiclass_gperp_statistic", image_subspaces.multiclass_gperp_statistic,
         dict(model=MODEL, zero=ZERO, X=XZ, y=YC, init_variance=0.05),
         dict(model=OTHER, zero=OTHER, X=T(rows="n", last="d", names=("y", "model", "zero")),
              y=Arg("classes", rows="n", high=2, names=("X",)), init_variance=POS(optional=True), kurtosis=POS())),
    Case("image_subspaces.class_direction", image_subspaces.class_direction, dict(model=MODEL, zero=ZERO, target=1),
         dict(model=OTHER, zero=OTHER, target=INT(low=0, high=2))),
    Case("image_subspaces.fooling_rates", image_subspaces.fooling_rates,
         dict(model=MODEL, X=X, direction=G_IN[0], norms=[0.0, 1.0, 5.0], target=0),
         dict(model=OTHER, X=T(rows="n", last="d", names=("model",)), direction=T(last="d", ndims=(1,)),
              norms=OTHER, target=INT(low=0, high=2, optional=True))),
    Case("image_subspaces.first_order_target_norms", image_subspaces.first_order_target_norms,
         dict(model=MODEL, X=X, direction=G_IN[0], target=0),
         dict(model=OTHER, X=T(rows="n", last="d", names=("model",)), direction=T(last="d", ndims=(1,)),
              target=INT(low=0, high=2))),
    # notebook: display helpers
    Case("notebook.show_plotly", lambda div_id: _show_plotly(div_id), dict(div_id="fig"), {}),
    Case("notebook.glue_range", notebook.glue_range, dict(name="steps", values=[3.0, 1.0, 2.5], digits=1),
         dict(name=OTHER, values=OTHER, digits=INT(low=0))),
]

_HISTORY = ol.train(P, X, Y, training.TrainConfig(lr=0.5, max_steps=4, record_every=2), backend="reference").history
_SNAPSHOTS = dynamics.snapshots([P, P], X, Y, training.TrainConfig(lr=0.3, max_steps=2), steps=[1, 2], backend="reference")
_STACK_RESULT = ol.train(P_STACK, X, Y, training.TrainConfig(lr=0.5, max_steps=2), backend="reference")

BY_NAME = {c.name: c for c in CASES}


# -------------------------------------------------------------------------------------- comparison

def same(a: Any, b: Any, *, rtol: float = 1e-12, atol: float = 1e-12, floor: float = 0.0) -> bool:
    """Whether two results agree (tensors to ``rtol``/``atol`` relative to their scale; nan equals nan)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape:
            return False
        a, b = a.detach().cpu(), b.detach().cpu()
        if a.dtype == torch.bool or b.dtype == torch.bool or not (a.is_floating_point() or b.is_floating_point()):
            return bool((a == b).all())
        a64, b64 = a.to(F64), b.to(F64)
        finite = torch.isfinite(b64)
        scale = float(b64[finite].abs().max()) if bool(finite.any()) else 1.0
        return bool(torch.allclose(a64, b64, rtol=rtol, atol=atol * max(scale, floor, 1e-300), equal_nan=True))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return same(torch.as_tensor(np.asarray(a, dtype=float)), torch.as_tensor(np.asarray(b, dtype=float)),
                    rtol=rtol, atol=atol, floor=floor)
    if isinstance(a, float) or isinstance(b, float):
        if not isinstance(a, (float, int)) or not isinstance(b, (float, int)):
            return False
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=rtol, abs_tol=atol * max(abs(b), floor, 1e-300)) or a == b
    if isinstance(a, (bool, int, str, type(None), torch.dtype)):
        return a == b
    if isinstance(a, torch.nn.Module):
        sa, sb = a.state_dict(), b.state_dict()
        return sa.keys() == sb.keys() and all(same(sa[k], sb[k], rtol=rtol, atol=atol, floor=floor) for k in sa)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], rtol=rtol, atol=atol, floor=floor) for k in a)
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, z, rtol=rtol, atol=atol, floor=floor) for x, z in zip(a, b))
    if hasattr(a, "__dataclass_fields__"):
        return type(a) is type(b) and all(same(getattr(a, f), getattr(b, f), rtol=rtol, atol=atol, floor=floor)
                                          for f in a.__dataclass_fields__
                                          if not isinstance(getattr(a, f), (training.TrainConfig, tuple)) or f != "config")
    return True  # matplotlib artists and other opaque objects: not compared


_BASE: dict = {}


def base_result(case: Case) -> Any:
    """The result of the case's valid call (computed once)."""
    if case.name not in _BASE:
        _BASE[case.name] = case.call()
    return _BASE[case.name]


# --------------------------------------------------------------------------------- bad and edge values

BAD_DTYPES = (torch.int64, torch.int32, torch.uint8, torch.bool, torch.float16, torch.bfloat16, torch.complex128)
HUGE = 10**13   # a size whose array would need petabytes


def default_of(case: Case, arg: str) -> Any:
    """The value the valid call uses for ``arg`` (its given value, else the function's default)."""
    import inspect

    if arg in case.args:
        return case.args[arg]
    try:
        p = inspect.signature(case.fn).parameters.get(arg)
    except (TypeError, ValueError):
        p = None
    return None if p is None or p.default is inspect.Parameter.empty else p.default


def allowed_names(case: Case, arg: str, group: Optional[str] = None) -> tuple:
    """Names an error about ``arg`` may start with: the argument, its declared peers, and for a row or
    dimension mismatch every argument of that group."""
    s = case.spec[arg]
    names = {arg, *s.names}
    if group:
        for a, t in case.spec.items():
            if getattr(t, group) is not None and getattr(t, group) == getattr(s, group):
                names.add(a)
    return tuple(sorted(names))


_LEAD = __import__("re").compile(r"^([\w.\[\]]+(?:(?:, | and | or )[\w.\[\]]+)*)")


def names_argument(message: str, names: Sequence[str]) -> bool:
    """Whether ``message`` starts with one of ``names`` (``Class.name``, ``name.field`` and ``name[i]`` count)."""
    m = _LEAD.match(message)
    if not m:
        return False
    for token in __import__("re").split(r", | and | or ", m.group(1)):
        parts = [p.split("[")[0] for p in token.split(".")]
        if any(p in names for p in parts):
            return True
    return False


def perturbed(t: torch.Tensor, value: float) -> torch.Tensor:
    """``t`` with its first entry replaced by ``value``."""
    out = t.detach().clone()
    if out.numel():
        out.view(-1)[0] = value
    return out


@dataclass
class Probe:
    """One hostile call: ``overrides`` replace the valid arguments; the answer must be an error naming one of
    ``names`` (``expect="error"``), or equal the result of the valid call with ``reference`` overrides
    (``expect="same"``, to ``rtol``), or just not fail (``expect="run"``).  ``equivalent``: for an error
    probe, a valid call whose result is also an acceptable answer (an integer tensor may be converted)."""

    issue: str           # the issue's class: "dtype", "nan", "dataclass", "flags", "valid", "other"
    label: str
    arg: str
    overrides: dict
    expect: str
    names: tuple = ()
    reference: Optional[dict] = None
    equivalent: Optional[dict] = None
    rtol: float = 1e-12
    floor: float = 0.0   # tensors are compared relative to max(their scale, floor)


def _f32(v: Any) -> Any:
    if isinstance(v, torch.Tensor) and v.dtype == F64:
        return v.to(torch.float32)
    if isinstance(v, ol.TwoLayerParams) and v.W.dtype == F64:
        return ol.TwoLayerParams(*(t.to(torch.float32) for t in (v.W, v.b, v.u, v.c)))
    if isinstance(v, ol.Subspace) and v.basis.dtype == F64:
        return ol.Subspace(v.basis.to(torch.float32), v.perp_basis.to(torch.float32))
    if isinstance(v, deep.DeepParams) and v.W1.dtype == F64:
        return v._from_tensors([t.to(torch.float32) for t in v.tensors()])
    return v


def _grad(v: Any) -> Any:
    if isinstance(v, torch.Tensor) and v.is_floating_point():
        return v.detach().clone().requires_grad_(True)
    if isinstance(v, ol.TwoLayerParams):
        return ol.TwoLayerParams(*(_grad(t) for t in (v.W, v.b, v.u, v.c)))
    if isinstance(v, deep.DeepParams):
        return v._from_tensors([_grad(t) for t in v.tensors()])
    return v


NETWORKS = (ol.TwoLayerParams, deep.DeepParams)    # the values of a ``params`` argument


def bad_network(p: Any, kind: str) -> Any:
    """A value that is not a suitable network where ``p`` is: ``"tuple"`` (its tensors), ``"dict"``, ``"stack"``
    (two copies of ``p``) or ``"other d"`` (a network of another input dimension), for either kind of network."""
    if isinstance(p, deep.DeepParams):
        return {"tuple": lambda: tuple(p.tensors()), "dict": lambda: {"weights": p.weights},
                "stack": lambda: deep.DeepParams.stack([p, p]),
                "other d": lambda: deep.init_network(p.d + 1, p.widths, seed=0)}[kind]()
    return {"tuple": lambda: (p.W, p.b, p.u, p.c), "dict": lambda: {"W": p.W},
            "stack": lambda: ol.TwoLayerParams.stack([p, p]),
            "other d": lambda: ol.init_network(p.d + 1, p.m, seed=0)}[kind]()


def _has_partner(case: Case, arg: str) -> bool:
    """Whether ``arg`` (a network or subspace) must agree in dimension with another argument of the case."""
    return any(b != arg and (s.kind in ("params", "sub") or s.last) and (b in case.args or s.kind == "sub")
               for b, s in case.spec.items())


def _partner_names(case: Case, arg: str) -> tuple:
    return tuple(sorted({arg, *case.spec[arg].names, *(b for b, s in case.spec.items()
                                                        if s.kind in ("params", "sub") or s.last)}))


def probes(case: Case) -> list[Probe]:
    """Every hostile call of the catalogue for one case (the audit runs them all; the property tests draw)."""
    out: list[Probe] = []
    issue_of = lambda k: "dataclass" if case.name in DATACLASSES else k  # noqa: E731
    for a, s in case.spec.items():
        v = default_of(case, a)
        err = lambda issue, label, val, group=None, equivalent=None: out.append(  # noqa: E731
            Probe(issue_of(issue), label, a, {a: val}, "error", allowed_names(case, a, group), equivalent=equivalent))
        ok = lambda label, val, ref=None, rtol=1e-12: out.append(  # noqa: E731
            Probe(issue_of("valid"), label, a, {a: val}, "same", reference=ref or {}, rtol=rtol))
        if s.kind == "tensor" and isinstance(v, torch.Tensor):
            for dt in BAD_DTYPES:
                err("dtype", f"{dt}", v.to(dt), equivalent={a: v.to(dt).to(F64)} if not dt.is_complex else None)
            err("nan", "nan entry", perturbed(v, math.nan))
            err("nan", "inf entry", perturbed(v, math.inf))
            if v.ndim:
                err("other", "list", v.tolist())
                err("other", "ndarray", v.numpy())
            bad_ranks = [r for r in range(0, max(s.ndims) + 2) if r not in s.ndims] if s.ndims else []
            for r in bad_ranks[-2:]:
                t = v.reshape(-1)[0] if r == 0 else v.reshape((1,) * max(0, r - v.ndim) + tuple(v.shape)) \
                    if r >= v.ndim else v.reshape(-1)[: max(1, v.numel())].reshape(-1)
                if t.ndim == r:
                    err("other", f"rank {r}", t, group="rows")
            if s.last:
                err("other", "last axis +1", torch.cat([v, torch.zeros(*v.shape[:-1], 1, dtype=v.dtype)], -1),
                    group="last")
            if s.rows and v.ndim >= 1 and v.shape[0] > 1 and sum(t.rows == s.rows for t in case.spec.values()) > 1:
                err("other", "one row short", v[:-1], group="rows")
            if not s.optional:
                err("other", "None", None)
            ok("requires_grad", _grad(v))
        elif s.kind == "labels" and isinstance(v, torch.Tensor):
            for label, bad in (("bool", v > 0), ("uint8 0/1", (v > 0).to(torch.uint8)), ("uint8 of -1", v.to(torch.int8).to(torch.uint8)),
                               ("float 0/1", (v > 0).to(F64)), ("float 0.5 y", 0.5 * v), ("float 2 y", 2.0 * v),
                               ("complex", v.to(torch.complex128)), ("nan", perturbed(v, math.nan))):
                err("dtype", f"labels {label}", bad)
            err("other", "labels 2-D", v[None, :], group="rows")
            err("other", "labels one short", v[:-1], group="rows")
            err("other", "labels list", v.tolist())
            for dt in (torch.int64, torch.int8, torch.float32):
                ok(f"labels {dt}", v.to(dt))
        elif s.kind == "classes" and isinstance(v, torch.Tensor):
            for label, bad in (("float", v.to(F64)), ("bool", v > 0), ("negative", perturbed(v, -1)),
                               ("one short", v[:-1])) + ((("too large", perturbed(v, 99)),) if s.high is not None else ()):
                err("dtype", f"classes {label}", bad, group="rows" if label == "one short" else None)
            ok("classes int32", v.to(torch.int32))
        elif s.kind == "params" and isinstance(v, NETWORKS):
            err("other", "tuple", bad_network(v, "tuple"))
            err("other", "None", None)
            if s.single:
                err("other", "stack", bad_network(v, "stack"))
            if _has_partner(case, a):
                out.append(Probe(issue_of("other"), "other d", a, {a: bad_network(v, "other d")}, "error",
                                 _partner_names(case, a)))
            ok("requires_grad", _grad(v))
        elif s.kind == "sub":
            err("other", "not a Subspace", "P")
            if not s.optional:
                err("other", "None", None)
            if _has_partner(case, a):
                out.append(Probe(issue_of("other"), "other d", a, {a: ol.random_subspace(D + 1, 1, seed=0)}, "error",
                                 _partner_names(case, a)))
        elif s.kind in ("int", "seed"):
            if s.kind == "seed":
                for bad in (-1, 2**64, 1.5, True, "0", math.nan):
                    err("valid" if bad == 2**64 else "other", f"seed {bad!r}", bad)
                if v is not None:
                    out.append(Probe(issue_of("valid"), "seed 2**64-1", a, {a: 2**64 - 1}, "run"))
                    out.append(Probe(issue_of("valid"), "seed 2**63+1", a, {a: 2**63 + 1}, "run"))
                    ok("np.uint64 seed", np.uint64(v))
            else:
                if s.low is not None:
                    err("other", f"below {s.low}", int(s.low) - 1)
                if s.high is not None:
                    err("other", f"above {s.high}", int(s.high) + 1)
                for bad in (2.5, "3", True, math.nan, math.inf):
                    err("nan" if bad in (math.nan, math.inf) or bad != bad else "other", f"int {bad!r}", bad)
                if s.size:
                    err("valid", "huge size", HUGE)
            if not s.optional:
                err("other", "None", None)
            if v is not None and s.kind == "int":
                ok("np.int64", np.int64(v))
                if -2**31 <= v < 2**31:
                    ok("np.int32", np.int32(v))
                ok("0-d int tensor", torch.tensor(v))
        elif s.kind == "float":
            for bad in (math.nan, -math.inf) + (() if s.inf_ok else (math.inf,)):
                err("nan", f"float {bad}", bad)
            for bad in ("0.5", True, 1j) + (() if s.tensor_ok else (torch.tensor([0.1, 0.2], dtype=F64),)):
                err("other", f"float {bad!r}", bad)
            if not s.optional:
                err("other", "None", None)
            if s.low is not None:
                err("other", f"below {s.low}", s.low - 1.0)
                if s.strict_low:
                    err("other", f"at {s.low}", s.low)
            if s.high is not None:
                err("other", f"above {s.high}", s.high + 1.0)
                if s.strict_high:
                    err("other", f"at {s.high}", s.high)
            if v is not None:
                ok("np.float64", np.float64(v))
                ok("np.float32", np.float32(v), ref={a: float(np.float32(v))})
                if not s.tensor_ok:
                    ok("0-d tensor", torch.tensor(v, dtype=F64))
                ok("0-d ndarray", np.array(v))
        elif s.kind == "flag":
            for bad in ("no", "yes", 1, 0, None):
                err("flags", f"flag {bad!r}", bad)
            if v is not None:
                ok("np.bool_", np.bool_(v))
        elif s.kind == "choice":
            for bad in ("nope", 1, None, [s.choices[0]]):
                err("flags", f"choice {bad!r}", bad)
        elif s.kind == "dtype":
            for bad in (torch.int64, torch.float16, torch.complex128, "float64", np.float64):
                err("dtype", f"dtype {bad!r}", bad)
            if s.variants:
                out.append(Probe(issue_of("valid"), "dtype float32", a, {a: torch.float32}, "run"))
        elif s.kind == "lim":
            for bad in ((math.nan, 1.0), (0.0, math.inf), (1.0, 0.0), (0.0,), "ab", None):
                err("nan" if bad in ((math.nan, 1.0), (0.0, math.inf)) else "other", f"lim {bad!r}", bad)
    # float32 versions of every floating input at once
    if case.f32 != "skip" and any(isinstance(v, (torch.Tensor, ol.Subspace) + NETWORKS) for v in case.args.values()):
        f32 = {k: _f32(v) for k, v in case.args.items()}
        if any(f32[k] is not case.args[k] for k in f32):
            out.append(Probe("valid", "float32 inputs", "*", f32, "same" if case.f32 == "equal" else "run", reference={},
                             rtol=1e-3, floor=1.0))
    return out


DATACLASSES = ("subspaces.Subspace", "network.TwoLayerParams", "training.TrainConfig", "deep.DeepParams")


# ------------------------------------------------------------------------------- the public surface

RESULT_TYPES = {"data.TeacherProblem", "datasets.ImageSplit", "training.MarginNotReached", "training.TrainHistory",
                "training.TrainResult", "perturbations.FlipNorms", "perturbations.UniversalFlips", "perturbations.InitialAlignment",
                "theory.UniversalHypotheses", "attacks.MilpResult", "attacks.AttackResult",
                "maxmargin.KKTFit", "separability.LazyDecomposition", "mlp.MLPRun", "probes.ProbeResult",
                "maxmargin.CertifiedKKT", "manifolds.NormalSplit", "dynamics.Snapshots",
                "dynamics.OrthogonalProfile", "image_subspaces.Spectrum", "image_subspaces.EffectiveCodimension"}
MODULES = ("subspaces", "data", "datasets", "network", "training", "theory", "gradients", "perturbations", "attacks",
           "maxmargin", "separability", "mlp", "probes", "plotting", "notebook", "manifolds", "dynamics", "deep",
           "norms", "image_subspaces")


def public_names() -> dict:
    """Module -> its public names (its ``__all__``, else the functions and classes it defines)."""
    import importlib
    import inspect

    out = {}
    for m in MODULES:
        mod = importlib.import_module(f"ortho_lib.{m}")
        names = getattr(mod, "__all__", None) or [
            k for k, o in vars(mod).items() if not k.startswith("_") and getattr(o, "__module__", None) == mod.__name__
            and (inspect.isfunction(o) or inspect.isclass(o))]
        out[m] = list(names)
    return out


def public_callables() -> list[str]:
    """``module.name`` of every public function and class that takes user input (result types and constants
    such as ``image_subspaces.UNIFORM_KURTOSIS`` excluded)."""
    import importlib

    return [f"{m}.{k}" for m, names in public_names().items() for k in names if f"{m}.{k}" not in RESULT_TYPES
            and callable(getattr(importlib.import_module(f"ortho_lib.{m}"), k))]
