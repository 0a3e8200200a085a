"""Real data that ships offline: scikit-learn's digits, the standard library's source, MiniLM."""

from slimkit.data.digits import Digits, Split, digits
from slimkit.data.minilm import MiniLM, embed, minilm, sentences
from slimkit.data.pycorpus import PyCorpus, eval_windows, pycorpus, random_windows

__all__ = [
    "Digits", "Split", "digits",
    "MiniLM", "embed", "minilm", "sentences",
    "PyCorpus", "eval_windows", "pycorpus", "random_windows",
]
