"""One training step as a timeline: the bytes live at the moments that can be the peak.

Forward keeps activations block by block; the loss's backward adds the V-wide log-probability
gradients on top of all of them; each block's backward frees its activations while its gradients
appear (a checkpointed block first recomputes its forward); the optimizer step holds every
gradient plus its temporaries. The peak is the largest of these moments, not the sum of the
largest parts.
"""

from __future__ import annotations

from dataclasses import dataclass

from slimkit.memory.estimate import (
    FITTED,
    block_activations,
    dequantize_workspace_bytes,
    gradient_bytes,
    head_activation_bytes,
    input_bytes,
    logit_bytes,
    model_state_bytes,
    optimizer_temporary_bytes,
    regime,
    weight_copy_bytes,
)
from slimkit.memory.presets import ModelShape
from slimkit.memory.setup import TrainSetup

COMPONENTS = ("parameters", "gradients", "optimizer_states", "master_weights", "activations", "weight_copies",
              "logits", "optimizer_temporaries", "buffers", "allocator_slack")


@dataclass(frozen=True)
class Plan:
    """Predicted bytes at each moment of a step, by component, and which moment is the peak.

    >>> plan("gpt2-1.5b", TrainSetup(precision="amp-bf16", batch=1, seq=1024)).peak_phase  # doctest: +SKIP
    'backward (loss)'
    """

    shape: ModelShape
    setup: TrainSetup
    phases: dict[str, dict[str, float]]

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=lambda name: self.phases[name]["total"])

    @property
    def peak(self) -> float:
        return self.phases[self.peak_phase]["total"]

    @property
    def breakdown(self) -> dict[str, float]:
        """Components live at the peak; they sum to ``total``."""
        return self.phases[self.peak_phase]

    def model_states(self) -> float:
        """Weights + gradients + optimizer states + master weights (ZeRO's "model states"), per rank."""
        b = self.phases["optimizer step"]
        return b["parameters"] + b["gradients"] + b["optimizer_states"] + b["master_weights"]

    def to_dict(self) -> dict:
        """Bytes under stable keys: the breakdown at the peak, ``peak_phase`` and each phase's total."""
        return {**{k: int(v) for k, v in self.breakdown.items()}, "model_states": int(self.model_states()),
                "peak_phase": self.peak_phase,
                "phases": {name: int(b["total"]) for name, b in self.phases.items()},
                "model": self.shape.name, "setup": self.setup.to_dict()}


def plan(shape: ModelShape, setup: TrainSetup) -> Plan:
    """Predict the bytes live through one training step of ``shape`` under ``setup``."""
    tokens = setup.batch * setup.seq
    L, r = shape.n_layer, regime(setup)
    block = block_activations(shape, setup)
    states = model_state_bytes(shape, setup)  # per rank, sharded by the ZeRO stage
    grads = states["gradients"]
    static = {"parameters": states["parameters"], "optimizer_states": states["optimizer_states"],
              "master_weights": states["master_weights"], "buffers": 0.0}
    copies = weight_copy_bytes(shape, setup)
    kept_copies = _kept_copy_fraction(shape, setup) * copies  # per block, from forward until its backward
    head_copy = shape.vocab * shape.hidden * r.compute if setup.autocast else 0.0
    # gradients of earlier micro-batches stay live through the next one's forward and backward
    accumulated = grads if setup.accumulate > 1 else 0.0
    stored = tokens * (L * block.stored + head_activation_bytes(shape, setup)) + input_bytes(setup)
    head_grad = 0.0 if setup.lora else shape.vocab * shape.hidden * r.grad * grads / gradient_bytes(shape, setup)
    logits_forward = shape.vocab * (r.compute + r.loss + (r.loss if r.compute != r.loss else 0))

    def moment(activations, logits, gradients, weight_copies, temporaries=0.0):
        parts = {**static, "gradients": gradients, "activations": activations, "weight_copies": weight_copies,
                 "logits": logits, "optimizer_temporaries": temporaries}
        dynamic = activations + logits + weight_copies + temporaries
        parts["allocator_slack"] = FITTED["cuda_slack"] * dynamic if setup.device == "cuda" else 0.0
        parts = {k: parts[k] for k in COMPONENTS}
        parts["total"] = sum(parts.values())
        return parts

    # autocast caches its casts of trainable weights until forward ends, checkpointed or not;
    # casts of frozen ones (LoRA) live only as long as autograd keeps them
    forward_copies = (L * kept_copies if setup.lora else L * copies) + head_copy
    workspace = dequantize_workspace_bytes(shape, setup)  # while a block's backward rebuilds a weight
    recomputed = tokens * (block.full + block.inflight) - tokens * block.stored
    phases = {
        "forward": moment(stored, tokens * logits_forward, accumulated, forward_copies),
        "backward (loss)": moment(stored, tokens * logit_bytes(shape, setup), accumulated,
                                  L * kept_copies + head_copy),
        "backward (last block)": moment(stored + recomputed, 0.0, max(accumulated, head_grad),
                                        L * kept_copies + copies - kept_copies + workspace),
        "backward (first block)": moment(tokens * (block.full + block.inflight) + input_bytes(setup), 0.0, grads,
                                         copies + workspace),
        "optimizer step": moment(input_bytes(setup), 0.0, grads, 0.0, optimizer_temporary_bytes(shape, setup)),
    }
    return Plan(shape, setup, phases)


def _kept_copy_fraction(shape: ModelShape, setup: TrainSetup) -> float:
    """Share of a block's weight copies kept until its backward: none when the block is
    checkpointed, the attention Linears' when only the MLP is."""
    if setup.checkpointing == "full":
        return 0.0
    if setup.checkpointing == "selective":
        linears = shape.linear_shapes()
        attention = linears[: len(linears) - (2 if shape.mlp == "gelu" else 3)]
        return sum(a * b for a, b in attention) / sum(a * b for a, b in linears)
    return 1.0
