"""Calibration machinery shared by the transforms that fit a layer to its own inputs (GPTQ and AWQ in
quantization/, SparseGPT and Wanda in pruning/): sequential replay of each layer's inputs with bounded
memory (layer_inputs.py) and the second-order (OBS) column sweep (obs.py).

It sits on the transforms' layer and imports none of them, so quantization and pruning both use it
without importing each other.
"""

# the function layer_inputs stays in its module: exported here it would shadow the module layer_inputs
from slimkit.calibration.layer_inputs import LayerInputs, sequential_inputs
from slimkit.calibration.obs import inverse_hessian_factor, obs_sweep, without_dead_inputs

__all__ = ["LayerInputs", "inverse_hessian_factor", "obs_sweep", "sequential_inputs", "without_dead_inputs"]
