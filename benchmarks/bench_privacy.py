"""Private training benchmark: DP-SGD accuracy, step time and memory, the accountant against Opacus, FedAvg.

Run: /tmp/peers/venv/bin/python benchmarks/bench_privacy.py   (Opacus is measured where it imports;
any venv with slimkit works, the Opacus rows are then left out.)
Prints markdown tables (the machine on the first line):
1. digits MLP accuracy: non-private beside DP-SGD at epsilon 1, 3 and 8 (delta 1e-5), same recipe;
2. one training step (batch 256): non-private SGD, slimkit DP-SGD (ghost clipping, vmap), Opacus
   (hooks, ghost); median of 7 interleaved steps after 2 warm-up steps, and the peak memory of a step
   (resident weights + the profiler's peak of allocations), as ratios to non-private;
3. epsilon from slimkit's accountant and from Opacus's RDPAccountant for the same settings;
4. FedAvg with 10 Dirichlet(0.3) clients beside centralised training.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from slimkit.data import digits
from slimkit.machine import machine_line
from slimkit.evaluation.bench import peak_memory_bytes
from slimkit.models.tasks import get_task
from slimkit.models import zoo
from slimkit.models.spec import from_spec
from slimkit.privacy import FederatedConfig, epsilon, federated_average, make_private
from slimkit.training import TrainConfig, random_examples, train
from slimkit.training.loop import TrainState, cross_entropy_loss, train_step
from slimkit.training.precision import Precision

DP_RECIPE = dict(steps=100, batch_size=512, lr=2e-2)  # AdamW, cosine; chosen on the training split's loss
ACCOUNTANT_SETTINGS = [(256 / 60000, 1.1, 14063), (0.004, 1.1, 15000), (512 / 1257, 6.23, 100),
                       (0.01, 0.7, 5000), (0.2, 2.0, 300), (0.001, 0.5, 100000)]


def accuracy(model) -> float:
    return get_task("digits").quality(model)["accuracy"]


def accuracy_table(seeds: int) -> list[str]:
    d = digits().train
    rows = []
    recipe = TrainConfig(steps=DP_RECIPE["steps"], lr=DP_RECIPE["lr"], threads=2)
    nonprivate = []
    for seed in range(seeds):
        model = from_spec("mlp", seed=seed)
        train(model, random_examples(d.x, d.y, DP_RECIPE["batch_size"], seed), recipe)
        nonprivate.append(accuracy(model))
    rows.append(("non-private, same recipe (clip 1.0 on the batch gradient)", "-", "-", nonprivate))
    rows.append(("non-private reference MLP (zoo recipe: 1500 steps of 64)", "-", "-", [accuracy(zoo.reference("mlp"))]))
    for target in (1.0, 3.0, 8.0):
        accs = []
        for seed in range(seeds):
            model = from_spec("mlp", seed=seed)
            private = make_private(model, None, d, target_epsilon=target, steps=DP_RECIPE["steps"],
                                   batch_size=DP_RECIPE["batch_size"], max_grad_norm=1.0, seed=seed)
            private.train(TrainConfig(steps=DP_RECIPE["steps"], lr=DP_RECIPE["lr"], clip_grad_norm=None, threads=2,
                                      seed=seed))
            accs.append(accuracy(model))
        rows.append((f"DP-SGD, target epsilon {target:g}", f"{private.epsilon():.3f}",
                     f"{private.noise_multiplier:.2f}", accs))
    lines = [f"Digits MLP (64-256-128-10), {len(d)} training examples, {DP_RECIPE['steps']} steps of "
             f"{DP_RECIPE['batch_size']} (sample rate {DP_RECIPE['batch_size'] / len(d):.3f}), AdamW lr "
             f"{DP_RECIPE['lr']}, C = 1, delta = 1e-5, {seeds} seed(s)\n",
             "| training | epsilon | noise multiplier | test accuracy (mean) | per seed |", "|---|---|---|---|---|"]
    for name, eps, sigma, accs in rows:
        lines.append(f"| {name} | {eps} | {sigma} | {statistics.mean(accs):.4f} | "
                     f"{', '.join(f'{a:.3f}' for a in accs)} |")
    return lines


class Step:
    """One optimizer step on a fixed batch: the loop's train_step (slimkit) or Opacus's."""

    def __init__(self, spec: str, batch, kind: str) -> None:
        torch.manual_seed(0)
        self.model, self.batch, self.kind = from_spec(spec), batch, kind
        optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-3)
        if kind.startswith("opacus"):
            self._opacus(optimizer, kind.split("-")[1])
            return
        self.loss_fn, self.callbacks = cross_entropy_loss, ()
        if kind != "nonprivate":
            x, y = batch
            private = make_private(self.model, optimizer, (x.repeat(8, 1, 1, 1), y.repeat(8)), noise_multiplier=1.0,
                                   batch_size=len(y), engine=kind, delta=1e-5)
            self.loss_fn, self.callbacks = private.loss_fn, (private,)
        config = TrainConfig(clip_grad_norm=None)
        self.state = TrainState(self.model, optimizer, config)
        self.precision = Precision.create("fp32", torch.device("cpu"))
        self.run = self._slimkit_step

    def _slimkit_step(self) -> None:
        train_step(self.model, [self.batch], self.loss_fn, self.precision, self.state, self.callbacks)
        for callback in self.callbacks:  # the accountant's step, as the loop does after every step
            callback.on_step_end(self.state)

    def _opacus(self, optimizer, mode: str) -> None:
        from opacus import PrivacyEngine

        x, y = self.batch
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=len(y))
        engine = PrivacyEngine(accountant="rdp")
        criterion = torch.nn.CrossEntropyLoss()
        made = engine.make_private(module=self.model, optimizer=optimizer, data_loader=loader, criterion=criterion,
                                   noise_multiplier=1.0, max_grad_norm=1.0, poisson_sampling=False,
                                   grad_sample_mode=mode)
        self.model, optimizer = made[0], made[1]
        criterion = made[2] if mode == "ghost" else criterion

        def run():
            optimizer.zero_grad(set_to_none=True)
            criterion(self.model(x), y).backward()
            optimizer.step()

        self.run = run

    def __call__(self):
        with torch.enable_grad():
            self.run()


def step_table(runs: int) -> list[str]:
    d = digits().train
    kinds = ["nonprivate", "ghost", "vmap"]
    try:
        import opacus

        kinds += ["opacus-hooks", "opacus-ghost"]
        peer = f"opacus {opacus.__version__}"
    except ImportError:
        peer = "opacus not installed"
    names = {"nonprivate": "non-private SGD step", "ghost": "slimkit DP-SGD, ghost clipping",
             "vmap": "slimkit DP-SGD, torch.func vmap", "opacus-hooks": "Opacus DP-SGD (hooks, per-sample grads)",
             "opacus-ghost": "Opacus DP-SGD (ghost clipping)"}
    lines = [f"One training step, batch 256 of digits, SGD, noise multiplier 1, C = 1 ({peer})\n",
             "| model | step | time (ms) | time ratio | step peak (MiB) | peak ratio |", "|---|---|---|---|---|---|"]
    for spec in ("mlp", "mlp:hidden=512-512"):
        batch = (d.x[:256], d.y[:256])
        steps = {}
        for kind in kinds:
            try:
                steps[kind] = Step(spec, batch, kind)
                steps[kind](), steps[kind]()  # warm-up
            except Exception as exc:  # a peer's failure is reported, not fatal
                lines.append(f"| {spec} | {names[kind]} | failed: {type(exc).__name__}: {str(exc)[:80]} | | | |")
                steps.pop(kind, None)
        peaks = {k: peak_memory_bytes(s.model, s) for k, s in steps.items()}
        times = {k: [] for k in steps}
        for _ in range(runs):
            for kind, step in steps.items():
                start = time.perf_counter()
                step()
                times[kind].append(time.perf_counter() - start)
        median = {k: statistics.median(t) for k, t in times.items()}
        for kind in steps:
            lines.append(f"| {spec} | {names[kind]} | {1000 * median[kind]:.2f} | "
                         f"{median[kind] / median['nonprivate']:.2f} | {peaks[kind] / 2**20:.1f} | "
                         f"{peaks[kind] / peaks['nonprivate']:.2f} |")
    return lines


def accountant_table() -> list[str]:
    lines = ["Epsilon at delta = 1e-5, RDP orders 1.1..10.9 and 12..63 (Opacus's defaults)\n",
             "| sample rate | noise multiplier | steps | slimkit | Opacus RDPAccountant | relative difference |",
             "|---|---|---|---|---|---|"]
    try:
        from opacus.accountants import RDPAccountant
    except ImportError:
        RDPAccountant = None
    for q, sigma, steps in ACCOUNTANT_SETTINGS:
        ours = epsilon(sigma, q, steps, 1e-5)
        theirs = diff = "-"
        if RDPAccountant is not None:
            accountant = RDPAccountant()
            accountant.history = [(sigma, q, steps)]
            value = accountant.get_epsilon(delta=1e-5)
            theirs, diff = f"{value:.6f}", f"{abs(ours - value) / value:.1e}"
        lines.append(f"| {q:.5g} | {sigma:g} | {steps} | {ours:.6f} | {theirs} | {diff} |")
    return lines


def federated_table() -> list[str]:
    d = digits().train
    rows = [("centralised: reference MLP (zoo recipe, all 1257 examples)", accuracy(zoo.reference("mlp")), None)]
    model = from_spec("mlp")
    central = FederatedConfig(clients=1, alpha=None, rounds=50)  # one client: plain SGD on all examples
    result = federated_average(model, d, central)
    rows.append(("centralised: the same SGD (one client holding every example), 50 x 5 epochs", accuracy(model),
                 result.seconds))
    for name, config in [
            ("FedAvg, 10 clients IID, 50 rounds", FederatedConfig(clients=10, alpha=None, rounds=50)),
            ("FedAvg, 10 clients Dirichlet(0.3), 50 rounds", FederatedConfig(clients=10, alpha=0.3, rounds=50)),
            ("FedAvg, 10 clients Dirichlet(0.3), 50 rounds, secure aggregation",
             FederatedConfig(clients=10, alpha=0.3, rounds=50, secure_aggregation=True)),
            ("FedAvg, 10 clients Dirichlet(0.3), 5 of 10 per round, 50 rounds",
             FederatedConfig(clients=10, alpha=0.3, rounds=50, clients_per_round=5))]:
        model = from_spec("mlp")
        result = federated_average(model, d, config)
        rows.append((name, accuracy(model), result.seconds))
    defaults = FederatedConfig()
    lines = [f"Digits MLP, local SGD lr {defaults.lr}, batch {defaults.batch_size}, {defaults.local_epochs} local "
             "epochs per round, in one process\n",
             "| training | test accuracy | points vs centralised reference | seconds |", "|---|---|---|---|"]
    for name, acc, seconds in rows:
        lines.append(f"| {name} | {acc:.4f} | {100 * (acc - rows[0][1]):+.1f} | "
                     f"{'-' if seconds is None else f'{seconds:.1f}'} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the accuracy table (default 3)")
    parser.add_argument("--runs", type=int, default=7, help="timed steps per variant (default 7)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"Machine: {machine_line(2)}\n")
    for make_table in (lambda: accuracy_table(args.seeds), lambda: step_table(args.runs), accountant_table,
                       federated_table):
        print("\n".join(make_table()) + "\n", flush=True)  # each table as soon as it is measured


if __name__ == "__main__":
    main()
