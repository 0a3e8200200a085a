"""Reports from evaluation records: report.md, a self-contained report.html, and PNG plots.

``write_report(records, out_dir)`` writes records.json (the input, so ``slimkit report`` can
redo the rest), report.md, report.html (PNG plots embedded as data URIs) and two Pareto plots:
quality vs artifact bytes and quality vs latency, one panel per task, baseline starred.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from slimkit.evaluation.record import EvalRecord

PLOTS = {"pareto_bytes.png": ("artifact_bytes", "artifact size on disk (bytes, log scale)"),
         "pareto_latency.png": ("latency_ms", "latency (ms, median, log scale)")}
COLUMNS = ["model", "technique", "metric", "value", "Δ vs base", "other quality", "params", "nonzero",
           "bytes", "× smaller", "latency ms (batch)", "speedup", "peak MiB", "× less mem"]


def table_rows(records: list[EvalRecord]) -> list[list[str]]:
    """One row of formatted cells per record, ratios against the record its ``baseline`` names."""
    by_name = {r.name: r for r in records}
    rows = []
    for r in records:
        base = by_name.get(r.baseline, r)
        ratio = r.compare(base)
        rows.append([
            r.name, r.technique, r.metric, _fmt_value(r.value),
            "—" if base is r else f"{ratio['quality_delta']:+.4f}",
            ", ".join(f"{k} {_fmt_value(v)}" for k, v in r.quality.items() if k != r.metric) or "—",
            f"{r.params:,}", f"{r.nonzero:,}", f"{r.artifact_bytes:,}", f"{ratio['bytes_ratio']:.2f}",
            f"{r.latency_ms:.3f} ({r.latency_batch})", _speedup_cell(r, ratio["speedup"]),
            f"{r.peak_memory_bytes / 2**20:.2f}", f"{ratio['memory_ratio']:.2f}",
        ])
    return rows


def _speedup_cell(r: EvalRecord, speedup: float) -> str:
    """The speedup, with the quartiles of its per-pair ratios and a mark when they do not support it."""
    if not r.speedup:
        return f"{speedup:.2f}"
    return _spread(r.speedup)


def _spread(timing: dict) -> str:
    cell = f"{timing['median']:.2f} ({timing['q1']:.2f}–{timing['q3']:.2f})"
    return cell + " noisy" if timing["noisy"] else cell


def noisy_notes(records: list[EvalRecord], out: Path | None = None) -> list[str]:
    """One line per ratio its spread does not support, with the command that times it again."""
    lines = []
    for r in records:
        noisy_layers = [layer["layer"] for layer in r.notes.get("layers", [])
                        if any(t["noisy"] for t in layer.get("paired_vs_float", {}).values())]
        if not ((r.speedup and r.speedup["noisy"]) or noisy_layers):
            continue
        what = "its speedup" if r.speedup and r.speedup["noisy"] else ""
        if noisy_layers:
            what += (" and " if what else "") + f"layers {', '.join(noisy_layers)}"
        artifact = lambda name: f"artifacts/{name}" if out and (out / "artifacts" / name).exists() else f"<{name} artifact>"  # noqa: E731
        lines.append(f"- {r.name}: {what} noisy (the quartiles of the per-pair ratios straddle 1.0 or are wider "
                     f"than the effect); time it again on a quiet machine: `slimkit eval {artifact(r.name)} "
                     f"--baseline {artifact(r.baseline)} --runs 31 --quiet`")
    return lines


def markdown_table(records: list[EvalRecord]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(records)]
    return "\n".join(lines)


def write_report(records: list[EvalRecord], out_dir: str | Path, *, title: str = "slimkit report",
                 machine: str = "") -> dict[str, Path]:
    """Write every report file into ``out_dir`` and return their paths by name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"records.json": out / "records.json"}
    paths["records.json"].write_text(json.dumps(
        {"title": title, "machine": machine, "records": [r.to_dict() for r in records]}, indent=2) + "\n")
    for filename, (field, label) in PLOTS.items():
        paths[filename] = out / filename
        _pareto_plot(records, field, label, paths[filename])
    notes = _notes(records, machine)
    md = [f"# {title}", "", notes, "", markdown_table(records), ""]
    noisy = noisy_notes(records, out)
    md += ["Noisy ratios:", "", *noisy, ""] if noisy else []
    md += [f"![{name}]({name})" for name in PLOTS]
    md += layer_speed_sections(records)
    paths["report.md"] = out / "report.md"
    paths["report.md"].write_text("\n".join(md) + "\n")
    paths["report.html"] = out / "report.html"
    paths["report.html"].write_text(_html(records, title, notes, [paths[n] for n in PLOTS]))
    return paths


