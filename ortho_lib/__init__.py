"""ortho_lib: the small library behind *ortho-book*.

Two-layer ReLU networks trained on data in a linear subspace P of R^d, and the perturbations
orthogonal to P that fool them (Melamed, Yehudai, Vardi 2023).  One module per concept:

* :mod:`ortho_lib.subspaces` — subspaces and projections (``random_subspace``, ``Pi_P``, ``P_perp``)
* :mod:`ortho_lib.data` — data on a subspace and label rules
* :mod:`ortho_lib.network` — the network, its initialisation, input gradients, active sets
* :mod:`ortho_lib.train` — GD / SGD / momentum / Adam on the logistic loss
* :mod:`ortho_lib.theory` — the theorems' closed-form predictions
* :mod:`ortho_lib.perturbations` — the universal direction and flip norms
* :mod:`ortho_lib.plotting` — decision boundaries in 2-D and 3-D
* :mod:`ortho_lib.engine` — exact, batched training of many networks (the sweep engine)
* :mod:`ortho_lib.gradients` — the exact law of the orthogonal gradient (Theorem A)
* :mod:`ortho_lib.attacks` — certified lower bounds, exact minima and library attacks (Theorem B)
* :mod:`ortho_lib.kkt` — max-margin KKT diagnostics and the robust network (Vardi, Yehudai, Shamir)
* :mod:`ortho_lib.separability` — one-step noises and their linear separability (Zhang, Yu, Lu, He)
"""
from .subspaces import (
    Subspace, random_subspace, coordinate_subspace, subspace_from_vectors, projection_matrices,
    Pi_P, P_perp, Pi_perp, perp_coordinates, distance_to_subspace,
)
from .data import (
    sample_on_subspace, sample_gaussian_on_subspace, teacher_direction, teacher_labels,
    random_labels, as_labels, check_on_subspace, sphere_data, line_data_2d, chessboard_data_3d,
)
from .network import (
    TwoLayerParams, make_params, init_network, preactivations, network_output, active_set,
    input_gradient, split_gradient, orthogonal_gradient,
)
from .train import train, TrainResult, MarginNotReached, loss_and_grads, train_margin, accuracy
from . import theory
from .engine import train_ensemble, EnsembleResult, stack_params
from .progress import progress
from .perturbations import (
    universal_direction, alignment_coefficients, first_order_flip_estimate, flip_norm_along,
)

from . import attacks, gradients, kkt, separability, theory  # noqa: E402,F401

__version__ = "0.1.0"
