"""slimkit train"""

from __future__ import annotations

import json

from slimkit.cli import positive_int
from slimkit.cli.output import add_force, claim_out

HELP = ("Train or fine-tune a model with slimkit's training loop: precision (fp32/tf32/bf16/fp16), gradient "
        "accumulation, activation checkpointing, 8-bit AdamW, LoRA/QLoRA adapters, resumable checkpoints. "
        "Prints quality before and after, time, tokens/s, peak memory and trainable parameters.")
EXAMPLE = ("example:\n  slimkit train --model gpt --data pycorpus --steps 200 --precision bf16 --accumulate 4 "
           "--checkpointing --optimizer adamw8bit --lora r=8,alpha=16,targets=blocks.*.attn.qkv --out gpt-lora\n"
           "  slimkit train --model mlp --scratch --steps 1500 --lr 3e-3 --checkpoint-dir run1 --resume\n"
           "  slimkit train --model mlp --scratch --steps 300 --batch-size 64 --nproc 2")


def add_arguments(p) -> None:
    from slimkit.training import OPTIMIZERS, PRECISIONS

    p.add_argument("--model", required=True, metavar="NAME|MODEL_DIR",
                   help="a reference model (mlp, cnn, gpt: the trained one from the cache), a pretrained one (smollm2) or "
                        "a saved model folder")
    p.add_argument("--scratch", action="store_true", help="reference models: start from fresh random weights")
    p.add_argument("--data", choices=["digits", "pycorpus"], help="training data (default: the model's task)")
    p.add_argument("--steps", type=positive_int, default=200, help="optimizer steps (default 200)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="examples per micro-batch (default 16)")
    p.add_argument("--accumulate", type=positive_int, default=1, help="micro-batches per step (default 1)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="decoupled weight decay (default 0)")
    p.add_argument("--warmup", type=int, default=0, help="linear warm-up steps (default 0)")
    p.add_argument("--schedule", choices=["cosine", "constant"], default="cosine", help="after warm-up")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="numeric precision (default fp32)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw", help="optimizer (default adamw)")
    p.add_argument("--checkpointing", nargs="*", metavar="PATTERN",
                   help="activation checkpointing: alone, every block; with patterns, the modules they name "
                        "(e.g. 'blocks.*.mlp' for selective checkpointing)")
    p.add_argument("--lora", metavar="SPEC", help="train LoRA adapters only, e.g. r=8,alpha=16,targets=*qkv|*proj; "
                   "add base=nf4 for QLoRA (the frozen base stored as NF4 with double quantization)")
    p.add_argument("--merge", action="store_true", help="with --lora: fold the adapters into the weights before --out")
    p.add_argument("--clip", type=float, default=1.0, help="gradient norm clipping (default 1.0; 0 turns it off)")
    p.add_argument("--seed", type=int, default=0, help="seed of the batches and dropout (default 0)")
    p.add_argument("--threads", type=positive_int, default=2, help="torch threads (default 2)")
    p.add_argument("--nproc", type=positive_int, default=1,
                   help="data-parallel processes on this machine (DDP over torchrun, gloo on CPU): each takes "
                        "--batch-size / N examples of every batch and --threads / N threads (default 1)")
    p.add_argument("--log-dir", help="write metrics.jsonl (and TensorBoard events if installed) here")
    p.add_argument("--checkpoint-dir", help="save a resumable training checkpoint here")
    p.add_argument("--checkpoint-every", type=int, default=0, help="steps between checkpoints (default: end only)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --checkpoint-dir")
    p.add_argument("--out", help="save the trained model as a slimkit artifact here")
    add_force(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--dp-epsilon", type=float, help="DP-SGD (digits): noise calibrated to spend this epsilon over "
                   "--steps; per-sample clipping replaces --clip; the logical batch is --batch-size x --accumulate")
    p.add_argument("--dp-noise", type=float, help="DP-SGD with this noise multiplier (epsilon reported)")
    p.add_argument("--dp-delta", type=float, default=1e-5, help="DP-SGD: delta (default 1e-5)")
    p.add_argument("--max-grad-norm", type=float, default=1.0, help="DP-SGD: per-sample clipping norm C (default 1)")


def run(args) -> int:
    claim_out(args, args.model)
    from slimkit import lora, registry
    from slimkit.evaluation import parameter_counts
    from slimkit.models.tasks import get_task, infer_task
    from slimkit.io import save
    from slimkit.quantization.modules import QuantLinear
    from slimkit.quantization.paths import choose_paths
    from slimkit.training import TrainConfig, train

    _check_private(args)  # before launching or loading: a refused DP run should not wait for either
    lora_config = registry.config_from_args("lora", args) if args.lora else None  # nor a bad --lora spec
    if args.nproc > 1:
        from slimkit.distributed.command import launch_or_join

        exit_code = launch_or_join(args)  # outside torchrun: re-run this command on --nproc ranks
        if exit_code is not None:
            return exit_code
        from slimkit.distributed import train as train_ranks

        train = lambda *a: train_ranks(*a)[1]  # noqa: E731 - the same call, data parallel
    config = TrainConfig(
        steps=args.steps, lr=args.lr, weight_decay=args.weight_decay, warmup=args.warmup, schedule=args.schedule,
        optimizer=args.optimizer, precision=args.precision, accumulate=args.accumulate,
        checkpointing=_checkpointing(args.checkpointing), clip_grad_norm=args.clip or None, seed=args.seed,
        threads=args.threads, log_dir=args.log_dir, checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=args.checkpoint_every, resume=args.resume)
    model = _load_model(args.model, args.scratch)
    task_name = infer_task(model)
    task = get_task(task_name)
    before = task.quality(model)
    # a saved LoRA model comes back with its base frozen (slimkit.load restores requires_grad)
    adapters = lora.inject(model, lora_config) if lora_config else list(lora.adapter_layers(model))
    with_adapters = task.quality(model) if args.lora else None  # e.g. an NF4 base loses some quality
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = parameter_counts(model)[0]  # weights stored as codes (QLoRA's NF4 base) included
    batches = get_task(args.data or task_name).training_batches(model, args.batch_size, args.seed)
    private, config = _private_training(args, model, args.data or task_name, config)  # None without --dp-*
    result = private.train(config) if private else train(model, batches, config)
    if adapters and args.merge:
        lora.merge(model)
    if any(isinstance(m, QuantLinear) for m in model.modules()):
        choose_paths(model, threads=args.threads)  # e.g. a QLoRA base: measure its fastest execution path
    after = task.quality(model)
    summary = {"model": args.model, "data": args.data or task_name, "config": config.to_dict(),
               "quality_before": before, "quality_with_adapters": with_adapters, "quality_after": after, "steps": result.steps,
               "final_loss": result.final_loss, "seconds": result.seconds, "tokens_per_s": result.tokens_per_second,
               "peak_memory_bytes": result.peak_memory_bytes, "precision": result.precision,
               "skipped_steps": result.skipped_steps, "trainable_parameters": trainable, "parameters": total,
               "lora_layers": adapters, "metrics": result.metrics_path, "out": args.out}
    summary["privacy"] = private.guarantee() if private else None
    if args.out:
        save(model, args.out, metrics={"train": summary})
    print(json.dumps(summary, indent=2) if args.json else _table(summary))
    return 0


def _checkpointing(patterns):
    if patterns is None:
        return None
    return tuple(patterns) or "blocks"


def _load_model(spec: str, scratch: bool):
    from slimkit.io import load
    from slimkit.models import zoo

    if spec in zoo.NAMES:
        return zoo.build(spec) if scratch else zoo.reference(spec)
    from slimkit.cli import model_dir

    return load(model_dir(spec))  # a folder, or a pretrained zoo model by name (smollm2)


def _table(s: dict) -> str:
    def fmt(quality: dict) -> str:
        return ", ".join(f"{k} {v:.4g}" for k, v in quality.items())

    rows = [("quality before", fmt(s["quality_before"]))]
    if s["quality_with_adapters"]:
        rows.append(("quality with adapters, before training", fmt(s["quality_with_adapters"])))
    rows += [("quality after", fmt(s["quality_after"])),
            ("steps", f"{s['steps']} ({s['skipped_steps']} skipped)"), ("final train loss", f"{s['final_loss']:.4f}"),
            ("precision", s["precision"]), ("time", f"{s['seconds']:.1f} s"),
            ("targets/s (tokens or examples)", f"{s['tokens_per_s']:,.0f}"), ("peak memory (process)", f"{s['peak_memory_bytes'] / 2**20:,.0f} MiB"),
            ("trainable parameters", f"{s['trainable_parameters']:,} of {s['parameters']:,} "
                                     f"({100 * s['trainable_parameters'] / s['parameters']:.2f}%)")]
    if s["privacy"]:
        rows.append(("privacy (DP-SGD)", "({epsilon:.3g}, {delta:g})-DP: noise multiplier {noise_multiplier:.3g}, "
                     "C {max_grad_norm:g}, sample rate {sample_rate:.3g}, {steps} steps".format(**s["privacy"])))
    rows.append(("saved", s["out"] or "nowhere: the trained model was discarded (add --out DIR to keep it)"))
    return "\n".join(["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])


def _private_training(args, model, data: str, config):
    """--dp-epsilon / --dp-noise: DP-SGD on the digits training split; (None, config) without them."""
    if args.dp_epsilon is None and args.dp_noise is None:
        return None, config
    import dataclasses

    from slimkit.data import digits
    from slimkit.privacy import make_private

    _check_private(args, data)
    private = make_private(model, None, digits().train, noise_multiplier=args.dp_noise, target_epsilon=args.dp_epsilon,
                           steps=args.steps, max_grad_norm=args.max_grad_norm, delta=args.dp_delta,
                           batch_size=args.batch_size * args.accumulate, seed=args.seed)
    return private, dataclasses.replace(config, clip_grad_norm=None)  # per-sample clipping replaces it


def _check_private(args, data: str | None = None) -> None:
    """DP-SGD needs one record per example (the digits) and a model no earlier non-private training has seen."""
    from slimkit.errors import UserInputError
    from slimkit.models import zoo

    if args.dp_epsilon is None and args.dp_noise is None:
        return
    if args.nproc > 1:
        raise UserInputError("--dp-epsilon/--dp-noise train in one process (the noise is added once per step "
                             "on the whole batch); leave out --nproc")
    data = data or args.data or {"gpt": "pycorpus"}.get(args.model, "digits")
    if data != "digits":
        raise UserInputError(f"--dp-epsilon/--dp-noise train on the digits (one example per record), not {data}")
    if args.model in zoo.NAMES and not args.scratch:
        raise UserInputError(f"the reference {args.model} was trained on these digits without privacy; add --scratch "
                             "so that the DP guarantee covers all of its training")
