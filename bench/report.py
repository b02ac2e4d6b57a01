"""Figures, their statistics, the ratio summary, and the JSON / markdown / PNG outputs.

A figure is one measured quantity of one target, with every run kept: the report shows
the median and the spread ((max - min) / median). Ratios always read "how many times as
good as the best peer": value / best for higher-is-better figures, best / value for
lower-is-better ones (seconds, latency, memory), so >= 1.0 means Cairn is at least as good.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NOT_RUN = "not run"


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile, ``p`` in [0, 100]; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


def summarize(runs: list[float]) -> dict[str, float]:
    if not runs:
        return {}
    med = statistics.median(runs)
    lo, hi = min(runs), max(runs)
    spread = (hi - lo) / med * 100 if med else 0.0
    return {"median": med, "min": lo, "max": hi, "spread_pct": spread}


@dataclass
class Figure:
    label: str
    unit: str
    better: str  # "higher" or "lower"
    group: str
    runs: list[float] = field(default_factory=list)
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "unit": self.unit, "better": self.better, "group": self.group,
                "runs": self.runs, **summarize(self.runs), **({"error": self.error} if self.error else {}),
                **({"extra": self.extra} if self.extra else {})}


@dataclass
class TargetResult:
    name: str
    status: str = "ok"  # "ok" or "not run: <reason>"
    note: str = ""
    replicas: int = 1
    figures: dict[str, Figure] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    background_cores: float = 0.0  # average cores used by processes not ours while the target ran

    def figure(self, fid: str, label: str, unit: str, better: str, group: str) -> Figure:
        if fid not in self.figures:
            self.figures[fid] = Figure(label, unit, better, group)
        return self.figures[fid]

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "note": self.note, "replicas": self.replicas, "errors": self.errors,
                "background_cores": self.background_cores,
                "figures": {k: f.to_json() for k, f in self.figures.items()}}


def median_of(data: dict[str, Any], target: str, fid: str) -> float | None:
    fig = data["targets"].get(target, {}).get("figures", {}).get(fid)
    return fig.get("median") if fig and fig.get("runs") else None


def ratio(value: float | None, best: float | None, better: str) -> float | None:
    if value is None or best is None or value <= 0 or best <= 0:
        return None
    return value / best if better == "higher" else best / value


def best_peer(data: dict[str, Any], fid: str, subject: str = "cairn", min_replicas: int = 1) -> tuple[str, float] | None:
    """(peer, median) of the best peer for figure ``fid``, among peers with enough replicas."""
    found = []
    for name, t in data["targets"].items():
        if name == subject or t.get("replicas", 1) < min_replicas:
            continue
        fig = t.get("figures", {}).get(fid)
        if fig and fig.get("runs"):
            found.append((name, fig["median"], fig["better"]))
    if not found:
        return None
    pick = max if found[0][2] == "higher" else min
    name, med, _ = pick(found, key=lambda x: x[1])
    return name, med


# (figure id, comparison, threshold, description): "peer" thresholds are ratios to the
# best peer, "max" an absolute ceiling in the figure's own unit.
GOALS = [
    ("put_large_x1", "peer", 1.0, "single-stream {large} PUT >= 1.0x best peer"),
    ("get_large_x1", "peer", 1.0, "single-stream {large} GET >= 1.0x best peer"),
    ("small_put_c16_ops", "peer", 1.0, "4 KiB PUT ops/s at concurrency 16 >= 1.0x best peer"),
    ("small_get_c16_ops", "peer", 1.0, "4 KiB GET ops/s at concurrency 16 >= 1.0x best peer"),
    ("small_put_c1_p50", "max", 5.0, "4 KiB PUT p50 < 5 ms (concurrency 1)"),
    ("list_big_s", "peer", 1.0, "full listing of {big} keys >= 1.0x best peer"),
    ("failover_leader_s", "max", 2.0, "leader SIGKILL to next successful PUT < 2 s"),
    ("rss_frontend_MiB", "max", 200.0, "frontend peak RSS < 200 MiB"),
]


def goals(data: dict[str, Any], subject: str = "cairn") -> list[dict[str, Any]]:
    out = []
    words = data.get("meta", {}).get("size_words", {})
    for fid, kind, threshold, text in GOALS:
        fig = data["targets"].get(subject, {}).get("figures", {}).get(fid)
        row: dict[str, Any] = {"goal": text.format(**{"large": "64 MiB", "big": "100,000", **words}), "figure": fid}
        value = fig.get("median") if fig and fig.get("runs") else None
        if value is None:
            row.update(verdict="NOT MEASURED", detail=(fig or {}).get("error", "no data"))
        elif kind == "max":
            row.update(verdict="PASS" if value < threshold else "SHORT",
                       detail=f"{value:.3g} {fig['unit']} (limit {threshold:g})")
        else:
            best = best_peer(data, fid, subject)
            r = ratio(value, best[1] if best else None, fig["better"])
            if r is None:
                row.update(verdict="NO PEER", detail=f"{value:.3g} {fig['unit']}, no peer measured")
            else:
                row.update(verdict="PASS" if r >= threshold else "SHORT",
                           detail=f"{r:.2f}x ({value:.3g} vs {best[0]} {best[1]:.3g} {fig['unit']})")
        out.append(row)
    return out


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}" if abs(v) >= 1 else f"{v:.2g}"


def cell(fig: dict[str, Any] | None) -> str:
    if not fig:
        return "-"
    if not fig.get("runs"):
        err = fig.get("error", "")
        if not err:
            return "-"
        return err[:90] if err.startswith("not measured") else f"failed: {err[:70]}"
    s = fmt(fig["median"])
    if len(fig["runs"]) > 1:
        s += f" ±{fig['spread_pct'] / 2:.0f}%"
    return s


def figure_ids(data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every figure id in first-seen order, with the first description found."""
    seen: dict[str, dict[str, Any]] = {}
    for t in data["targets"].values():
        for fid, fig in t.get("figures", {}).items():
            seen.setdefault(fid, fig)
    return list(seen.items())


