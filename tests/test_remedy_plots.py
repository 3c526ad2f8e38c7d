"""The remedies' scale plots (ortho_lib.plotting) and the range glue (ortho_lib.notebook) draw and store what
they are given.  Deterministic tests (false-failure probability 0)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from ortho_lib import notebook, plotting  # noqa: E402

F64 = torch.float64


def test_orthogonal_gradient_scale_draws_the_points_the_prediction_and_the_band():
    s = torch.tensor([1e-3, 1e-2, 1e-1], dtype=F64)
    g = torch.tensor([2e-3, 3e-2, 0.5], dtype=F64)
    u = torch.tensor([0.5, 1.0, 0.5], dtype=F64)
    fig, ax = plt.subplots()
    assert plotting.plot_orthogonal_gradient_scale(ax, s, g, u, 50, xlabel="x") is ax
    pts = ax.collections[-1].get_offsets()
    assert np.allclose(pts, np.c_[s.numpy(), (g / u).numpy()])                     # measured g_perp / ||u_I||
    xs, ys = ax.lines[0].get_data()
    assert np.allclose(ys, np.sqrt(50) * xs)                                          # prediction s sqrt(ell)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log" and ax.get_xlabel() == "x"
    plt.close(fig)


def test_flip_norms_scale_draws_group_medians_and_ranges():
    s = torch.tensor([0.1] * 5 + [0.01] * 5, dtype=F64)
    flip = torch.tensor([1.0, 2, 3, 4, 5, 10, 20, 30, 40, 50], dtype=F64)
    rad = flip / 4
    fig, ax = plt.subplots()
    plotting.plot_flip_norms_scale(ax, s, flip, rad, data_norm=7.0)
    radius_line = next(line for line in ax.lines if "certified" in line.get_label())
    xs, ys = radius_line.get_data()
    assert np.allclose(xs, [0.01, 0.1]) and np.allclose(ys, [30 / 4, 3 / 4])        # medians per group
    bars = ax.containers[0]                                                           # the measured medians
    assert "measured" in bars.get_label() and np.allclose(bars.lines[0].get_ydata(), [30, 3])
    assert any(np.allclose(line.get_ydata(), 7.0) for line in ax.lines)             # the data norm
    plt.close(fig)


@pytest.mark.parametrize("bad, match", [
    (dict(scale=torch.tensor([0.0, 1.0], dtype=F64)), "^scale must be positive"),
    (dict(gperp=torch.tensor([1.0], dtype=F64)), "^gperp must hold one value per entry of scale"),
    (dict(uI=torch.tensor([0.0, 1.0], dtype=F64)), "^uI must be positive"),
    (dict(gperp=torch.tensor([-1.0, 1.0], dtype=F64)), "^gperp must be non-negative"),
])
def test_orthogonal_gradient_scale_refuses_bad_values_naming_the_argument(bad, match):
    args = dict(scale=torch.tensor([0.1, 0.2], dtype=F64), gperp=torch.tensor([1.0, 1.0], dtype=F64),
                uI=torch.tensor([1.0, 1.0], dtype=F64))
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match=match):
        plotting.plot_orthogonal_gradient_scale(ax, **{**args, **bad}, ell=3)
    plt.close(fig)


def test_flip_norms_scale_refuses_empty_and_non_positive_flips():
    fig, ax = plt.subplots()
    e = torch.zeros(0, dtype=F64)
    with pytest.raises(ValueError, match="^scale must hold at least one value"):
        plotting.plot_flip_norms_scale(ax, e, e, e)
    one = torch.ones(1, dtype=F64)
    with pytest.raises(ValueError, match="^flip must be positive"):
        plotting.plot_flip_norms_scale(ax, one, 0 * one, one)
    plt.close(fig)


def test_glue_range_stores_rounded_median_minimum_and_maximum(monkeypatch):
    stored = {}
    monkeypatch.setattr(notebook, "glue", lambda name, value: stored.__setitem__(name, value))
    notebook.glue_range("x", torch.tensor([3.0, 1.0, 2.0, 10.0]), 1)
    assert stored == {"x_med": 2.5, "x_lo": 1.0, "x_hi": 10.0}
    notebook.glue_range("n", np.array([86.4, 77.0, 106.6]))
    assert stored["n_med"] == 86 and isinstance(stored["n_med"], int) and stored["n_hi"] == 107
    with pytest.raises(ValueError, match="^values must be"):
        notebook.glue_range("y", [1.0, float("nan")])
    with pytest.raises(ValueError, match="^digits must be"):
        notebook.glue_range("y", [1.0], -1)


def test_glue_stores_floats_that_differ_in_their_last_bits_as_the_same_text(monkeypatch):
    """Stored outputs do not depend on the processor: two CPUs that disagree in the last digits of a
    number (measured: 0.44309539179117285 and 0.4430953917911728) store the same glued text."""
    import myst_nb

    stored = []
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display: stored.append(repr(value)))
    notebook.glue("a", 0.44309539179117285)
    notebook.glue("a", np.float64(0.4430953917911728))
    notebook.glue("b", torch.tensor(147506072618.58383, dtype=F64))
    notebook.glue("c", 0.0330490778747, sig=2)
    notebook.glue("d", 7)
    assert stored == ["0.443095", "0.443095", "147506000000.0", "0.033", "7"]


def test_glue_refuses_a_significant_digit_count_outside_one_to_seventeen():
    for bad in (0, 18):
        with pytest.raises(ValueError, match="^sig must be"):
            notebook.glue("x", 1.0, sig=bad)
