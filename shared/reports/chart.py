"""The revenue report as a PNG: one panel per dimension, stacked bars of where each dollar invoiced went.

matplotlib (Agg backend, no display) is imported inside the function: it is a CLI / demo dependency, never
loaded on a Lambda cold path.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

PANELS = (
    ("provider", "Provider"),
    ("location", "Location"),
    ("payer_type", "Payer type"),
    ("modality", "Modality"),
    ("category", "Service (QuickBooks item)"),
)
SEGMENTS = (
    ("collected", "collected", "#2e7d32"),
    ("adjusted", "contractual adjustments", "#90a4ae"),
    ("written_off", "write-offs / credits", "#ef6c00"),
    ("outstanding", "outstanding", "#c62828"),
)


def revenue_chart(report: dict[str, Any], path: str | Path, *, title: str | None = None) -> Path:
    """Write the chart of a revenue report (its JSON form) to ``path``. Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(len(PANELS), 1, figsize=(10, 2.2 + 1.6 * len(PANELS)), constrained_layout=True)
    by = report["by"]
    for ax, (dim, label) in zip(axes, PANELS, strict=True):
        rows = by.get(dim, {})
        keys = sorted(rows, key=lambda k: Decimal(rows[k]["invoiced"]))
        left = [0.0] * len(keys)
        if dim == "category":
            vals = [float(Decimal(rows[k]["invoiced"])) for k in keys]
            ax.barh(keys, vals, color="#1565c0", label="invoiced")
        else:
            for fld, seg_label, color in SEGMENTS:
                vals = [float(Decimal(rows[k][fld])) for k in keys]
                ax.barh(keys, vals, left=left, color=color, label=seg_label)
                left = [a + b for a, b in zip(left, vals, strict=True)]
        for y, k in enumerate(keys):
            ax.annotate(
                f"${Decimal(rows[k]['invoiced']):,}",
                (float(Decimal(rows[k]["invoiced"])), y),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
            )
        ax.set_title(label, loc="left", fontsize=10)
        ax.tick_params(labelsize=8)
        ax.margins(x=0.15)
        ax.spines[["top", "right"]].set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", fontsize=8, ncols=len(SEGMENTS), frameon=False)
    t = report["totals"]
    period = report["period"]
    fig.suptitle(
        (title or "Revenue") + f" {period['from']} to {period['to']}: invoiced ${Decimal(t['invoiced']):,}, collected "
        f"${Decimal(t['collected']):,}, outstanding ${Decimal(t['outstanding']):,} ({t['visits']} visits)",
        fontsize=10,
    )
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