def markdown(data: dict[str, Any], subject: str = "cairn") -> str:
    names = list(data["targets"])
    lines = []
    status = [f"- **{n}**: {t['status']}" + (f" — {t['note']}" if t.get("note") else "")
              + (f" (other processes on the machine used {t['background_cores']:.1f} of the cores meanwhile)"
                 if t.get("background_cores", 0) >= 0.2 else "")
              + "".join(f"; error: {e}" for e in t.get("errors", [])) for n, t in data["targets"].items()]
    lines += ["Targets:", "", *status, ""]
    head = ["figure", *names]
    with_ratio = subject in data["targets"] and len(names) > 1
    if with_ratio:
        head += [f"{subject} / best peer", f"{subject} / best 3-copy peer"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for fid, desc in figure_ids(data):
        row = [f"{desc['label']} ({desc['unit']})"]
        row += [cell(data["targets"][n].get("figures", {}).get(fid)) if data["targets"][n]["status"] == "ok"
                else NOT_RUN for n in names]
        if with_ratio:
            mine = median_of(data, subject, fid)
            for reps in (1, 3):
                best = best_peer(data, fid, subject, reps)
                r = ratio(mine, best[1] if best else None, desc["better"])
                row.append(f"{r:.2f}x ({best[0]})" if r is not None and best else "-")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Cells: median ± half the (max - min) spread over the runs, as a % of the median. "
              "Ratios: >= 1.0x means at least as good as that peer (lower-is-better figures are inverted).", ""]
    if subject in data["targets"] and data["targets"][subject]["status"] == "ok":
        lines += ["| goal | verdict | detail |", "|---|---|---|"]
        lines += [f"| {g['goal']} | {g['verdict']} | {g['detail']} |" for g in goals(data, subject)]
        lines.append("")
    limits = data.get("machine", {})
    if limits.get("fractions"):
        lines += ["| Cairn figure | value | machine limit | bound by | fraction |", "|---|---|---|---|---|"]
        for f in limits["fractions"]:
            lines.append(f"| {f['label']} | {fmt(f['value'])} {f['unit']} | {fmt(f['limit'])} {f['unit']} | "
                         f"{f['bound_by']} | {f['fraction']:.0%} |")
        lines.append("")
    return "\n".join(lines)


