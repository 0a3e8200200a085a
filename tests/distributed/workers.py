"""What each spawned rank runs in tests/distributed: one spawn of 2 gloo processes does every 2-rank
check (spawning costs seconds per process), rank 0 writes the figures to a JSON file the tests read."""

from __future__ import annotations

import json
import os
import time

import torch
import torch.multiprocessing as mp

SPEC = "gpt:n_layer=2,n_head=2,n_embd=64,block_size=16"
GLOBAL_BATCH = 8


def spawn(target, world_size: int, out_dir: str, timeout_s: float = 120.0) -> list[int]:
    """Start ``target(rank, world_size, out_dir)`` in ``world_size`` processes; their exit codes."""
    port = 29500 + os.getpid() % 1000
    context = mp.get_context("spawn")
    procs = [context.Process(target=_run, args=(target, rank, world_size, port, out_dir)) for rank in range(world_size)]
    for proc in procs:
        proc.start()
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()
    return [proc.exitcode for proc in procs]


def _run(target, rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    target(rank, world_size, out_dir)


def batches(seed: int = 0):
    from slimkit.data import pycorpus, random_windows
    from slimkit.training import GeneratorBatches

    val = pycorpus().val
    return GeneratorBatches(lambda g: random_windows(val, GLOBAL_BATCH, 16, g), seed=seed)


def fresh_gpt():
    from slimkit.models import from_spec

    return from_spec(SPEC)


def full(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def max_diff(model_a, model_b) -> float:
    a, b = dict(model_a.named_parameters()), dict(model_b.named_parameters())
    return max(float((full(a[name]).detach() - b[name].detach()).abs().max()) for name in b)


def two_rank_checks(rank: int, world_size: int, out_dir: str) -> None:
    """DDP and FSDP equal to one process, tensor parallelism equal to one process, sharded checkpoints."""
    from slimkit import distributed
    from slimkit.training import TrainConfig, train

    info = distributed.init("gloo", timeout_s=60)
    config = TrainConfig(steps=4, lr=1e-3, accumulate=2, seed=0)
    reference, exact, norms = fresh_gpt(), fresh_gpt().double(), GradNorms()
    train(reference, batches(), config, callbacks=[norms])  # one process, the whole global batch
    train(exact, batches(), config)  # the same run in float64: how far float32 rounding alone moves it
    results = {"one_process_rounding": max_diff(reference, exact), "one_process_grad_norms": norms.values}
    for strategy in ("ddp", "fsdp"):
        norms = GradNorms()
        model, result = distributed.train(fresh_gpt(), batches(), config, strategy=strategy, info=info,
                                          callbacks=[norms])
        results[f"{strategy}_vs_one_process"] = max_diff(model.module if strategy == "ddp" else model, reference)
        results[f"{strategy}_grad_norms"] = norms.values
    model, bf16 = distributed.train(fresh_gpt(), batches(), config, strategy="fsdp", info=info,
                                    fsdp_config=distributed.FSDPConfig(param_dtype="bf16"))
    results["fsdp_bf16_first_loss_change"] = abs(bf16.losses[0] / result.losses[0] - 1)
    results["fsdp_bf16_param_dtype"] = str(model.wte.weight.dtype)
    results.update(_tensor_parallel(info))
    results.update(_checkpoints(info, out_dir))
    results.update(_qlora(info, out_dir))
    if rank == 0:
        with open(os.path.join(out_dir, "results.json"), "w") as f:
            json.dump(results, f)
    distributed.destroy()


def _tensor_parallel(info) -> dict:
    from torch.distributed.device_mesh import init_device_mesh

    from slimkit import distributed

    x = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(1))
    reference, parallel = fresh_gpt(), fresh_gpt()
    reference(x).square().mean().backward()
    distributed.parallelize_gpt(parallel, init_device_mesh("cpu", (info.world_size,)))
    out = parallel(x)
    out.square().mean().backward()
    diffs = {"tp_forward": float((full(out) - reference(x)).detach().abs().max())}
    grads = []
    for (name, p), q in zip(parallel.named_parameters(), reference.parameters()):
        grad = full(p.grad)
        if name.endswith("attn.qkv.weight") or name.endswith("attn.qkv.bias"):
            grad = distributed.gather_qkv_rows(grad, info.world_size)
        grads.append(float((grad - q.grad).abs().max()))
    diffs["tp_backward"] = max(grads)
    return diffs


def _checkpoints(info, out_dir: str) -> dict:
    """FSDP + AdamW8bit + fp16 loss scaling: 2 steps, sharded checkpoint; the test resumes it at world size 1."""
    from slimkit import distributed
    from slimkit.training import TrainConfig

    config = TrainConfig(steps=2, lr=1e-2, schedule="constant", optimizer="adamw8bit", precision="fp16", seed=0,
                         checkpoint_dir=os.path.join(out_dir, "ckpt"))
    capture = Capture()
    model, _ = distributed.train(fresh_gpt(), batches(), config, strategy="fsdp", info=info, callbacks=[capture])
    # the run the resumed one must match: 4 steps without interruption, on these 2 ranks
    straight, _ = distributed.train(fresh_gpt(), batches(), TrainConfig(
        **{**config.to_dict(), "steps": 4, "checkpoint_dir": None}), strategy="fsdp", info=info)
    full_params = {name: full(p).detach() for name, p in straight.named_parameters()}
    if info.rank == 0:
        torch.save({"saved": capture.at_end, "straight": full_params}, os.path.join(out_dir, "params.pt"))
    return {"sharded_local_rows": int(model.blocks[0].attn.qkv.weight.to_local().shape[0])}


def _qlora(info, out_dir: str) -> dict:
    """A QLoRA GPT (NF4 base in buffers) under FSDP: trains, saves and resumes at the same world size."""
    from slimkit import distributed, lora
    from slimkit.training import TrainConfig

    def qlora_gpt():
        model = fresh_gpt()
        lora.inject(model, lora.LoRAConfig.parse("r=4,alpha=8,targets=blocks.*.attn.qkv|blocks.*.mlp.0,base=nf4"))
        return model

    directory = os.path.join(out_dir, "qlora")
    config = TrainConfig(steps=2, lr=1e-2, schedule="constant", seed=0, checkpoint_dir=directory)
    distributed.train(qlora_gpt(), batches(), config, strategy="fsdp", info=info)
    counter = StepCounter()
    resumed, _ = distributed.train(qlora_gpt(), batches(), TrainConfig(
        **{**config.to_dict(), "steps": 3, "resume": True}), strategy="fsdp", info=info, callbacks=[counter])
    straight, _ = distributed.train(qlora_gpt(), batches(), TrainConfig(
        **{**config.to_dict(), "steps": 3, "checkpoint_dir": None}), strategy="fsdp", info=info)
    return {"qlora_resume_vs_straight": max_diff(resumed, _Plain(straight)), "qlora_steps_after_resume": counter.steps}


def training_state(model, optimizer) -> dict[str, torch.Tensor]:
    """Parameters and optimizer state (8-bit codes and absmax included) as full tensors, by name."""
    values = {name: full(p).detach().clone() for name, p in model.named_parameters()}
    names = {id(p): name for name, p in model.named_parameters()}
    for param, state in optimizer.state.items():
        values.update({f"{names[id(param)]}.{key}": full(v).clone() for key, v in state.items()})
    return values


class Capture:
    """The full training state when a run starts (after a resume) and when it ends."""

    def on_train_start(self, state) -> None:
        self.at_start = training_state(state.model, state.optimizer)

    def on_train_end(self, state) -> None:
        self.at_end = training_state(state.model, state.optimizer)


class GradNorms:
    """The global gradient norm of every step, before clipping (a wrong gradient average changes it)."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_before_optimizer_step(self, state) -> None:
        self.values.append(float(state.grad_norm))


class StepCounter:
    """Counts the steps a run really makes (a resumed run makes only the remaining ones)."""

    def __init__(self) -> None:
        self.steps = 0

    def on_step_end(self, state) -> None:
        self.steps += 1


class _Plain(torch.nn.Module):
    """A model's parameters gathered into plain tensors, for max_diff."""

    def __init__(self, model) -> None:
        super().__init__()
        self.values = {name: full(p).detach() for name, p in model.named_parameters()}

    def named_parameters(self, *args, **kwargs):
        return iter(self.values.items())


def dead_rank(rank: int, world_size: int, out_dir: str) -> None:
    """Rank 1 dies after joining; rank 0 must stop with RankFailure within the timeout."""
    from slimkit import distributed

    info = distributed.init("gloo", timeout_s=5)
    if rank == 1:
        os._exit(3)
    start = time.monotonic()
    try:
        time.sleep(1)
        distributed.check_peers(info)
        message = "no error"
    except distributed.RankFailure as exc:
        message = str(exc)
    with open(os.path.join(out_dir, "dead.json"), "w") as f:
        json.dump({"message": message, "seconds": time.monotonic() - start}, f)
    os._exit(0)
