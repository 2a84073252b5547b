"""PNG figures of a benchmark result: latency vs accuracy, and latency vs utterance length / batch size."""

from __future__ import annotations

from pathlib import Path

MARKERS = {"torch": "o", "onnxruntime": "s"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _finish(plt, fig, ax, path: Path) -> Path:
    """Grid, tight layout, write the PNG and free the figure."""
    ax.grid(True, which="both", linewidth=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _log_axis(ax, which: str) -> None:
    """Log scale with plain numbers (1, 2, 5, not 2x10^0) on the "x" or "y" axis."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_formatter(ScalarFormatter())
    axis.set_minor_formatter(NullFormatter())


def latency_vs_accuracy(result: dict, path: Path, dataset: str = "ravdess") -> Path:
    """One point per variant: median emotion-model latency against UA; untrained variants as latency lines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    stages = result.get("latency", {}).get("variants", {})
    accuracy = result.get("accuracy", {})
    for name, info in result["variants"].items():
        if name not in stages:
            continue
        x = stages[name]["model"]["p50"]
        ua = accuracy.get(name, {}).get(dataset, {}).get("ua")
        marker = MARKERS.get(info["backend"], "^")
        if ua is None:  # speed only: a vertical line at its latency
            ax.axvline(x, linestyle=":", linewidth=0.8, color="grey")
            ax.text(x, 3, f" {name} (untrained: speed only)", rotation=90, fontsize=7, color="grey", va="bottom")
        else:
            ax.scatter([x], [ua * 100], marker=marker, s=50)
            ax.annotate(name, (x, ua * 100), fontsize=8, xytext=(4, 4), textcoords="offset points")
    for name, f in (result.get("floors") or {}).items():
        if isinstance(f, dict) and "ua" in f:
            ax.axhline(f["ua"] * 100, linestyle="--", linewidth=0.8, color="tab:red" if name == "egemaps" else "tab:grey")
            ax.text(0.99, f["ua"] * 100, f"floor: {name}", fontsize=7, va="bottom", ha="right", transform=ax.get_yaxis_transform())
    n_classes = 4
    ax.axhline(100 / n_classes, linestyle=":", linewidth=0.8, color="black")
    _log_axis(ax, "x")
    ax.set_xlabel("emotion model latency per utterance, p50 (ms; features + encoders + fusion, batch 1)")
    ax.set_ylabel(f"UA on {dataset} test (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Latency vs accuracy (dotted: chance)")
    return _finish(plt, fig, ax, path)


def latency_vs_length(result: dict, path: Path) -> Path:
    """Median emotion-model time (and ASR) against utterance length."""
    plt = _pyplot()
    scaling = result["scaling"]
    lengths = scaling["lengths_s"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, v in scaling["variants"].items():
        ax.plot(lengths, v["model_ms_p50"], marker=MARKERS.get(result["variants"][name]["backend"], "^"), label=name)
    if scaling.get("asr_ms_p50"):
        ax.plot(lengths, scaling["asr_ms_p50"], linestyle="--", color="black", label="ASR (faster-whisper tiny.en int8)")
    ax.plot(lengths, [1000 * s for s in lengths], linestyle=":", color="grey", label="real time (1 s per s)")
    _log_axis(ax, "x")
    _log_axis(ax, "y")
    ax.set_xticks(lengths)
    ax.set_xticklabels([f"{s:g}" for s in lengths])
    ax.set_xlabel("utterance length (s)")
    ax.set_ylabel("time per utterance, p50 (ms)")
    ax.set_title("Latency vs utterance length (batch 1)")
    ax.legend(fontsize=7)
    return _finish(plt, fig, ax, path)


def throughput_vs_batch(result: dict, path: Path) -> Path:
    """Utterances per second against batch size."""
    plt = _pyplot()
    tp = result["throughput"]["variants"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, by_bs in tp.items():
        sizes = sorted(by_bs, key=int)
        ax.plot([int(s) for s in sizes], [by_bs[s]["utt_per_s"] for s in sizes], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("utterances per second (median)")
    ax.set_title("Batch throughput over a folder of utterances")
    ax.legend(fontsize=7)
    return _finish(plt, fig, ax, path)


def write_plots(result: dict, out: Path) -> list[Path]:
    written = []
    if result.get("latency"):
        written.append(latency_vs_accuracy(result, out / "latency_vs_accuracy.png"))
    if result.get("scaling"):
        written.append(latency_vs_length(result, out / "latency_vs_length.png"))
    if result.get("throughput"):
        written.append(throughput_vs_batch(result, out / "throughput_vs_batch.png"))
    return written
