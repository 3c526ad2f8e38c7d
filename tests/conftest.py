"""Shared test settings."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The tests' tensors are small: one intra-op thread is fastest, and on a busy 2-core machine a
    second OpenMP thread makes each tiny product wait for a descheduled partner (measured: the engine
    tests took 7 minutes with 2 threads and about 25 s with 1). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def make_teacher_problem():
    """A builder of fresh teacher problems: ``make(d, ell, n, seed) -> (sub, X, y, X_test)`` — a random
    subspace P, ``n`` training points in P labelled by a teacher direction in P, and 201 test points in P,
    drawn from the seeds ``seed + 1 ... seed + 4``."""
    import ortho_lib as ol

    def make(d: int, ell: int, n: int, seed: int):
        sub = ol.random_subspace(d, ell, seed=seed + 1)
        v = ol.teacher_direction(sub, seed=seed + 2)
        X = ol.sample_on_subspace(sub, n, seed=seed + 3)
        y = ol.teacher_labels(X, v)
        X_test = ol.sample_on_subspace(sub, 201, seed=seed + 4)
        return sub, X, y, X_test

    return make
