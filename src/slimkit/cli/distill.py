"""slimkit distill"""

from __future__ import annotations

import json

from slimkit.cli import positive_int
from slimkit.cli.output import add_force, claim_out

HELP = ("Knowledge distillation: train a student (a new architecture from a spec, or a saved model to recover "
        "after pruning/quantization) to mimic a teacher, and print teacher, student-before and student-after "
        "quality, size and time.")
EXAMPLE = ("example:\n  slimkit distill --teacher gpt --student gpt:n_layer=2,n_head=2,n_embd=64 --data pycorpus "
           "--steps 600 --temperature 2 --alpha 0.9 --out gpt-student\n"
           "  slimkit distill --teacher cnn --student mlp:hidden=64-32 --features net.3:layers.1 --feature-weight 1")


def add_arguments(p) -> None:
    from slimkit.distillation.config import FEATURE_LOSSES, MODES, RELATIONS
    from slimkit.training import PRECISIONS

    p.add_argument("--teacher", required=True, metavar="NAME|MODEL_DIR",
                   help="a reference model (mlp, cnn, gpt: the trained one) or a saved model folder")
    p.add_argument("--student", required=True, metavar="SPEC|MODEL_DIR",
                   help="a new architecture, NAME:key=value,... (e.g. gpt:n_layer=2,n_embd=64 or mlp:hidden=64-32), "
                        "the teacher's own Hugging Face config with fewer layers and a narrower MLP initialised from "
                        "its weights (teacher:depth=0.5,mlp=0.75), or a saved model folder (e.g. a pruned or "
                        "quantized copy of the teacher)")
    p.add_argument("--data", choices=["digits", "pycorpus"], help="training data (default: the teacher's task)")
    p.add_argument("--mode", choices=MODES, default="offline", help="offline (default), online, or self")
    p.add_argument("--temperature", type=float, default=2.0, help="softmax temperature T (default 2)")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the KD loss vs hard labels (default 0.5)")
    p.add_argument("--features", nargs="*", default=[], metavar="STUDENT:TEACHER",
                   help="module name pairs whose outputs are matched (with --feature-weight)")
    p.add_argument("--feature-loss", choices=FEATURE_LOSSES, default="mse")
    p.add_argument("--feature-weight", type=float, default=0.0, help="weight of the feature loss")
    p.add_argument("--relation", choices=RELATIONS, default="none", help="relation loss (with --relation-weight)")
    p.add_argument("--relation-weight", type=float, default=0.0)
    p.add_argument("--attention-weight", type=float, default=0.0, help="weight of attention transfer on --features")
    p.add_argument("--steps", type=positive_int, default=500, help="optimizer steps (default 500)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="examples per step (default 16)")
    p.add_argument("--lr", type=float, help="peak learning rate (default 3e-3 for slimkit's reference models; 1e-4 "
                   "for a pretrained Hugging Face teacher such as smollm2, whose student starts from its weights)")
    p.add_argument("--warmup", type=int, help="warm-up steps (default: a tenth of --steps, at most 20)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--seed", type=int, default=0, help="seed of the student's init and the batches (default 0)")
    p.add_argument("--threads", type=positive_int, default=2, help="torch threads (default 2)")
    p.add_argument("--out", help="save the trained student as a slimkit artifact here")
    add_force(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args) -> int:
    claim_out(args, args.teacher, args.student)
    from slimkit import registry
    from slimkit.errors import UserInputError
    from slimkit.io import save
    from slimkit.models.tasks import get_task, infer_task
    from slimkit.training import TrainConfig

    config = registry.config_from_args("distill", args)
    warmup = min(20, args.steps // 10) if args.warmup is None else args.warmup
    teacher = _model(args.teacher, reference=True)
    pretrained = hasattr(getattr(teacher, "config", None), "to_dict")  # a transformers model: a pretrained LLM
    lr = args.lr if args.lr is not None else 1e-4 if pretrained else 3e-3
    train_config = TrainConfig(steps=args.steps, lr=lr, warmup=warmup, precision=args.precision,
                               seed=args.seed, threads=args.threads)
    if args.student.startswith("teacher:"):  # fewer layers / a narrower MLP of the teacher itself
        from slimkit.recipes.steps import student_model

        student = student_model(teacher, args.student, args.seed)
    else:
        student = _model(args.student, reference=False, seed=args.seed)
    task = get_task(args.data or infer_task(teacher))
    if infer_task(student) != task.name:
        raise UserInputError(f"the student ({type(student).__name__}) is a {infer_task(student)} model and cannot learn "
                             f"the {task.name} task of the teacher ({type(teacher).__name__}); pick a student of the "
                             "same kind")
    teacher_quality, before = task.quality(teacher), task.quality(student)
    inputs = registry.Inputs(data=task, train=train_config, batch_size=args.batch_size, student=student)
    result = registry.apply(teacher, "distill", config, inputs).report
    summary = {"teacher": args.teacher, "student": args.student, "task": task.name,
               "teacher_quality": teacher_quality, "student_before": before, "student_after": task.quality(student),
               "teacher_parameters": _params(teacher), "student_parameters": _params(student),
               "steps": result.steps, "seconds": result.seconds, "final_loss": result.final_loss,
               "distill": config.to_dict(), "out": args.out}
    if args.out:
        save(student, args.out, metrics={"distill": summary})
    print(json.dumps(summary, indent=2) if args.json else _table(summary))
    return 0


def _model(spec: str, *, reference: bool, seed: int = 0):
    from pathlib import Path

    from slimkit.io import load
    from slimkit.models import zoo
    from slimkit.models.spec import from_spec

    if Path(spec).is_dir():
        return load(spec)
    if reference and spec in zoo.NAMES:
        return zoo.reference(spec)
    if reference and spec in zoo.PRETRAINED:
        return load(zoo.hf_folder(spec))
    return from_spec(spec, seed)


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _table(s: dict) -> str:
    def fmt(quality: dict) -> str:
        return ", ".join(f"{k} {v:.4g}" for k, v in quality.items())

    rows = [("teacher", f"{fmt(s['teacher_quality'])} ({s['teacher_parameters']:,} parameters)"),
            ("student before", f"{fmt(s['student_before'])} ({s['student_parameters']:,} parameters, "
                               f"{s['student_parameters'] / s['teacher_parameters']:.2f}x the teacher)"),
            ("student after", fmt(s["student_after"])),
            ("steps / time", f"{s['steps']} / {s['seconds']:.1f} s")]
    if s["out"]:
        rows.append(("saved", s["out"]))
    return "\n".join(["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])
