r"""A one-hidden-layer multi-class ReLU network for the real-data protocols, trained by mini-batch SGD.

$x \mapsto A\,\sigma(Vx + b) + c$ with ``n_classes`` logits, cross-entropy loss, PyTorch's default
initialisation; snapshots are kept at chosen epochs.  (The binary network of the theory is
:class:`ortho_lib.TwoLayerParams`, trained by :func:`ortho_lib.train`.)
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor, nn

from ._checks import check_classes, check_float, check_int, check_seed, check_size, check_tensor


class MLP(nn.Module):
    r"""One-hidden-layer ReLU network $x \mapsto A\,\sigma(Vx + b) + c$ with ``n_classes`` logits (float64).

    PyTorch's default ``nn.Linear`` initialisation; built under a fixed seed by :func:`train_mlp`.
    """

    def __init__(self, d_in: int, width: int, n_classes: int):
        super().__init__()
        d_in = check_int("d_in", d_in, low=1)
        width = check_int("width", width, low=1)
        n_classes = check_int("n_classes", n_classes, low=2)
        check_size("d_in, width and n_classes", width, d_in + n_classes + 2)
        self.hidden = nn.Linear(d_in, width, dtype=torch.float64)
        self.out = nn.Linear(width, n_classes, dtype=torch.float64)

    def forward(self, x: Tensor) -> Tensor:
        """``(n, d_in)`` -> ``(n, n_classes)`` logits."""
        return self.out(torch.relu(self.hidden(x)))

@dataclass
class MLPRun:
    """What :func:`train_mlp` returns.

    Attributes:
        snapshots: epoch -> a frozen copy of the model after that many epochs (0 = initialisation).
        train_loss: mean cross-entropy over each epoch's mini-batches, ``(epochs,)``.
        train_accuracy: epoch -> accuracy on the training set at that snapshot.
    """

    snapshots: dict[int, MLP]
    train_loss: Tensor
    train_accuracy: dict[int, float] = field(default_factory=dict)

def train_mlp(
    X: Tensor,
    y: Tensor,
    *,
    width: int,
    lr: float,
    epochs: int,
    seed: int,
    batch_size: int = 32,
    momentum: float = 0.0,
    snapshot_epochs: Sequence[int] = (0,),
    n_classes: int = 10,
) -> MLPRun:
    r"""Train :class:`MLP` with mini-batch SGD on the cross-entropy, keeping copies at ``snapshot_epochs``.

    The initialisation is drawn under ``torch.manual_seed(seed)`` inside ``torch.random.fork_rng`` (the
    global random state is left as it was) and the batch order comes from a generator seeded with
    ``seed``, so a run is reproducible.

    Args:
        X: ``(n, d)`` float inputs.  y: ``(n,)`` int64 classes in ``0..n_classes-1``.
        width: hidden width.  lr: SGD step.  epochs: passes over the data.
        batch_size, momentum: SGD settings.  snapshot_epochs: epochs (0..epochs) at which to keep a copy.
    """
    X, y, width, lr, epochs, batch_size, momentum, snaps, n_classes = _check_run(
        X, y, width, lr, epochs, batch_size, momentum, snapshot_epochs, n_classes)
    seed = check_seed("seed", seed)
    if X.shape[0] == 0:
        raise ValueError("X must hold at least one point")
    return _train_mlp(X, y, width, lr, epochs, batch_size, momentum, snaps, seed, n_classes)

def _train_mlp(X, y, width, lr, epochs, batch_size, momentum, snaps, seed, n_classes) -> MLPRun:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MLP(X.shape[1], width, n_classes)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    gen = torch.Generator().manual_seed(seed)
    run = MLPRun(snapshots={}, train_loss=torch.zeros(epochs, dtype=torch.float64))

    def keep(e: int) -> None:
        frozen = copy.deepcopy(model).eval()
        for p in frozen.parameters():
            p.requires_grad_(False)
        run.snapshots[e] = frozen
        with torch.no_grad():
            run.train_accuracy[e] = float((frozen(X).argmax(1) == y).to(torch.float64).mean())

    if 0 in snaps:
        keep(0)
    n = X.shape[0]
    for e in range(1, epochs + 1):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for s in range(0, n, batch_size):
            idx = perm[s : s + batch_size]
            loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        if not math.isfinite(total):
            raise FloatingPointError(f"training diverged in epoch {e}; lower lr (got {lr})")
        run.train_loss[e - 1] = total / n
        if e in snaps:
            keep(e)
    return run


def train_mlps(
    X: Tensor,
    y: Tensor,
    *,
    width: int,
    lr: float,
    epochs: int,
    seeds: Sequence[int],
    batch_size: int = 32,
    momentum: float = 0.0,
    snapshot_epochs: Sequence[int] = (0,),
    n_classes: int = 10,
) -> list[MLPRun]:
    r"""Train one :class:`MLP` per seed, all together: the runs :func:`train_mlp` would give, one per seed.

    Member $e$ starts from the initialisation of ``train_mlp(..., seed=seeds[e])`` and visits the data in
    that run's batch order; the members' parameters are stacked (``(E, width, d)``, ...) and updated by
    one SGD step on the sum of the members' mean cross-entropies, which moves each member exactly by
    its own gradient.  Only the order of floating-point sums differs from separate runs (batched
    matrix products), so results agree with :func:`train_mlp` to rounding (tested).

    Args:
        X, y, width, lr, epochs, batch_size, momentum, snapshot_epochs, n_classes: as in :func:`train_mlp`.
        seeds: one seed per member (distinct seeds give independent runs).
    Returns:
        one :class:`MLPRun` per seed, in the order of ``seeds``.
    """
    X, y, width, lr, epochs, batch_size, momentum, snaps, n_classes = _check_run(
        X, y, width, lr, epochs, batch_size, momentum, snapshot_epochs, n_classes)
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or len(seeds) == 0:
        raise TypeError(f"seeds must be a non-empty sequence of seeds, got {seeds!r}")
    seeds = [check_seed(f"seeds[{i}]", s) for i, s in enumerate(seeds)]
    if X.shape[0] == 0:
        raise ValueError("X must hold at least one point")
    check_size("seeds and width", len(seeds), width, X.shape[1] + n_classes + 2)
    return _train_mlps(X, y, width, lr, epochs, batch_size, momentum, snaps, seeds, n_classes)


def _check_run(X, y, width, lr, epochs, batch_size, momentum, snapshot_epochs, n_classes) -> tuple:
    """The arguments :func:`train_mlp` and :func:`train_mlps` share, checked; the snapshot epochs sorted."""
    X = check_tensor("X", X, ndim=2).detach().to(torch.float64)
    n_classes = check_int("n_classes", n_classes, low=2)
    y = check_classes("y", y, X.shape[0], n_classes)
    width = check_int("width", width, low=1)
    check_size("width", width, X.shape[1] + n_classes + 2)
    lr = check_float("lr", lr, positive=True)
    epochs = check_int("epochs", epochs, low=0)
    batch_size = check_int("batch_size", batch_size, low=1)
    momentum = check_float("momentum", momentum, nonnegative=True, below=1.0)
    if isinstance(snapshot_epochs, (str, bytes)) or not isinstance(snapshot_epochs, Sequence):
        raise TypeError(f"snapshot_epochs must be a sequence of epochs, got {snapshot_epochs!r}")
    snaps = sorted({check_int(f"snapshot_epochs[{i}]", e, low=0, high=epochs) for i, e in enumerate(snapshot_epochs)})
    return X, y, width, lr, epochs, batch_size, momentum, snaps, n_classes


def _train_mlps(X, y, width, lr, epochs, batch_size, momentum, snaps, seeds, n_classes) -> list[MLPRun]:
    models = []
    for s in seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            models.append(MLP(X.shape[1], width, n_classes))
    V = torch.stack([mo.hidden.weight.detach() for mo in models]).clone().requires_grad_(True)   # (E, h, d)
    b = torch.stack([mo.hidden.bias.detach() for mo in models]).clone().requires_grad_(True)     # (E, h)
    A = torch.stack([mo.out.weight.detach() for mo in models]).clone().requires_grad_(True)      # (E, K, h)
    c = torch.stack([mo.out.bias.detach() for mo in models]).clone().requires_grad_(True)        # (E, K)
    opt = torch.optim.SGD([V, b, A, c], lr=lr, momentum=momentum)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    E, n = len(seeds), X.shape[0]
    runs = [MLPRun(snapshots={}, train_loss=torch.zeros(epochs, dtype=torch.float64)) for _ in seeds]

    def keep(ep: int) -> None:
        for e, run in enumerate(runs):
            mo = copy.deepcopy(models[e])                      # no draw from the global generator
            with torch.no_grad():
                mo.hidden.weight.copy_(V[e]); mo.hidden.bias.copy_(b[e])
                mo.out.weight.copy_(A[e]); mo.out.bias.copy_(c[e])
            mo.eval()
            for p in mo.parameters():
                p.requires_grad_(False)
            run.snapshots[ep] = mo
            with torch.no_grad():
                run.train_accuracy[ep] = float((mo(X).argmax(1) == y).to(torch.float64).mean())

    if 0 in snaps:
        keep(0)
    for ep in range(1, epochs + 1):
        perms = torch.stack([torch.randperm(n, generator=g) for g in gens])          # (E, n)
        total = torch.zeros(E, dtype=torch.float64)
        for s in range(0, n, batch_size):
            idx = perms[:, s : s + batch_size]                                       # (E, B)
            H = torch.relu(torch.baddbmm(b[:, None, :], X[idx], V.transpose(1, 2)))  # (E, B, h)
            logits = torch.baddbmm(c[:, None, :], H, A.transpose(1, 2))              # (E, B, K)
            per = nn.functional.cross_entropy(logits.reshape(-1, n_classes), y[idx].reshape(-1),
                                              reduction="none").reshape(E, -1).mean(1)
            opt.zero_grad()
            per.sum().backward()
            opt.step()
            total += per.detach() * idx.shape[1]
        if not bool(torch.isfinite(total).all()):
            raise FloatingPointError(f"training diverged in epoch {ep}; lower lr (got {lr})")
        for e, run in enumerate(runs):
            run.train_loss[ep - 1] = total[e] / n
        if ep in snaps:
            keep(ep)
    return runs