def read_records(run_dir: str | Path) -> tuple[list[EvalRecord], str, str]:
    """Records, title and machine line from a run folder's records.json."""
    data = json.loads((Path(run_dir) / "records.json").read_text())
    return [EvalRecord.from_dict(r) for r in data["records"]], data.get("title", ""), data.get("machine", "")


def layer_speed_sections(records: list[EvalRecord]) -> list[str]:
    """Per quantized layer: the path chosen for each batch-row range and its speed against the float layer."""
    lines = []
    for r in records:
        layers = r.notes.get("layers")
        if not layers:
            continue
        sizes = list(layers[0]["speedup_vs_float"])
        lines += ["", f"### {r.name}: per-layer speed of the chosen path vs the float layer (× faster; <1 is slower)",
                  "", "| layer | path by rows | " + " | ".join(f"{n} rows" for n in sizes) + " |",
                  "|---|---|" + "---|" * len(sizes)]
        for layer in layers:
            paths = ", ".join(f"{'≤' + str(rows) if rows is not None else 'rest'}: {path}" for rows, path in layer["paths"])
            paired = layer.get("paired_vs_float")
            cells = [_spread(paired[n]) if paired else f"{layer['speedup_vs_float'][n][_path_at(layer['paths'], int(n))]:.2f}"
                     for n in sizes]
            lines.append(f"| {layer['layer']} | {paths} | " + " | ".join(cells) + " |")
    return lines


def _path_at(paths: list, rows: int) -> str:
    return next(path for limit, path in paths if limit is None or rows <= limit)


def _notes(records: list[EvalRecord], machine: str) -> str:
    threads = sorted({r.threads for r in records})
    return (f"Machine: {machine or 'not recorded'}. Latency: median of {records[0].latency_runs if records else 0} "
            f"timed calls after warm-up (a round slowed by other processes timed again, the lowest median kept) "
            f"with {', '.join(map(str, threads))} torch thread(s), batch in "
            "brackets. Speedups timed in alternating pairs with the baseline show the median per-pair ratio "
            "and its quartiles in brackets; 'noisy' marks one its spread does not support. Bytes: exact size of the saved artifact folder. Peak memory: resident weights plus "
            "the peak allocated during one call. Ratios (× smaller, speedup, × less mem) are against each "
            "row's baseline; Δ is signed so that positive means better.")


def _fmt_value(value: float) -> str:
    return f"{value:.4f}"


def _pareto_plot(records: list[EvalRecord], field: str, label: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r.task for r in records))
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(5.2 * max(1, len(tasks)), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        group = [r for r in records if r.task == task]
        # neighbouring points get their labels above, below or level in turn, so labels do not overlap
        offsets = {id(r): (6, (4, -11, 14)[i % 3]) for i, r in enumerate(sorted(group, key=lambda r: r.value))}
        for r in group:
            is_base = r.baseline is None
            ax.scatter(getattr(r, field), r.value, marker="*" if is_base else "o",
                       s=180 if is_base else 50, color="tab:red" if is_base else "tab:blue", zorder=3,
                       label="baseline" if is_base else "compressed variant")
            ax.annotate(f"{r.name} (baseline)" if is_base else r.name, (getattr(r, field), r.value),
                        textcoords="offset points", xytext=offsets[id(r)], fontsize=8)
        front = _pareto_front(group, field)
        if len(front) > 1:
            ax.plot([getattr(r, field) for r in front], [r.value for r in front], "--", color="gray",
                    label="Pareto front", zorder=2)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))  # one legend entry per kind of mark
        ax.legend(unique.values(), unique.keys(), loc="best", fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(f"{group[0].metric} ({'higher' if group[0].higher_is_better else 'lower'} is better)")
        ax.set_title(task)
        ax.grid(True, alpha=0.3)
        ax.margins(x=0.25, y=0.15)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pareto_front(group: list[EvalRecord], field: str) -> list[EvalRecord]:
    """Records not beaten on both cost (``field``, lower is better) and quality, sorted by cost."""
    def better(a: EvalRecord, b: EvalRecord) -> bool:
        return a.value > b.value if a.higher_is_better else a.value < b.value

    front, best = [], None
    # Cheapest first; at equal cost the best quality first, so only it can join the front.
    for r in sorted(group, key=lambda r: (getattr(r, field), -r.value if r.higher_is_better else r.value)):
        if best is None or better(r, best):
            front.append(r)
            best = r
    return front


def _html(records: list[EvalRecord], title: str, notes: str, plots: list[Path]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in table_rows(records))
    images = "".join(
        f'<figure><img alt="{p.name}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"><figcaption>{p.name}</figcaption></figure>'
        for p in plots)
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}"
             "img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(notes)}</p>"
            f"<table><tr>{head}</tr>{body}</table>{images}</body></html>\n")
