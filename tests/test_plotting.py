"""Plotting helpers draw what they compute."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import ortho_lib as ol  # noqa: E402
from ortho_lib import plotting  # noqa: E402


def test_decision_grid_2d_evaluates_the_network():
    p = ol.init_network(2, 5, seed=0, bias="uniform")
    xx, yy, v = plotting.decision_grid_2d(p, (-1, 1), res=11)
    assert v.shape == (11, 11)
    x = torch.tensor([[xx[3, 7], yy[3, 7]]], dtype=torch.float64)
    assert np.isclose(v[3, 7], float(ol.network_output(p, x)[0]))


def test_plot_decision_boundary_2d_draws_points_and_labels():
    p = ol.init_network(2, 5, seed=0, bias="uniform")
    X = torch.tensor([[0.1, 0.1], [-0.5, -0.5]], dtype=torch.float64)
    fig, ax = plt.subplots()
    plotting.plot_decision_boundary_2d(ax, p, X, torch.tensor([1.0, -1.0]), data_line=torch.tensor([1.0, 1.0]))
    assert ax.get_xlabel() == "$x_1$" and len(ax.collections) >= 2
    plt.close(fig)


def test_zero_crossings_3d_lie_on_the_surface():
    # N(x) = x3 - 0.5: the surface is the plane x3 = 0.5
    p = ol.TwoLayerParams(torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64), torch.zeros(1, dtype=torch.float64),
                          torch.tensor([1.0], dtype=torch.float64), -0.5)
    S = plotting.zero_crossings_3d(p, (0, 1), res=5, res_z=11)
    assert S.shape == (25, 3) and np.allclose(S[:, 2], 0.5)


def test_plots_reject_wrong_dimension():
    p = ol.init_network(3, 5, seed=0)
    with pytest.raises(ValueError, match="params must take 2-D inputs"):
        plotting.decision_grid_2d(p)
    with pytest.raises(ValueError, match="params must take 3-D inputs"):
        plotting.zero_crossings_3d(ol.init_network(2, 5, seed=0))
