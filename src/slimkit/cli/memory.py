"""slimkit memory"""

from __future__ import annotations

import json

from slimkit.cli import positive_int

HELP = ("Predict where a training step's memory goes (weights, gradients, optimizer states, activations, "
        "logits, temporaries) and when it peaks; --budget recommends the cheapest techniques that fit; "
        "--measure runs real steps and prints the measured peak beside the prediction. MODEL is a preset, "
        "a Hugging Face config.json (or its folder), or 'gpt' (slimkit's reference GPT, see --gpt).")
EXAMPLE = ("example:\n  slimkit memory llama-7b --precision amp-bf16 --batch 4 --seq 2048 --device cuda --budget 24GB\n"
           "  slimkit memory gpt --gpt 4,4,128 --batch 8 --seq 256 --precision amp-bf16 --measure\n"
           "  slimkit memory --params 7e9 --optimizer adamw8bit --json\n"
           "  slimkit memory --params 7.5e9 --precision amp-bf16 --zero-stage 3 --world-size 64 --json")


def add_arguments(p) -> None:
    from slimkit.memory.presets import PRESETS
    from slimkit.memory.setup import ATTENTION, CHECKPOINTING, DEVICES, OPTIMIZERS, PRECISIONS, ZERO_STAGES

    p.add_argument("model", metavar="MODEL", nargs="?", help=f"{', '.join(PRESETS)}, a config.json, or gpt")
    p.add_argument("--params", type=float, help="only a parameter count (e.g. 7e9): a GPT-like shape is assumed")
    p.add_argument("--gpt", metavar="LAYERS,HEADS,WIDTH", default="4,4,128",
                   help="shape of the reference GPT for MODEL=gpt (default 4,4,128)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    p.add_argument("--optimizer", default="adamw", choices=OPTIMIZERS)
    p.add_argument("--batch", type=positive_int, default=8, help="sequences per micro-batch (default 8)")
    p.add_argument("--seq", type=positive_int, default=128, help="tokens per sequence (default 128)")
    p.add_argument("--accumulate", type=positive_int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--checkpointing", default="none", choices=CHECKPOINTING)
    p.add_argument("--attention", default="sdpa", choices=ATTENTION)
    p.add_argument("--lora-rank", type=int, default=0, help="LoRA rank on every block Linear (0: full fine-tune)")
    p.add_argument("--qlora", action="store_true", help="NF4 double-quantized frozen base (needs --lora-rank)")
    p.add_argument("--device", default="cpu", choices=DEVICES, help="decides AdamW's implementation and slack")
    p.add_argument("--zero-stage", type=int, default=0, choices=ZERO_STAGES,
                   help="ZeRO sharding over --world-size ranks: 1 optimizer states, 2 + gradients, 3 + weights (FSDP)")
    p.add_argument("--world-size", type=positive_int, default=1, help="data-parallel ranks (default 1); figures are per rank")
    p.add_argument("--budget", help="memory to fit, e.g. 24GB or 80GiB: prints whether it fits and a recommendation")
    p.add_argument("--measure", action="store_true", help="run real steps (MODEL=gpt) and print measured vs predicted")
    p.add_argument("--steps", type=positive_int, default=3, help="steps to measure, the first a warm-up (default 3)")
    p.add_argument("--json", action="store_true", help="print bytes as JSON")


def run(args) -> int:
    from slimkit.errors import UserInputError
    from slimkit.memory import TrainSetup, plan
    from slimkit.memory.recommend import parse_bytes, recommend

    setup = TrainSetup(precision=args.precision, optimizer=args.optimizer, batch=args.batch, seq=args.seq,
                       accumulate=args.accumulate, checkpointing=args.checkpointing, attention=args.attention,
                       lora_rank=args.lora_rank, qlora=args.qlora, device=args.device, zero_stage=args.zero_stage,
                       world_size=args.world_size)
    shape, model = _shape_and_model(args)
    prediction = plan(shape, setup)
    out = prediction.to_dict()
    if args.budget:
        budget = parse_bytes(args.budget)
        out["budget"], out["fits"] = int(budget), prediction.peak <= budget
        if not out["fits"]:
            found = recommend(shape, setup, budget)
            out["recommendation"] = None if found is None else {
                "changes": [{"change": c, "cost": why} for c, why in found.changes],
                "total": int(found.plan.peak), "setup": found.setup.to_dict()}
    if args.measure:
        if model is None:
            raise UserInputError("--measure runs real steps of slimkit's reference GPT: use MODEL=gpt (with --gpt)")
        from slimkit.memory import measure

        measured = measure(model, setup, steps=args.steps)
        out["measured"] = {"peak": measured.peak, "phase": measured.phase, "device": measured.device,
                           "error_percent": round(100 * (prediction.peak / measured.peak - 1), 2)}
    print(json.dumps(out, indent=2) if args.json else _table(out))
    return 0


def _shape_and_model(args):
    """(ModelShape, live reference GPT or None) from MODEL / --params / --gpt."""
    from slimkit.errors import UserInputError
    from slimkit.memory import from_module, from_params, shape_of

    if (args.model is None) == (args.params is None):
        raise UserInputError("give exactly one of MODEL (a preset, config.json or gpt) and --params N")
    if args.params is not None:
        return from_params(int(args.params)), None
    if args.model != "gpt":
        return shape_of(args.model), None
    import torch

    from slimkit.models.gpt import GPT, GPTConfig

    try:
        n_layer, n_head, n_embd = (int(v) for v in args.gpt.split(","))
    except ValueError:
        raise UserInputError(f"--gpt {args.gpt!r}: write LAYERS,HEADS,WIDTH, e.g. 4,4,128") from None
    torch.manual_seed(0)
    try:
        model = GPT(GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=args.seq))
    except ValueError as exc:
        raise UserInputError(f"--gpt {args.gpt}: {exc}") from None
    return from_module(model), model


def _table(out: dict) -> str:
    gib = 2**30
    lines = [f"{out['model']}: peak {out['total'] / gib:.3f} GiB during {out['peak_phase']}", "",
             "| component at the peak | GiB |", "|---|---|"]
    lines += [f"| {k} | {v / gib:.3f} |" for k, v in out.items()
              if isinstance(v, int) and not isinstance(v, bool) and k not in ("budget", "model_states")]
    setup = out["setup"]
    lines.append(f"\nmodel states (weights, gradients, optimizer states) per rank: {out['model_states'] / gib:.3f} GiB"
                 + (f" (ZeRO stage {setup['zero_stage']}, {setup['world_size']} ranks)" if setup["world_size"] > 1 else ""))
    lines += ["", "| phase | GiB |", "|---|---|"] + [f"| {k} | {v / gib:.3f} |" for k, v in out["phases"].items()]
    if "fits" in out:
        lines.append(f"\nbudget {out['budget'] / 1e9:.2f} GB = {out['budget'] / gib:.2f} GiB: {'fits' if out['fits'] else 'does not fit'}")
        rec = out.get("recommendation", "")
        if rec:
            lines.append(f"cheapest set-up that fits ({rec['total'] / gib:.2f} GiB):")
            lines += [f"  - {c['change']}: {c['cost']}" for c in rec["changes"]]
        elif rec is None:
            lines.append("nothing the planner knows fits; a larger device or sharding (--zero-stage 3 --world-size N) "
                         "is needed")
    if "measured" in out:
        m = out["measured"]
        lines.append(f"\nmeasured peak ({m['device']}): {m['peak'] / gib:.4f} GiB during {m['phase']}; "
                     f"predicted {out['total'] / gib:.4f} GiB ({m['error_percent']:+.1f}%)")
    return "\n".join(lines)
