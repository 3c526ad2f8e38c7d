"""The multi-class network and its training (ortho_lib.mlp; was in ortho_lib.separability).  Deterministic."""
import pytest
import torch

from ortho_lib.mlp import train_mlp, train_mlps


def test_train_mlp_is_reproducible_and_leaves_the_global_rng_alone(digits):
    X, y = digits.X_train[:200], digits.y_train[:200]
    state = torch.random.get_rng_state()
    r1 = train_mlp(X, y, width=16, lr=0.1, epochs=2, seed=9, snapshot_epochs=(0, 2))
    assert torch.equal(state, torch.random.get_rng_state())
    r2 = train_mlp(X, y, width=16, lr=0.1, epochs=2, seed=9, snapshot_epochs=(0, 2))
    assert sorted(r1.snapshots) == [0, 2] and r1.train_loss.shape == (2,)
    for a, b in zip(r1.snapshots[2].parameters(), r2.snapshots[2].parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(r1.snapshots[0].out.weight, r1.snapshots[2].out.weight)


def test_train_mlp_rejects_bad_arguments(digits):
    X, y = digits.X_train[:20], digits.y_train[:20]
    with pytest.raises(ValueError, match="lr"):
        train_mlp(X, y, width=4, lr=-1.0, epochs=1, seed=0)
    with pytest.raises(TypeError, match="y"):
        train_mlp(X, y.double(), width=4, lr=0.1, epochs=1, seed=0)
    with pytest.raises(ValueError, match="snapshot_epochs"):
        train_mlp(X, y, width=4, lr=0.1, epochs=1, seed=0, snapshot_epochs=(3,))


def test_train_mlps_gives_the_runs_of_train_mlp_one_per_seed(digits):
    """Seeds trained together (stacked parameters, one SGD step on the summed mean losses) move exactly as
    separate runs: same snapshots to rounding, same losses and accuracies, global generator untouched."""
    X, y = digits.X_train[:150], digits.y_train[:150]
    state = torch.random.get_rng_state()
    runs = train_mlps(X, y, width=12, lr=0.2, epochs=3, seeds=[4, 9], momentum=0.5, snapshot_epochs=(0, 1, 3))
    assert torch.equal(state, torch.random.get_rng_state())
    for seed, run in zip([4, 9], runs):
        one = train_mlp(X, y, width=12, lr=0.2, epochs=3, seed=seed, momentum=0.5, snapshot_epochs=(0, 1, 3))
        assert sorted(run.snapshots) == [0, 1, 3]
        for ep in (0, 1, 3):
            for a, b in zip(run.snapshots[ep].parameters(), one.snapshots[ep].parameters()):
                assert torch.allclose(a, b, atol=1e-12, rtol=0)
            assert run.train_accuracy[ep] == one.train_accuracy[ep]
        assert torch.allclose(run.train_loss, one.train_loss, atol=1e-12)


def test_train_mlps_rejects_bad_seeds(digits):
    X, y = digits.X_train[:20], digits.y_train[:20]
    with pytest.raises(TypeError, match="seeds"):
        train_mlps(X, y, width=4, lr=0.1, epochs=1, seeds=3)
    with pytest.raises(TypeError, match="seeds"):
        train_mlps(X, y, width=4, lr=0.1, epochs=1, seeds=[])
