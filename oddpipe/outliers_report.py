"""reports/outliers.html: the evidence behind every outlier decision, as pictures a
person checks in a minute (self-contained HTML with embedded PNGs).

Drawn from what the outliers stage stored (outliers.tsv, outliers.json, evidence.npz), so
rendering is its own DVC stage and never slows the decisions down.
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


Evidence = dict[str, np.ndarray]  # "<recording>|<what>" -> array, see evidence_arrays


def _per_recording(evidence: Evidence, what: str) -> dict[str, np.ndarray]:
    suffix = f"|{what}"
    return {k[:-len(suffix)]: v for k, v in evidence.items() if k.endswith(suffix)}


def _png(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)  # figures use layout="constrained"
    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def heatmap(flags: pd.DataFrame, max_channels: int = 64) -> str:
    """Subject x recording rows, channel columns: line noise above the dataset median.

    With more channels than fit, the worst max_channels (by their highest excess) are shown.
    """
    grid = flags.pivot(index=["subject", "recording"], columns="channel", values="line_excess_db")
    order = list(dict.fromkeys(flags["channel"]))
    if len(order) > max_channels:
        worst = set(grid.max().nlargest(max_channels).index)
        order = [c for c in order if c in worst]
    grid = grid[order]
    mark = flags.pivot(index=["subject", "recording"], columns="channel", values="flagged")
    mark = mark.reindex_like(grid).fillna(False).astype(bool)  # absent channels: no mark
    fig, ax = plt.subplots(figsize=(3 + 0.3 * grid.shape[1], 1.5 + 0.25 * grid.shape[0]),
                           layout="constrained")
    im = ax.imshow(grid.to_numpy(float), aspect="auto", cmap="magma")
    for i, j in zip(*np.nonzero(mark.to_numpy())):
        ax.text(j, i, "x", ha="center", va="center", color="cyan", fontsize=9)
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=90, fontsize=7)
    ax.set_yticks(range(grid.shape[0]), [f"{s} | {r}" for s, r in grid.index], fontsize=7)
    fig.colorbar(im, ax=ax, label="line-noise ratio above dataset median (dB)")
    shown = f" ({len(order)} worst channels)" if len(order) < flags["channel"].nunique() else ""
    ax.set_title(f"Line noise per recording x channel{shown} (x = flagged)")
    return _png(fig)


def histograms(flags: pd.DataFrame, evidence: Evidence, max_channels: int = 32) -> str:
    """Per electrode: log amplitude of inspection-sample windows, flagged ones in red."""
    windows = _per_recording(evidence, "sample_log_std")
    names = _per_recording(evidence, "sample_channels")
    if not windows:
        return "<p>No inspection-sample windows.</p>"
    channels = list(dict.fromkeys(c for rec in windows for c in names[rec]))[:max_channels]
    flagged = set(zip(flags.loc[flags["flagged"], "recording"],
                      flags.loc[flags["flagged"], "channel"]))
    ncol = 4
    fig, axes = plt.subplots(int(np.ceil(len(channels) / ncol)), ncol, squeeze=False,
                             layout="constrained",
                             figsize=(3.2 * ncol, 2.0 * np.ceil(len(channels) / ncol)))
    for ax, ch in zip(axes.flat, channels):
        series = {True: [], False: []}
        for rec, values in windows.items():
            if ch in names[rec]:
                series[(rec, ch) in flagged].append(values[:, list(names[rec]).index(ch)])
        values = np.concatenate(series[False] + series[True])
        bins = np.linspace(values.min(), values.max() + 1e-9, 40)
        # np.histogram + stairs: one artist per series, not one patch per bin (much faster)
        for bad, color, label in ((False, "grey", "kept"), (True, "red", "flagged")):
            if series[bad]:
                ax.stairs(np.histogram(np.concatenate(series[bad]), bins)[0], bins, fill=True,
                          color=color, label=label)
        ax.set_title(ch, fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(channels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.supxlabel("log10 std of a 1 s window around a sampled event (V)")
    return _png(fig)


def flagged_psds(evidence: Evidence, max_plots: int = 24) -> str:
    """Each flagged channel's PSD against its recording's median channel."""
    channels = _per_recording(evidence, "flagged_channels")
    pairs = [(rec, k, ch) for rec, names in sorted(channels.items())
             for k, ch in enumerate(names)][:max_plots]
    if not pairs:
        return "<p>No channel flagged.</p>"
    ncol = 3
    nrow = int(np.ceil(len(pairs) / ncol))
    fig, axes = plt.subplots(nrow, ncol, squeeze=False, figsize=(4 * ncol, 2.6 * nrow),
                             layout="constrained")
    for ax, (rec, k, ch) in zip(axes.flat, pairs):
        freqs = evidence[f"{rec}|freqs"]
        ax.semilogy(freqs, evidence[f"{rec}|median_psd"], color="grey", label="median channel")
        ax.semilogy(freqs, evidence[f"{rec}|flagged_psd"][k], color="red", label=ch)
        ax.set_title(f"{rec}\n{ch}", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(pairs):]:
        ax.axis("off")
    fig.supxlabel("frequency (Hz)")
    fig.supylabel("PSD (V²/Hz)")
    return _png(fig)


def decision_table(decisions: dict[str, dict]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(d['subject'])}</td><td>{html.escape(rec)}</td>"
        f"<td>{d['action']}</td><td>{d['bad_fraction']:.0%}</td>"
        f"<td>{html.escape('; '.join(f'{c}: {r}' for c, r in d['flags'].items()))}</td>"
        f"<td>{d['line_freq'] or 'none'} {html.escape(d['line_note'])}</td></tr>"
        for rec, d in decisions.items())
    return ("<table><tr><th>subject</th><th>recording</th><th>action</th>"
            f"<th>flagged</th><th>reasons</th><th>line frequency (Hz)</th></tr>{rows}</table>")


def global_statement(metrics: dict) -> str:
    """Say so when line noise is everywhere: then flags rank channels, they don't drown."""
    if not metrics.get("line_noise_global"):
        return ""
    return (f"<p><b>Line noise is global:</b> {metrics['fraction_channels_line_noise']:.0%} of "
            f"all recording x channel pairs show a line peak over 10 dB (median "
            f"{metrics['median_line_ratio_db']} dB). Decisions use the excess over the dataset "
            "median, so only the worst channels are flagged; the ranking below orders all.</p>")


