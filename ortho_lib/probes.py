r"""Linear probes: how much of a label a linear classifier reads off a set of features."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

from torch import Tensor

from ._checks import check_classes, check_flag, check_float, check_int, check_tensor, to_numpy


@dataclass
class ProbeResult:
    """Train and test accuracy of a linear probe; ``converged`` says whether L-BFGS met its tolerance."""

    train_accuracy: float
    test_accuracy: float
    converged: bool

def linear_probe(
    F_train: Tensor,
    y_train: Tensor,
    F_test: Tensor,
    y_test: Tensor,
    *,
    C: float = 1.0,
    max_iter: int = 5000,
) -> ProbeResult:
    r"""Multinomial logistic regression on standardised features: fit on ``(F_train, y_train)``, score both sets.

    The probe is scikit-learn's ``StandardScaler`` followed by ``LogisticRegression(C=C)`` (L-BFGS,
    multinomial loss).  If L-BFGS stops at ``max_iter`` before its tolerance, scikit-learn's
    ``ConvergenceWarning`` is caught here and reported as ``converged=False`` instead of printed.

    Args:
        F_train: ``(n_train, p)`` features (noises or clean inputs).  y_train: ``(n_train,)`` classes.
        F_test, y_test: the same for the test set.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    F_train = check_tensor("F_train", F_train, ndim=2)
    F_test = check_tensor("F_test", F_test, shape=(None, F_train.shape[1]))
    y_train = check_classes("y_train", y_train, F_train.shape[0])
    y_test = check_classes("y_test", y_test, F_test.shape[0])
    if F_train.shape[0] == 0 or F_test.shape[0] == 0:
        raise ValueError(f"F_train and F_test must hold at least one row each, got {F_train.shape[0]} and {F_test.shape[0]}")
    if len(set(y_train.tolist())) < 2:
        raise ValueError("y_train must hold at least two classes")
    C = check_float("C", C, positive=True)
    max_iter = check_int("max_iter", max_iter, low=1)
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    Ftr, Fte = to_numpy(F_train), to_numpy(F_test)
    ytr, yte = to_numpy(y_train), to_numpy(y_test)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        probe.fit(Ftr, ytr)
        train_acc, test_acc = float(probe.score(Ftr, ytr)), float(probe.score(Fte, yte))
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    for w in caught:  # anything other than non-convergence is a real problem: show it
        if not issubclass(w.category, ConvergenceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return ProbeResult(train_acc, test_acc, converged)


def true_class_probability(model, X: Tensor, y: Tensor) -> float:
    r"""Mean softmax probability of the labelled class, $\frac1n\sum_j p(y_j\mid x_j)$: how saturated the outputs are.

    Args:
        model: maps ``(n, d)`` to ``(n, K)`` logits.  X: ``(n, d)``.  y: ``(n,)`` classes.
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    X = check_tensor("X", X, ndim=2)
    weights = next(iter(model.parameters()), None)
    with torch.no_grad():
        try:
            logits = model(X.to(X.dtype if weights is None else weights.dtype))
        except RuntimeError as err:
            raise ValueError(f"X: the model cannot be applied to X of shape {tuple(X.shape)} ({err})") from None
    if logits.ndim != 2 or logits.shape[0] != X.shape[0]:
        raise ValueError(f"model must map X to (n, K) logits, got shape {tuple(logits.shape)}")
    y = check_classes("y", y, X.shape[0], logits.shape[1])
    if X.shape[0] == 0:
        raise ValueError("X must hold at least one point")
    p = torch.softmax(logits, dim=1)
    return float(p[torch.arange(X.shape[0]), y].mean())


def relative_distance(model, reference) -> float:
    r"""$\|\theta - \theta_0\| / \|\theta_0\|$ over all parameters: how far ``model`` travelled from ``reference``."""
    import torch

    for name, mo in (("model", model), ("reference", reference)):
        if not isinstance(mo, torch.nn.Module):
            raise TypeError(f"{name} must be a torch.nn.Module, got {type(mo).__name__}")
    a = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    b = torch.cat([p.detach().reshape(-1) for p in reference.parameters()])
    if a.shape != b.shape:
        raise ValueError(f"reference must have the parameter count of model ({a.numel()}), got {b.numel()}")
    return float((a - b).norm() / b.norm())


def probe_protocol(split, *, lr: float, epochs: int, seeds, width: int = 256, batch_size: int = 64,
                   snapshot_epochs=None, variants=None, final_variants=None, probe_init: bool = True) -> list[dict]:
    r"""Zhang et al.'s protocol on an image split, for several seeds trained together: one record per
    (seed, snapshot, noise variant).

    For each seed an MLP (:func:`ortho_lib.mlp.train_mlps`, SGD with ``lr``, ``batch_size``) is trained for
    ``epochs``; at each of ``snapshot_epochs`` (default: 0 and the last) the one-step noises of every training
    and test image are crafted with their own labels (:func:`ortho_lib.perturbations.multiclass_noise` with the
    keyword arguments of each entry of ``variants``, default ``{"L2": {"norm": "l2"}, "FGSM": {"norm": "linf"}}``)
    and a linear probe (:func:`linear_probe`) is fitted on the training noises and scored on the test noises;
    ``final_variants`` (same form) are added at the last snapshot only; with ``probe_init=False`` the
    initialisation is kept (for the distances) but not probed.
    Note that the test noises are built from the *test labels*: the probe reads a label written into the
    noise, it does not predict it from the image.

    Returns:
        records with keys ``seed, epoch, variant, probe_train, probe_test, converged, train_acc, test_acc,
        p_true`` (mean $p(y\mid x)$ on the training set, :func:`true_class_probability`) and ``distance``
        (:func:`relative_distance` from the initialisation).
    """
    import torch

    from .mlp import train_mlps
    from .perturbations import multiclass_noise

    probe_init = check_flag("probe_init", probe_init)
    epochs = check_int("epochs", epochs, low=0)
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise TypeError(f"seeds must be a sequence of seeds, got {seeds!r}")
    seeds = list(seeds)
    for attr in ("X_train", "y_train", "X_test", "y_test"):
        if not hasattr(split, attr):
            raise TypeError(f"split must be an ImageSplit (with X_train, y_train, X_test, y_test), got "
                            f"{type(split).__name__}")
    snaps = tuple(sorted({0, epochs} if snapshot_epochs is None else set(snapshot_epochs) | {0}))
    variants = {"L2": {"norm": "l2"}, "FGSM": {"norm": "linf"}} if variants is None else dict(variants)
    final_variants = {} if final_variants is None else dict(final_variants)
    runs = train_mlps(split.X_train, split.y_train, width=width, lr=lr, epochs=epochs, seeds=seeds,
                      batch_size=batch_size, snapshot_epochs=snaps)
    out = []
    for seed, run in zip(seeds, runs):
        init = run.snapshots[0]
        for ep in snaps if probe_init else snaps[1:]:
            model = run.snapshots[ep]
            with torch.no_grad():
                test_acc = float((model(split.X_test).argmax(1) == split.y_test).to(torch.float64).mean())
            common = dict(seed=seed, epoch=ep, train_acc=run.train_accuracy[ep], test_acc=test_acc,
                          p_true=true_class_probability(model, split.X_train, split.y_train),
                          distance=relative_distance(model, init))
            chosen = dict(variants, **final_variants) if ep == snaps[-1] else variants
            for name, kw in chosen.items():
                Ntr = multiclass_noise(model, split.X_train, split.y_train, **kw)
                Nte = multiclass_noise(model, split.X_test, split.y_test, **kw)
                r = linear_probe(Ntr, split.y_train, Nte, split.y_test)
                out.append(dict(common, variant=name, probe_train=r.train_accuracy, probe_test=r.test_accuracy,
                                converged=r.converged))
    return out
