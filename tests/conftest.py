"""Shared test fixtures.

Threads: the tests never call ``torch.set_num_threads``; the thread setting is made in one place, the
Makefile's environment (``OMP_NUM_THREADS=1`` for ``make test``).  Run the tests by hand the same way:
``OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests -p no:cacheprovider -n 2``.
"""
import pytest

# The claims index: which test checks which claim of the book (hooks defined in claims_plugin.py).
from claims_plugin import (  # noqa: F401,E402
    pytest_configure, pytest_runtest_logreport, pytest_runtest_setup, pytest_sessionfinish,
)

import ortho_lib as ol


@pytest.fixture(scope="session")
def make_teacher_problem():
    """A builder of fresh teacher problems: ``make(d, ell, n, seed, n_test=201) -> ol.data.TeacherProblem``.

    A thin use of the library builder :func:`ortho_lib.teacher_problem`, so its seeds layout is the
    library's: the subspace P from ``seed``, the ``n`` training points in P from ``seed + 1``, the teacher
    direction in P from ``seed + 2`` and the ``n_test`` test points in P from ``seed + 3``.  A test module
    that draws further randomness should take seeds outside ``seed ... seed + 3``.
    """

    def make(d: int, ell: int, n: int, seed: int, n_test: int = 201) -> ol.data.TeacherProblem:
        return ol.teacher_problem(d, ell, n, seed=seed, n_test=n_test)

    return make


@pytest.fixture(scope="session")
def digits():
    """The digits split with seed 7 (ortho_lib.datasets.load_digits_split), shared by the tests of the
    multi-class protocol (datasets, mlp, multiclass noises)."""
    from ortho_lib.datasets import load_digits_split

    return load_digits_split(seed=7)
