"""What got faster or slower between two benchmark results (`--compare OLD.json`).

Each figure is matched by its path in the JSON; the ratio is new/old for times and memory and
old/new for rates and accuracy points, so a ratio above 1 is always an improvement. Changes
within the noise threshold are reported as unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_THRESHOLD = 0.10  # relative change treated as noise on a shared machine


@dataclass
class Change:
    metric: str  # JSON path, e.g. "latency/edge-ort-int8/end_to_end/p50"
    old: float
    new: float
    better_ratio: float  # > 1 means better, whatever the unit
    verdict: str  # "faster" | "slower" | "better" | "worse" | "unchanged"


def figures(result: dict) -> dict[str, tuple[float, bool]]:
    """path -> (value, higher_is_better) for every figure compare looks at."""
    out: dict[str, tuple[float, bool]] = {}
    for name, stages in (result.get("latency") or {}).get("variants", {}).items():
        for stage, s in stages.items():
            if "p50" in s:
                out[f"latency/{name}/{stage}/p50"] = (s["p50"], False)
    for name, s in (result.get("latency") or {}).get("shared", {}).items():
        if "p50" in s:
            out[f"latency/{name}/p50"] = (s["p50"], False)
    for name, v in (result.get("vad") or {}).items():
        out[f"vad/{name}/ms_per_audio_s"] = (v["ms_per_audio_s"]["p50"], False)
    for name, by_bs in (result.get("throughput") or {}).get("variants", {}).items():
        for bs, v in by_bs.items():
            out[f"throughput/{name}/batch{bs}"] = (v["utt_per_s"], True)
    for name, v in (result.get("load") or {}).items():
        for key in ("ready_ms", "peak_rss_mb"):
            if key in v:
                out[f"load/{name}/{key}"] = (v[key], False)
    for name, by_set in (result.get("accuracy") or {}).items():
        for set_name, v in by_set.items():
            out[f"accuracy/{name}/{set_name}/ua"] = (v["ua"], True)
    return out


def compare(old: dict, new: dict, threshold: float = DEFAULT_THRESHOLD) -> list[Change]:
    a, b = figures(old), figures(new)
    changes = []
    for metric in sorted(set(a) & set(b)):
        (x, higher), (y, _) = a[metric], b[metric]
        if x <= 0 or y <= 0:
            continue
        ratio = y / x if higher else x / y
        if metric.startswith("accuracy/"):
            delta = y - x  # accuracy: absolute points, threshold / 10 (1 point at the default)
            verdict = "unchanged" if abs(delta) <= threshold / 10 else ("better" if delta > 0 else "worse")
        elif abs(ratio - 1) <= threshold:
            verdict = "unchanged"
        else:
            verdict = "faster" if ratio > 1 else "slower"
            if metric.endswith("peak_rss_mb"):
                verdict = "smaller" if ratio > 1 else "larger"
        changes.append(Change(metric, x, y, ratio, verdict))
    return changes


def format_changes(changes: list[Change], old_machine: dict | None = None, new_machine: dict | None = None,
                   show_unchanged: bool = False) -> str:
    lines = []
    if old_machine and new_machine and old_machine.get("cpu") != new_machine.get("cpu"):
        lines.append(f"WARNING: different machines ({old_machine.get('cpu')} vs {new_machine.get('cpu')}); ratios mix hardware.")
    flagged = [c for c in changes if c.verdict != "unchanged"]
    lines.append(f"{len(flagged)} of {len(changes)} figures changed beyond the noise threshold.")
    for c in sorted(changes, key=lambda c: c.better_ratio):
        if c.verdict == "unchanged" and not show_unchanged:
            continue
        flag = "  " if c.verdict == "unchanged" else ("++" if c.better_ratio > 1 else "--")
        lines.append(f"{flag} {c.verdict:<9} x{c.better_ratio:6.2f}  {c.metric}: {c.old:.4g} -> {c.new:.4g}")
    return "\n".join(lines)
