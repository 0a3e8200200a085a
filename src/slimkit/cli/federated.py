"""slimkit federated"""

from __future__ import annotations

import json

from slimkit.cli import positive_int
from slimkit.cli.output import add_force, claim_out

HELP = ("Federated averaging on the digits: the training split divided over simulated clients (non-IID by a "
        "Dirichlet(alpha) split of each class, or IID), local SGD epochs per round, client sampling, weighted "
        "FedAvg; optionally DP-FedAvg (--clip, --noise: client-level epsilon reported) and pairwise-mask secure "
        "aggregation (--secure). Prints test accuracy per round and at the end; --out saves the global model.")
EXAMPLE = ("example:\n  slimkit federated --clients 10 --alpha 0.3 --rounds 50\n"
           "  slimkit federated --clients 20 --clients-per-round 10 --clip 1.0 --noise 1.0 --secure --json\n"
           "  slimkit federated --clients 10 --alpha 0.3 --rounds 50 --nproc 2   # clients in 2 gloo processes")


def add_arguments(p) -> None:
    p.add_argument("--model", default="mlp", metavar="SPEC", help="a fresh model from a spec (default mlp; "
                   "e.g. mlp:hidden=64-32)")
    p.add_argument("--clients", type=positive_int, default=10, help="simulated clients (default 10)")
    split = p.add_mutually_exclusive_group()
    split.add_argument("--alpha", type=float, default=0.3, help="Dirichlet concentration (default 0.3: non-IID)")
    split.add_argument("--iid", action="store_true", help="split the examples IID instead")
    p.add_argument("--rounds", type=positive_int, default=50, help="communication rounds (default 50)")
    p.add_argument("--clients-per-round", type=positive_int, help="clients sampled per round (default: all)")
    p.add_argument("--local-epochs", type=positive_int, default=5, help="local SGD epochs per round (default 5)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="local batch size (default 32)")
    p.add_argument("--lr", type=float, default=0.1, help="local SGD learning rate (default 0.1)")
    p.add_argument("--clip", type=float, help="DP-FedAvg: clip each client update to this L2 norm")
    p.add_argument("--noise", type=float, default=0.0, help="DP-FedAvg: noise multiplier on the clipped sum")
    p.add_argument("--delta", type=float, default=1e-5, help="DP-FedAvg: delta of the reported epsilon")
    p.add_argument("--secure", action="store_true", help="secure aggregation (pairwise masks)")
    p.add_argument("--seed", type=int, default=0, help="seed of split, sampling and batches (default 0)")
    p.add_argument("--threads", type=positive_int, default=2, help="torch threads (default 2)")
    p.add_argument("--nproc", type=positive_int, default=1, help="run the clients in N processes over "
                   "torch.distributed (torchrun, gloo): each trains its share of every round's clients (default 1)")
    p.add_argument("--eval-every", type=positive_int, default=10, help="rounds between test accuracies (default 10)")
    p.add_argument("--out", help="save the global model as a slimkit artifact here")
    add_force(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args) -> int:
    claim_out(args)
    import torch

    from slimkit.data import digits
    from slimkit.models.tasks import get_task
    from slimkit.io import save
    from slimkit.models.spec import from_spec
    from slimkit.privacy.federated import FederatedConfig, federated_average

    if args.nproc > 1:
        from slimkit.distributed.command import launch_or_join

        exit_code = launch_or_join(args)  # outside torchrun: re-run this command on --nproc processes
        if exit_code is not None:
            return exit_code
    config = FederatedConfig(clients=args.clients, alpha=None if args.iid else args.alpha, rounds=args.rounds,
                             clients_per_round=args.clients_per_round, local_epochs=args.local_epochs,
                             batch_size=args.batch_size, lr=args.lr, clip=args.clip, noise_multiplier=args.noise,
                             delta=args.delta, secure_aggregation=args.secure, seed=args.seed)
    model = from_spec(args.model, seed=args.seed)
    task = get_task("digits")
    curve: dict[int, float] = {}

    def on_round(done: int, m) -> None:
        if done % args.eval_every == 0 or done == args.rounds:
            curve[done] = task.quality(m)["accuracy"]

    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        result = federated_average(model, digits().train, config, on_round=on_round)
    finally:
        torch.set_num_threads(previous)
    summary = {"config": config.to_dict(), "accuracy": curve[args.rounds], "accuracy_by_round": curve,
               "client_sizes": result.client_sizes, "epsilon": result.epsilon, "delta": args.delta if
               args.clip else None, "seconds": result.seconds, "out": args.out}
    if args.out:
        save(model, args.out, metrics={"federated": summary})
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    kind = "DP-FedAvg" if args.clip else "FedAvg"
    split = "IID" if args.iid else f"Dirichlet alpha={args.alpha:g}"
    print(f"{kind}: {args.clients} clients ({split}; sizes {min(result.client_sizes)}-{max(result.client_sizes)}), "
          f"{config.per_round} per round, {args.rounds} rounds, {result.seconds:.1f} s"
          + (", secure aggregation" if args.secure else ""))
    print("| round | test accuracy |\n|---|---|")
    for done, accuracy in curve.items():
        print(f"| {done} | {accuracy:.4f} |")
    if result.epsilon is not None:
        print(f"client-level privacy: ({result.epsilon:.3g}, {args.delta:g})-DP")
    if args.out:
        print(f"wrote {args.out}")
    return 0
