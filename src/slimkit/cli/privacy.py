"""slimkit privacy"""

from __future__ import annotations

import argparse
import json
import math

from slimkit.cli import positive_int

HELP = ("The DP-SGD privacy budget without training (as TF Privacy's compute_dp_sgd_privacy): 'epsilon' gives "
        "the (epsilon, delta) of a run from its noise multiplier, sample rate and steps (RDP accountant of the "
        "sampled Gaussian mechanism, Opacus's orders); 'noise' gives the smallest noise multiplier for a "
        "target epsilon. The sample rate is --sample-rate or --batch-size / --dataset-size; the steps are "
        "--steps or --epochs / sample rate.")
EXAMPLE = ("example:\n  slimkit privacy epsilon --noise 1.1 --sample-rate 0.004 --steps 15000 --delta 1e-5\n"
           "  slimkit privacy noise --epsilon 3 --dataset-size 60000 --batch-size 256 --epochs 60 --json")


def add_arguments(p) -> None:
    actions = p.add_subparsers(dest="action", required=True, metavar="epsilon|noise", parser_class=type(p))
    for action, text in (("epsilon", "epsilon of a run"), ("noise", "noise multiplier for a target epsilon")):
        q = actions.add_parser(action, help=text, description=text, epilog=EXAMPLE,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        if action == "epsilon":
            q.add_argument("--noise", type=float, required=True, help="noise multiplier sigma (noise std / C)")
        else:
            q.add_argument("--epsilon", type=float, required=True, help="target epsilon")
        q.add_argument("--sample-rate", type=float, help="probability that an example is in a batch (B / N)")
        q.add_argument("--dataset-size", type=positive_int, metavar="N", help="training examples")
        q.add_argument("--batch-size", type=positive_int, metavar="B", help="expected examples per step")
        q.add_argument("--steps", type=positive_int, help="optimizer steps")
        q.add_argument("--epochs", type=float, help="passes over the data (steps = ceil(epochs / sample rate))")
        q.add_argument("--delta", type=float, default=1e-5, help="delta (default 1e-5; keep it below 1/N)")
        q.add_argument("--json", action="store_true", help="print the result as JSON")
        q.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars (there are none)")


def run(args) -> int:
    import warnings

    import numpy as np

    from slimkit.errors import UserInputError
    from slimkit.privacy.accountant import DEFAULT_ORDERS, epsilon_from_rdp, noise_for_epsilon, rdp_sampled_gaussian

    rate = _sample_rate(args)
    if (args.steps is None) == (args.epochs is None):
        raise UserInputError("give exactly one of --steps and --epochs")
    steps = args.steps or math.ceil(args.epochs / rate)
    if args.dataset_size and args.delta >= 1 / args.dataset_size:
        warnings.warn(f"delta={args.delta:g} >= 1/N = {1 / args.dataset_size:.3g}: use a delta below 1/N", stacklevel=1)
    noise = args.noise if args.action == "epsilon" else noise_for_epsilon(args.epsilon, rate, steps, args.delta)
    rdp = rdp_sampled_gaussian(rate, noise, DEFAULT_ORDERS) * steps
    eps, order = epsilon_from_rdp(rdp, DEFAULT_ORDERS, args.delta)
    result = {"epsilon": eps, "delta": args.delta, "noise_multiplier": noise, "sample_rate": rate, "steps": steps,
              "epochs": steps * rate, "optimal_order": order,
              "accountant": "RDP, sampled Gaussian (Mironov et al. 2019), Balle et al. 2020 conversion"}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    if order in (DEFAULT_ORDERS[0], DEFAULT_ORDERS[-1]) and np.isfinite(eps):
        print(f"note: the best RDP order is at the end of the searched range ({order:g}); the bound may be loose")
    print(f"DP-SGD with noise multiplier {noise:.4g}, sample rate {rate:.4g} and {steps} steps "
          f"({steps * rate:.3g} epochs) satisfies ({eps:.3g}, {args.delta:g})-DP (RDP order {order:g}).")
    return 0


def _sample_rate(args) -> float:
    from slimkit.errors import UserInputError

    if args.sample_rate is not None:
        if args.batch_size:
            raise UserInputError("give --sample-rate or --batch-size with --dataset-size, not both")
        if not 0 < args.sample_rate <= 1:
            raise UserInputError(f"--sample-rate {args.sample_rate} must lie in (0, 1]")
        return args.sample_rate
    if not (args.batch_size and args.dataset_size):
        raise UserInputError("give --sample-rate, or --batch-size and --dataset-size")
    if args.batch_size > args.dataset_size:
        raise UserInputError(f"--batch-size {args.batch_size} is larger than --dataset-size {args.dataset_size}")
    return args.batch_size / args.dataset_size
