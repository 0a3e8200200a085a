"""The sizes the timeline is made of: bytes of weights, gradients, optimizer states, and the
activations one block keeps for backward, per token.

Every activation term names the tensor autograd saves (Korthikanti et al. 2022, "Reducing
activation recomputation in large transformer models", section 4, counted for this code's ops) and
the dtype it is saved in under each precision regime. The constants fitted from measurement are
in ``FITTED`` with a reason each; docs/memory.md shows the arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

from slimkit.formats.doublequant import double_quant_bits
from slimkit.memory.presets import ModelShape
from slimkit.memory.setup import TrainSetup


@dataclass(frozen=True)
class Regime:
    """Bytes per element of each kind of tensor under one precision.

    weight / grad / state: trainable weights, their gradients, one optimizer moment.
    residual: the residual stream and norm inputs/outputs (fp32 under autocast: adds and norms run
        in fp32). compute: tensors made by or fed to matmuls (bf16/fp16 under autocast).
    loss: the log-probabilities cross-entropy keeps (fp32 under autocast, which upcasts the loss).
    """

    weight: int
    grad: int
    state: int
    residual: int
    compute: int
    loss: int


REGIMES = {
    "fp32": Regime(4, 4, 4, 4, 4, 4),
    "tf32": Regime(4, 4, 4, 4, 4, 4),
    "bf16": Regime(2, 2, 2, 2, 2, 2),
    "amp-bf16": Regime(4, 4, 4, 4, 2, 4),
    "amp-fp16": Regime(4, 4, 4, 4, 2, 4),
}

QLORA_BITS = double_quant_bits("nf4", 64, True)  # 4.127 bits per weight: NF4 codes + 8-bit scales
ADAMW8BIT_BLOCK = 256  # elements per absmax of slimkit.optim.AdamW8bit (a float32 each)

FITTED = {
    # Gradients in flight inside one block's backward on top of its saved activations: the grad of
    # the MLP's wide input (I elements) plus the grad of the residual stream, measured 4.4 h per
    # token in fp32 on the reference GPT (the I + h count gives 5 h).
    "backward_inner": 1.0,
    # LoRA adds a second gradient path through every adapted Linear (the adapters' input gradient
    # beside the base's): measured about 0.5 I extra elements in flight on the reference GPT in
    # fp32, bf16 and under autocast.
    "lora_inflight": 0.5,
    # slimkit AdamW8bit's per-tensor step temporaries, in float32 copies of the largest tensor (both
    # moments decoded, the update, code-book search indices, re-encoded codes): measured 11.3 and
    # 11.7 on reference GPTs with h = 256 and h = 128.
    "adamw8bit_temporaries": 11.5,
    # slimkit's QLoRA rebuilds each float weight from its NF4 codes in forward and again in backward:
    # unpacked codes, code-book lookups, scales and the float32 weight, measured 3.4-3.6 float32
    # copies of the largest Linear at widths 512 (fp32 and autocast).
    "qlora_dequantize": 3.5,
    # CUDA caching allocator: rounding and fragmentation over max_memory_allocated; not yet
    # measured (no GPU in the session that fitted these), so an assumption.
    "cuda_slack": 0.05,
}


def regime(setup: TrainSetup) -> Regime:
    return REGIMES[setup.precision]


def lora_params(shape: ModelShape, rank: int) -> int:
    """Adapter parameters: rank * (in + out) for every Linear of every block."""
    return shape.n_layer * sum(rank * (a + b) for a, b in shape.linear_shapes())


def trainable_params(shape: ModelShape, setup: TrainSetup) -> int:
    return lora_params(shape, setup.lora_rank) if setup.lora else shape.n_params()


def parameter_bytes(shape: ModelShape, setup: TrainSetup) -> float:
    """Weights as stored: frozen base (NF4 for QLoRA's block Linears) plus trainable adapters."""
    r = regime(setup)
    if not setup.lora:
        return shape.n_params() * r.weight
    base = shape.n_params() * r.weight
    if setup.qlora:
        linear = shape.block_linear_params()
        base += linear * (QLORA_BITS / 8 - r.weight)
    return base + lora_params(shape, setup.lora_rank) * r.weight


def gradient_bytes(shape: ModelShape, setup: TrainSetup) -> float:
    return trainable_params(shape, setup) * regime(setup).grad


def optimizer_state_bytes(shape: ModelShape, setup: TrainSetup) -> float:
    """AdamW: two moments in the weights' dtype; 8-bit: one byte each plus a float32 per block;
    SGD: one momentum buffer."""
    n, r = trainable_params(shape, setup), regime(setup)
    if setup.optimizer == "sgd":
        return n * r.state
    if setup.optimizer == "adamw8bit":
        return 2 * n * (1 + 4 / ADAMW8BIT_BLOCK)
    return 2 * n * r.state


def model_state_bytes(shape: ModelShape, setup: TrainSetup) -> dict[str, float]:
    """Per-rank weights, gradients, optimizer states and master weights under ``setup.zero_stage``
    over ``setup.world_size`` ranks (Rajbhandari et al. 2020, "ZeRO", figure 1): stage 1 divides the
    optimizer states (master weights included) by the world size, stage 2 also the gradients,
    stage 3 also the weights.

    With autocast and a ZeRO stage, the states are laid out as ZeRO's mixed-precision training keeps
    them: 16-bit working weights and gradients, fp32 master weights beside the fp32 moments (K = 12
    bytes per parameter with Adam), the same 16 bytes per parameter as autocast's fp32 weights.

    >>> from slimkit.memory.shapes import from_params
    >>> states = model_state_bytes(from_params(7_500_000_000), TrainSetup(precision="amp-bf16", zero_stage=1,
    ...                                                                  world_size=64))
    >>> round(sum(states.values()) / 1e9, 1)  # ZeRO's 7.5B example: 31.4 GB per rank
    31.4
    """
    n = trainable_params(shape, setup)
    states = {"parameters": parameter_bytes(shape, setup), "gradients": gradient_bytes(shape, setup),
              "optimizer_states": optimizer_state_bytes(shape, setup), "master_weights": 0.0}
    if setup.zero_stage and setup.autocast:
        states.update(parameters=parameter_bytes(shape, setup.replace(precision="bf16")), gradients=2.0 * n,
                      master_weights=4.0 * n)
    divided_from = {"optimizer_states": 1, "master_weights": 1, "gradients": 2, "parameters": 3}
    return {name: value / (setup.world_size if setup.zero_stage >= divided_from[name] else 1)
            for name, value in states.items()}


def optimizer_temporary_bytes(shape: ModelShape, setup: TrainSetup) -> float:
    """Extra bytes while the optimizer steps: foreach AdamW (CUDA default) makes a square-root
    list as large as one moment; the per-tensor loop (CPU default) two temporaries of the largest
    tensor; fused AdamW and SGD none."""
    r = regime(setup)
    largest = max(a * b for a, b in shape.linear_shapes() + [(shape.vocab, shape.hidden)])
    if setup.lora:
        largest = max(setup.lora_rank * max(a, b) for a, b in shape.linear_shapes())
    if setup.optimizer in ("sgd", "adamw-fused"):
        return 0.0
    if setup.optimizer == "adamw8bit":
        return FITTED["adamw8bit_temporaries"] * largest * 4
    if setup.device == "cuda":
        return trainable_params(shape, setup) * r.state
    return 2 * largest * r.state


@dataclass(frozen=True)
class BlockActivations:
    """Bytes per token one block keeps for backward (``stored``), the bytes its forward keeps when
    run in full (``full``: what a checkpointed block recomputes), and the gradients in flight
    during its backward (``inflight``)."""

    stored: float
    full: float
    inflight: float


def block_activations(shape: ModelShape, setup: TrainSetup) -> BlockActivations:
    """Per-token activation bytes of one block under ``setup``.

    >>> from slimkit.memory.presets import preset
    >>> round(block_activations(preset("gpt2-1.5b"), TrainSetup(precision="bf16")).full / 1600, 2)  # 34 sbh
    34.07
    """
    r = regime(setup)
    h, kv, i = shape.hidden, shape.kv_hidden, shape.intermediate
    norm_inputs = 2 * h * r.residual  # x and x + attention, kept by the two norms
    norm_stats = 2 * (8 if shape.norm == "layernorm" else 4)  # fp32 mean and 1/std per token
    linear_inputs = 2 * h * r.compute  # the norms' outputs as the qkv and fc1 inputs keep them
    qkv = (h + 2 * kv) * r.compute
    attention_out = h * r.compute  # the output projection's input
    attention = shape.n_head * 4 if setup.attention == "sdpa" else _eager_scores(shape, setup)
    mlp_inner = (2 if shape.mlp == "gelu" else 4) * i * r.compute  # fc1 out + act out (+ gate, up)
    dropout_masks = 2 * h if shape.dropout else 0  # one byte per element, residual dropouts
    lora = (len(shape.linear_shapes()) * setup.lora_rank * r.compute) if setup.lora else 0
    full = (norm_inputs + norm_stats + linear_inputs + qkv + attention_out + attention + mlp_inner
            + dropout_masks + lora)
    inflight = FITTED["backward_inner"] * (i + h) * r.compute
    if setup.lora:
        inflight += FITTED["lora_inflight"] * i * r.compute
    if setup.checkpointing == "full":
        return BlockActivations(h * r.residual, full, inflight)
    if setup.checkpointing == "selective":
        # the MLP keeps only its input (the second norm's output, in the residual dtype)
        mlp = linear_inputs / 2 + mlp_inner + (dropout_masks / 2)
        return BlockActivations(full - mlp + h * r.residual, full, inflight)
    return BlockActivations(full, full, inflight)


def _eager_scores(shape: ModelShape, setup: TrainSetup) -> float:
    """Eager attention keeps the softmax output (a s scores per token) and, with dropout, its
    one-byte mask and dropped-out copy: Korthikanti's 5 a s^2 b bytes in 16-bit."""
    c = regime(setup).compute
    per_score = c + (1 + c if shape.dropout else 0)
    return shape.n_head * setup.seq * per_score


def head_activation_bytes(shape: ModelShape, setup: TrainSetup) -> float:
    """Per token: the final norm's input and stats, and its output as the LM head keeps it."""
    r = regime(setup)
    return shape.hidden * (r.residual + r.compute) + (8 if shape.norm == "layernorm" else 4)


def logit_bytes(shape: ModelShape, setup: TrainSetup) -> float:
    """Per token at the loss's backward: the saved log-probabilities, their gradient and the
    logits' gradient, three V-wide tensors in the loss dtype: 12 bytes per logit in fp32 and
    under autocast (the cast of the gradient back to bf16 comes after the first two are freed),
    6 in bf16."""
    return shape.vocab * 3 * regime(setup).loss


def weight_copy_bytes(shape: ModelShape, setup: TrainSetup) -> float:
    """Per block: the 16-bit copies autocast makes of float Linear weights, which autograd keeps for
    the input gradient. An NF4 base (QLoRA) is dequantized inside its op and nothing is kept."""
    if not setup.autocast or setup.qlora:
        return 0.0
    return sum(a * b for a, b in shape.linear_shapes()) * regime(setup).compute


def dequantize_workspace_bytes(shape: ModelShape, setup: TrainSetup) -> float:
    """Transient bytes while one NF4 Linear is rebuilt as float (QLoRA only)."""
    if not setup.qlora:
        return 0.0
    return FITTED["qlora_dequantize"] * max(a * b for a, b in shape.linear_shapes()) * 4


def input_bytes(setup: TrainSetup) -> float:
    """The batch: int64 token ids for inputs and targets."""
    return 2 * 8 * setup.batch * setup.seq