def ranking(flags: pd.DataFrame, top: int = 30) -> str:
    """Channels ordered by line-noise ratio, worst first."""
    cols = ["subject", "recording", "channel", "line_freq", "line_ratio_db", "line_excess_db",
            "z_within", "flagged"]
    worst = flags.sort_values("line_ratio_db", ascending=False).head(top)[cols]
    return worst.to_html(index=False, float_format=lambda v: f"{v:.1f}", border=0)


def write_report(path: Path, flags: pd.DataFrame, decisions: dict[str, dict], metrics: dict,
                 evidence: Evidence) -> None:
    summary = "".join(f"<li>{html.escape(k)}: {v}</li>" for k, v in metrics.items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>oddpipe outliers</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;font-size:12px;text-align:left}}</style></head><body>
<h1>Outlier detection</h1>{global_statement(metrics)}<ul>{summary}</ul>
<h2>Line noise: subject x recording x channel</h2>{heatmap(flags)}
<h2>Decisions</h2>{decision_table(decisions)}
<h2>Ranking by line-noise ratio (top 30)</h2>{ranking(flags)}
<h2>Flagged channels: PSD against the recording's median channel</h2>{flagged_psds(evidence)}
<h2>Per-electrode log amplitude over the inspection sample</h2>{histograms(flags, evidence)}
</body></html>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