def fractions(data: dict[str, Any], subject: str = "cairn") -> list[dict[str, Any]]:
    """Each bounded Cairn figure as a fraction of the machine limit that bounds it."""
    m = data.get("machine", {})
    bounds, ceiling = m.get("bounds", {}), m.get("loadgen_ceiling_ops", {})
    out = []
    pairs = [(f"{d}_large_x1", bounds.get(d)) for d in ("put", "get")]
    pairs += [(f"{d}_huge_x1", bounds.get(d)) for d in ("put", "get")]
    for fid, bound in pairs:
        v = median_of(data, subject, fid)
        if bound and v:
            label = data["targets"][subject]["figures"][fid]["label"]
            out.append({"label": label, "value": v, "unit": "MB/s", "limit": bound["limit_MBps"],
                        "bound_by": bound["bound_by"], "fraction": v / bound["limit_MBps"]})
    for op in ("put", "get", "head"):
        for c in (16, 64):
            v = median_of(data, subject, f"small_{op}_c{c}_ops")
            lim = ceiling.get(f"{op.upper()}_c{c}")
            if v and lim:
                label = data["targets"][subject]["figures"][f"small_{op}_c{c}_ops"]["label"]
                out.append({"label": label, "value": v, "unit": "ops/s", "limit": lim,
                            "bound_by": "load generator vs a null server", "fraction": v / lim})
    return out


def write(data: dict[str, Any], out_dir: Path) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    data.setdefault("machine", {})["fractions"] = fractions(data)
    (out_dir / "results.json").write_text(json.dumps(data, indent=1, default=str))
    text = markdown(data)
    (out_dir / "results.md").write_text(text)
    charts(data, out_dir)
    return text


CHART_GROUPS = [("large", "MB/s (higher is better)", False), ("small_ops", "ops/s (higher is better)", False),
                ("small_lat", "ms p50 (lower is better)", True), ("list", "seconds (lower is better)", True)]


def charts(data: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    names = [n for n, t in data["targets"].items() if t["status"] == "ok"]
    for group, ylabel, log in CHART_GROUPS:
        fids = [(fid, d) for fid, d in figure_ids(data) if d.get("group") == group]
        if not fids or not names:
            continue
        fig, ax = plt.subplots(figsize=(9, 3.4), dpi=80)
        width = 0.8 / len(names)
        for i, n in enumerate(names):
            xs, ys, errs = [], [], [[], []]
            for j, (fid, _) in enumerate(fids):
                f = data["targets"][n].get("figures", {}).get(fid)
                if f and f.get("runs"):
                    xs.append(j + i * width)
                    ys.append(f["median"])
                    errs[0].append(f["median"] - f["min"])
                    errs[1].append(f["max"] - f["median"])
            ax.bar(xs, ys, width, yerr=errs, label=n, capsize=2)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(fids))])
        ax.set_xticklabels([d["label"] for _, d in fids], rotation=20, ha="right", fontsize=7)
        ax.set_ylabel(ylabel, fontsize=8)
        if log:
            ax.set_yscale("log")
        ax.legend(fontsize=7, ncol=len(names))
        ax.tick_params(axis="y", labelsize=7)
        fig.tight_layout()
        path = out_dir / f"{group}.png"
        fig.savefig(path)
        plt.close(fig)
        made.append(path)
    return made
