"""The training-memory planner: predict where a training step's memory goes, measure it, and
recommend what to turn on to fit a budget.

>>> from slimkit.memory import TrainSetup, plan, shape_of
>>> p = plan(shape_of("llama-7b"), TrainSetup(precision="amp-bf16", batch=1, seq=2048))
>>> round(p.model_states() / 2**30, 1)  # 16 bytes per parameter
100.4
"""

from slimkit.memory.measure import Measurement, measure
from slimkit.memory.presets import PRESETS, ModelShape, preset
from slimkit.memory.setup import TrainSetup
from slimkit.memory.shapes import from_hf_config, from_module, from_params, shape_of
from slimkit.memory.timeline import Plan, plan

__all__ = ["PRESETS", "Measurement", "ModelShape", "Plan", "TrainSetup", "from_hf_config", "from_module",
           "from_params", "measure", "plan", "preset", "shape_of"]
