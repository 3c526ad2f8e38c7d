"""The digits data set of the multi-class protocol (ortho_lib.datasets; was in ortho_lib.separability).

Deterministic: fixed seeds; the shuffled-label check has a threshold (0.3) far above the chance level 1/10.
"""
import numpy as np
import pytest
import torch

from ortho_lib.datasets import load_digits_split


def test_load_digits_split_shapes_scaling_and_stratification(digits):
    assert digits.X_train.shape == (1198, 64) and digits.X_test.shape == (599, 64)
    assert float(digits.X_train.min()) >= 0 and float(digits.X_train.max()) <= 1
    assert torch.bincount(digits.y_test, minlength=10).min() >= 55


def test_load_digits_split_shuffle_keeps_class_counts_and_breaks_the_pairing():
    from sklearn.datasets import load_digits

    a, b = load_digits_split(seed=8), load_digits_split(seed=8, shuffle_labels=True)
    counts = lambda s: torch.bincount(torch.cat([s.y_train, s.y_test]), minlength=10)  # noqa: E731
    assert torch.equal(counts(a), counts(b))
    Xo, yo = load_digits(return_X_y=True)
    original = {tuple(row): int(lab) for row, lab in zip(Xo / 16.0, yo)}
    kept = np.mean([original[tuple(row)] == int(lab) for row, lab in zip(b.X_train.numpy(), b.y_train)])
    assert kept < 0.3          # about 1/10 of the images keep their label by chance
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits_split(seed=1, test_fraction=1.5)
