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
    paths["report.html"].write_text(_html(records, title, notes, [paths[n] for n in PLOTS],
                                          (["Noisy ratios:", "", *noisy] if noisy else []) + layer_speed_sections(records)))
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
            name = layer["layer"] + (f" (timed as {layer['paired_as']})" if "paired_as" in layer else "")
            lines.append(f"| {name} | {paths} | " + " | ".join(cells) + " |")
    return lines


def _path_at(paths: list, rows: int) -> str:
    return next(path for limit, path in paths if limit is None or rows <= limit)


def _notes(records: list[EvalRecord], machine: str) -> str:
    threads = sorted({r.threads for r in records})
    timing = ("calls timed in alternating pairs with the baseline's, in one window (baselines: a round slowed "
              "by other processes timed again, the lowest median kept)" if any(r.speedup for r in records) else
              "timed calls after warm-up (a round slowed by other processes timed again, the lowest median kept)")
    return (f"Machine: {machine or 'not recorded'}. Latency: median of {records[-1].latency_runs if records else 0} "
            f"{timing} with {', '.join(map(str, threads))} torch thread(s), batch in "
            "brackets. Speedups timed in alternating pairs with the baseline show the median per-pair ratio "
            "and its quartiles in brackets; 'noisy' marks one its spread does not support. Bytes: exact size of the saved artifact folder. Peak memory: resident weights plus "
            "the peak allocated during one call. Ratios (× smaller, speedup, × less mem) are against each "
            "row's baseline; Δ is signed so that positive means better.")


def _fmt_value(value: float) -> str:
    return f"{value:.4f}"


def _pareto_plot(records: list[EvalRecord], field: str, label: str, path: Path) -> None:
    """One wide panel per task, stacked; each point's name in a column right of the axes, joined to its
    dot by a leader line (names never overlap, however close the dots are)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r.task for r in records)) or [""]
    fig, axes = plt.subplots(len(tasks), 1, figsize=(11, 5.2 * len(tasks)), squeeze=False)
    for ax, task in zip(axes[:, 0], tasks):
        group = [r for r in records if r.task == task]
        for r in group:
            is_base = r.baseline is None
            ax.scatter(getattr(r, field), r.value, marker="*" if is_base else "o", s=180 if is_base else 50,
                       color="tab:red" if is_base else "tab:blue", zorder=3,
                       label="baseline" if is_base else "compressed variant")
        front = _pareto_front(group, field)
        if len(front) > 1:
            ax.plot([getattr(r, field) for r in front], [r.value for r in front], "--", color="gray",
                    label="Pareto front", zorder=2)
        ax.set_xscale("log")
        ax.margins(x=0.15, y=0.1)
        _log_ticks(ax)
        _label_column(ax, group, field)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))  # one legend entry per kind of mark
        ax.legend(unique.values(), unique.keys(), loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3,
                  fontsize=9, frameon=False)
        ax.set_xlabel(label)
        ax.set_ylabel(f"{group[0].metric} ({'higher' if group[0].higher_is_better else 'lower'} is better)"
                      if group else "")
        ax.set_title(task)
        ax.grid(True, alpha=0.3)
    height = 5.2 * len(tasks)  # inches: 0.4 above the first title, 1.0 below the last legend
    fig.subplots_adjust(left=0.08, right=0.72, top=1 - 0.4 / height, bottom=1.0 / height, hspace=0.45)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _label_column(ax, group: list[EvalRecord], field: str) -> None:
    """Names right of the axes at their dots' heights, pushed apart to one line each, with leader lines."""
    bottom, top = ax.get_ylim()
    order = sorted(group, key=lambda r: r.value)
    heights = [(r.value - bottom) / (top - bottom) for r in order]
    gap = min(0.07, 0.96 / max(1, len(order)))
    for i in range(1, len(heights)):  # upwards: each at least one line above the one below
        heights[i] = max(heights[i], heights[i - 1] + gap)
    if heights:
        heights[-1] = min(heights[-1], 0.98)
    for i in range(len(heights) - 2, -1, -1):  # then downwards from the top, if the column ran over
        heights[i] = min(heights[i], heights[i + 1] - gap)
    for r, height in zip(order, heights):
        is_base = r.baseline is None
        ax.annotate(f"{r.name} (baseline)" if is_base else r.name, (getattr(r, field), r.value),
                    xytext=(1.03, height), textcoords="axes fraction", va="center", fontsize=9,
                    color="tab:red" if is_base else "black", fontweight="bold" if is_base else "normal",
                    annotation_clip=False,
                    arrowprops={"arrowstyle": "-", "color": "0.65", "lw": 0.7, "shrinkA": 2, "shrinkB": 4})


def _log_ticks(ax) -> None:
    """Plain tick labels ("20k", "0.5") at 1, 2 and 5 of each decade, or at every digit when fewer than
    three of those fall in the range, or evenly spaced ones in a range narrower still; minor ticks unlabelled."""
    import math

    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter

    low, high = ax.get_xlim()
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    for subs in ((1, 2, 5), range(1, 10)):
        ticks = [m * 10.0 ** e for e in decades for m in subs if low <= m * 10.0 ** e <= high]
        if len(ticks) >= 3:
            break
    else:
        ticks = [t for t in MaxNLocator(nbins=5).tick_values(low, high) if low <= t <= high]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _short_number(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _short_number(value: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


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


def _markdown_html(lines: list[str]) -> str:
    """The report's extra markdown (### headings, tables, "- " notes, paragraphs) as HTML."""
    parts, rows = [], []

    def cells(line: str) -> list[str]:
        return [html.escape(c.strip()) for c in line.strip().strip("|").split("|")]

    for line in [*lines, ""]:
        if line.startswith("|"):
            rows.append(line)
            continue
        if rows:  # a table ended: header, separator, body
            head = "".join(f"<th>{c}</th>" for c in cells(rows[0]))
            body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in cells(r)) + "</tr>" for r in rows[2:])
            parts.append(f"<table class='layers'><tr>{head}</tr>{body}</table>")
            rows = []
        if line.startswith("### "):
            parts.append(f"<h3>{html.escape(line[4:])}</h3>")
        elif line.startswith("- "):
            parts.append(f"<p class='note'>{html.escape(line[2:]).replace('`', '')}</p>")
        elif line:
            parts.append(f"<p>{html.escape(line)}</p>")
    return "".join(parts)


def _html(records: list[EvalRecord], title: str, notes: str, plots: list[Path], extra: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in table_rows(records))
    images = "".join(
        f'<figure><img alt="{p.name}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"><figcaption>{p.name}</figcaption></figure>'
        for p in plots)
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}"
             "figure{margin:1.5em 0}img{width:100%;max-width:1210px}p.note{font-family:monospace}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(notes)}</p>"
            f"<table class='records'><tr>{head}</tr>{body}</table>{images}{_markdown_html(extra)}</body></html>\n")
