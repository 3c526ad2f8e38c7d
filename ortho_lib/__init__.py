r"""ortho_lib: the small library behind *ortho-book*.

Two-layer ReLU networks trained on data in a linear subspace $P$ of $\mathbb R^d$, and the perturbations
orthogonal to $P$ that fool them (Melamed, Yehudai, Vardi 2023).  The top level holds what every chapter
uses; each further concept has its own module:

* :mod:`ortho_lib.subspaces` — subspaces and projections (``random_subspace``, ``Pi_P``, ``P_perp``)
* :mod:`ortho_lib.data` — synthetic data on a subspace and label rules (``teacher_problem``)
* :mod:`ortho_lib.datasets` — real data sets that install with the package (digits)
* :mod:`ortho_lib.network` — the network, its initialisation, input gradients, active sets
* :mod:`ortho_lib.training` — ``TrainConfig`` and ``train``: one way to train one network or a stack
* :mod:`ortho_lib.theory` — every closed-form prediction of the book (no randomness, no training)
* :mod:`ortho_lib.gradients` — the exact law of the orthogonal gradient (Theorem A) and its resampling
* :mod:`ortho_lib.perturbations` — the universal direction, exact flip norms, one-step noises
* :mod:`ortho_lib.attacks` — certified lower bounds, exact minima and library attacks
* :mod:`ortho_lib.maxmargin` — max-margin KKT diagnostics and the robust network (Vardi, Yehudai, Shamir)
* :mod:`ortho_lib.separability` — linear separability of one-step noises (Zhang, Yu, Lu, He)
* :mod:`ortho_lib.mlp`, :mod:`ortho_lib.probes` — a multi-class network and linear probes for real data
* :mod:`ortho_lib.plotting` — decision boundaries in 2-D and 3-D
* :mod:`ortho_lib.notebook` — numbers glued into the prose, progress bars for a person running a chapter
* :mod:`ortho_lib.deep` — deep ReLU networks: the same questions at any depth
* :mod:`ortho_lib.norms` — perturbations orthogonal to the data in the L-infinity and L1 norms
* :mod:`ortho_lib.image_subspaces` — real images: always-zero pixels, PCA subspaces, an effective codimension
* :mod:`ortho_lib.manifolds` — curved data: a sphere of tunable curvature, its tangent and normal spaces
* :mod:`ortho_lib.dynamics` — networks at many moments of training, and their orthogonal robustness
"""
from .subspaces import Subspace, random_subspace, coordinate_subspace, subspace_from_vectors, Pi_P, P_perp, \
    distance_to_subspace
from .data import sample_on_subspace, sphere_data, teacher_direction, teacher_labels, random_labels, \
    teacher_problem, check_on_subspace
from .network import TwoLayerParams, init_network, default_beta, network_output, preactivations, active_set, \
    input_gradient, orthogonal_gradient
from .training import TrainConfig, TrainResult, TrainHistory, MarginNotReached, train, train_margin, accuracy, \
    loss_and_grads
from .perturbations import universal_direction, flip_norm_along
from .notebook import progress
from . import (attacks, data, datasets, gradients, maxmargin, mlp, network, notebook, perturbations,  # noqa: F401
               plotting, probes, separability, subspaces, theory, training)
from . import deep, norms  # noqa: F401  (beyond the papers: book/depth.md, book/other_norms.md)
from . import dynamics, manifolds  # noqa: F401  (beyond the papers: book/optimisers.md, book/curved_data.md)

__all__ = [
    "Subspace", "random_subspace", "coordinate_subspace", "subspace_from_vectors", "Pi_P", "P_perp",
    "distance_to_subspace",
    "sample_on_subspace", "sphere_data", "teacher_direction", "teacher_labels", "random_labels", "teacher_problem",
    "check_on_subspace",
    "TwoLayerParams", "init_network", "default_beta", "network_output", "preactivations", "active_set",
    "input_gradient", "orthogonal_gradient",
    "TrainConfig", "TrainResult", "TrainHistory", "MarginNotReached", "train", "train_margin", "accuracy",
    "loss_and_grads",
    "universal_direction", "flip_norm_along",
    "progress",
]

__version__ = "0.2.0"
