"""N:M sparse Linear layers on CUDA through torch's semi-structured (2:4) sparse tensors.

torch.sparse.to_sparse_semi_structured stores a 2:4 weight compressed and runs it with the
CUTLASS/cuSPARSELt kernels; it helps only for some shapes and batch sizes (on an H100 a bf16
8192x8192 matmul ran at 0.79x of dense), so ``to_semi_structured`` converts only the layers that
measure faster (benchmarks/bench_sparse_gpu.py sweeps the shapes). Needs CUDA and fp16/bf16.

>>> prune(model, PruneConfig(nm=(2, 4)))  # doctest: +SKIP
>>> converted = to_semi_structured(model.half().cuda(), example_batch=256)  # doctest: +SKIP
"""

from __future__ import annotations

import torch
from torch import nn

from slimkit.errors import UserInputError
from slimkit.pruning.masks import remove_mask
from slimkit.timing import latency_ms


def is_two_four(weight: torch.Tensor) -> bool:
    """True when every 4 consecutive input weights of each row hold at most 2 nonzeros."""
    rows = weight.reshape(weight.shape[0], -1)
    return rows.shape[1] % 4 == 0 and bool(((rows.reshape(rows.shape[0], -1, 4) != 0).sum(-1) <= 2).all())


@torch.no_grad()
def to_semi_structured(model: nn.Module, *, example_batch: int = 256, only_faster: bool = True) -> dict[str, float]:
    """Swap the 2:4-sparse Linear weights of a CUDA fp16/bf16 model for semi-structured sparse tensors.

    Returns {layer: measured dense time / sparse time} for every 2:4 layer considered; with
    ``only_faster`` a layer is converted only when that ratio is above 1.
    """
    if not torch.cuda.is_available():
        raise UserInputError("semi-structured sparse kernels need a CUDA GPU; none is available")
    from torch.sparse import to_sparse_semi_structured

    speedups = {}
    for name, layer in model.named_modules():
        if not (isinstance(layer, nn.Linear) and layer.weight.is_cuda and layer.weight.dtype in
                (torch.float16, torch.bfloat16) and is_two_four(layer.weight)):
            continue
        x = torch.randn(example_batch, layer.in_features, device=layer.weight.device, dtype=layer.weight.dtype)
        dense = latency_ms(lambda: (layer(x), torch.cuda.synchronize()), threads=torch.get_num_threads())
        sparse_weight = to_sparse_semi_structured(layer.weight.detach())
        sparse = latency_ms(lambda: (nn.functional.linear(x, sparse_weight, layer.bias), torch.cuda.synchronize()),
                            threads=torch.get_num_threads())
        speedups[name] = dense / sparse
        if speedups[name] > 1 or not only_faster:
            remove_mask(layer)  # the compressed layout holds the 2:4 zeros itself; no hook may write into it
            layer.weight = nn.Parameter(sparse_weight, requires_grad=False)
    return speedups
