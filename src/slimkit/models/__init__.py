"""Reference models: an MLP and a residual CNN for digits, a small GPT for pycorpus."""

from slimkit.models.gpt import GPT, GPTConfig
from slimkit.models.mlp import MLP, MLPConfig
from slimkit.models.resnet import ResNet, ResNetConfig
from slimkit.models.spec import from_spec

__all__ = ["GPT", "GPTConfig", "MLP", "MLPConfig", "ResNet", "ResNetConfig", "from_spec"]
