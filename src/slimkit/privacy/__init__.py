"""Private training: DP-SGD with an RDP accountant, and federated averaging.

>>> private = slimkit.privacy.make_private(model, None, digits().train, target_epsilon=3.0, steps=300)  # doctest: +SKIP
>>> private.train(TrainConfig(steps=300, lr=1e-2, clip_grad_norm=None))  # doctest: +SKIP
>>> slimkit.privacy.epsilon(noise_multiplier=1.1, sample_rate=0.004, steps=15000, delta=1e-5)  # doctest: +SKIP
"""

from slimkit.privacy.accountant import (RDPAccountant, epsilon, epsilon_floor, noise_for_epsilon,
                                        rdp_sampled_gaussian)
from slimkit.privacy.dpsgd import DPConfig, PrivateTraining, make_private
from slimkit.privacy.federated import FederatedConfig, FederatedResult, dirichlet_split, federated_average
from slimkit.privacy.layers import check_per_sample_safe, replace_batchnorm

__all__ = ["DPConfig", "FederatedConfig", "FederatedResult", "PrivateTraining", "RDPAccountant", "check_per_sample_safe",
           "dirichlet_split", "epsilon", "epsilon_floor", "federated_average", "make_private", "noise_for_epsilon",
           "rdp_sampled_gaussian", "replace_batchnorm"]
