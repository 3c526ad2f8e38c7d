"""Linear probes (ortho_lib.probes; was in ortho_lib.separability).  Deterministic."""
import pytest
import torch

from ortho_lib.probes import linear_probe


def test_linear_probe_separates_an_easy_problem_and_reports_convergence():
    g = torch.Generator().manual_seed(12)
    y = torch.arange(200) % 3
    F = torch.randn(200, 5, generator=g, dtype=torch.float64) + 10 * torch.nn.functional.one_hot(y, 5).double()
    r = linear_probe(F[:150], y[:150], F[150:], y[150:])
    assert r.train_accuracy == 1.0 and r.test_accuracy == 1.0 and r.converged
    with pytest.raises(ValueError, match="y_train"):
        linear_probe(F[:150], y[:149], F[150:], y[150:])
    with pytest.raises(ValueError, match="F_test"):
        linear_probe(F[:150], y[:150], F[150:, :4], y[150:])


def test_probe_protocol_records_state_and_probes_per_seed_snapshot_and_variant(digits):
    import torch

    from ortho_lib.mlp import train_mlp
    from ortho_lib.probes import probe_protocol, relative_distance, true_class_probability

    rows = probe_protocol(digits, lr=0.1, epochs=2, seeds=[1, 2], width=16,
                          final_variants={"L2, T=10": {"norm": "l2", "temperature": 10.0}})
    assert len(rows) == 2 * (2 + 3)                        # per seed: L2, FGSM at epoch 0; + T=10 at epoch 2
    assert {r["variant"] for r in rows if r["epoch"] == 2} == {"L2", "FGSM", "L2, T=10"}
    assert all(r["distance"] == 0 for r in rows if r["epoch"] == 0)
    assert all(r["distance"] > 0 and 0 < r["p_true"] < 1 and 0 <= r["probe_test"] <= 1 for r in rows if r["epoch"] == 2)
    run = train_mlp(digits.X_train, digits.y_train, width=16, lr=0.1, epochs=2, seed=1, batch_size=64,
                    snapshot_epochs=(0, 2))
    r = next(r for r in rows if r["seed"] == 1 and r["epoch"] == 2 and r["variant"] == "L2")
    assert r["distance"] == pytest.approx(relative_distance(run.snapshots[2], run.snapshots[0]), rel=1e-9)
    assert r["p_true"] == pytest.approx(true_class_probability(run.snapshots[2], digits.X_train, digits.y_train), rel=1e-9)
    no_init = probe_protocol(digits, lr=0.1, epochs=1, seeds=[1], width=16, probe_init=False)
    assert {r["epoch"] for r in no_init} == {1}
    with pytest.raises(ValueError, match="reference"):
        relative_distance(run.snapshots[2], torch.nn.Linear(3, 2))
