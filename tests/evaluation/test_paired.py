"""Speedups timed in alternating pairs with the baseline: kept with their spread in the record, shown in
the table with 'noisy' and the command to time them again."""

import dataclasses

from slimkit.evaluation import evaluate
from slimkit.evaluation.record import EvalRecord
from slimkit.evaluation.report import markdown_table, noisy_notes
from slimkit.models import from_spec
from slimkit.models.tasks import get_task


def _record(name, baseline=None, speedup=None):
    return EvalRecord(name=name, task="digits", technique="t", metric="accuracy", value=0.9, higher_is_better=True,
                      quality={"accuracy": 0.9}, params=10, nonzero=10, artifact_bytes=100, latency_ms=1.0,
                      latency_batch=1, latency_runs=15, threads=2, peak_memory_bytes=1000, baseline=baseline,
                      speedup=speedup)


def test_evaluate_against_a_baseline_model_keeps_the_pairs_spread():
    task, base, model = get_task("digits"), from_spec("mlp:hidden=32"), from_spec("mlp:hidden=16")
    record = evaluate(model, task, name="small", baseline="base", baseline_model=base, runs=5)
    timing = record.speedup
    assert timing["pairs"] == 15 and timing["q1"] <= timing["median"] <= timing["q3"]
    assert record.latency_ms == timing["latency_ms"] and record.latency_runs == 15
    assert record.compare(dataclasses.replace(record, speedup=None))["speedup"] == timing["median"]
    assert EvalRecord.from_dict(record.to_dict()) == record


def test_a_noisy_ratio_is_marked_with_the_command_that_times_it_again(tmp_path):
    records = [_record("mlp"), _record("mlp-int8", "mlp", {"median": 1.05, "q1": 0.9, "q3": 1.3, "noisy": True}),
               _record("mlp-lowrank", "mlp", {"median": 1.8, "q1": 1.7, "q3": 1.9, "noisy": False})]
    table = markdown_table(records)
    assert "| 1.05 (0.90–1.30) noisy |" in table and "| 1.80 (1.70–1.90) |" in table
    (tmp_path / "artifacts" / "mlp-int8").mkdir(parents=True)
    (tmp_path / "artifacts" / "mlp").mkdir()
    [line] = noisy_notes(records, tmp_path)
    assert line.startswith("- mlp-int8: its speedup noisy")
    assert "`slimkit eval artifacts/mlp-int8 --baseline artifacts/mlp --runs 31 --quiet`" in line


def test_layer_speed_against_its_float_layer_is_timed_in_pairs_and_shown_with_its_spread():
    import torch

    from slimkit import WeightQuantConfig, quantize
    from slimkit.evaluation.bench import layer_speedups
    from slimkit.evaluation.report import layer_speed_sections

    layer = quantize(torch.nn.Sequential(torch.nn.Linear(32, 16)), WeightQuantConfig("int8", group_size=None))[0]
    timings = layer_speedups(layer, [1, 4], threads=1)
    assert sorted(timings) == ["1", "4"] and all(t["q1"] <= t["median"] <= t["q3"] for t in timings.values())
    notes = {"layers": [{"layer": "0", "paths": [[None, "dequant"]], "speedup_vs_float": {"1": {"dequant": 291.0}},
                         "paired_vs_float": {"1": {"median": 0.9, "q1": 0.5, "q3": 1.2, "noisy": True}}}]}
    record = dataclasses.replace(_record("mlp-int8", "mlp"), notes=notes)
    assert "| 0 | rest: dequant | 0.90 (0.50–1.20) noisy |" in layer_speed_sections([record])
    assert "layers 0 noisy" in noisy_notes([_record("mlp"), record])[0]


def test_layers_the_path_choice_timed_as_one_are_paired_once(monkeypatch):
    """A decoder repeats each layer per block: its per-layer pairs are timed once per shape, not per layer."""
    import slimkit.evaluation as evaluation
    from slimkit import WeightQuantConfig, quantize
    from slimkit.models import GPT, GPTConfig
    from slimkit.quantization.paths import choose_paths

    model = quantize(GPT(GPTConfig(n_layer=3)).eval(), WeightQuantConfig("int8", group_size=None))
    choose_paths(model, probe_rows=(1,), runs=5, rounds=1, threads=1)
    timed = []
    monkeypatch.setattr(evaluation, "layer_speedups", lambda layer, rows, threads: timed.append(layer) or {
        "1": {"median": 1.0, "q1": 1.0, "q3": 1.0, "noisy": False}})
    layers = evaluation._layer_notes(model, threads=1, paired=True)["layers"]
    assert len(layers) == 3 * len(timed)  # one timing per kind of layer of the 3 identical blocks
    assert len({(m.in_features, m.out_features) for m in timed}) == len(timed)
    first = {layer["layer"].split(".", 2)[-1]: layer for layer in layers if layer["layer"].startswith("blocks.0.")}
    for layer in layers:
        if not layer["layer"].startswith("blocks.0."):
            twin = first[layer["layer"].split(".", 2)[-1]]
            assert layer["paired_as"] == twin["layer"] and layer["paired_vs_float"] is twin["paired_vs_float"]
