"""One table of every benchmark figure, beside its target and the previous figures.

`scripts/bench` runs the benchmarks with their output in target/bench/run.log; each prints
`figure KEY VALUE` lines next to its own table. This script reads them and prints one table:
figure, now, previous (benches/figures.json: the figures published in docs/PERFORMANCE.md),
the change, the target, and whether it is met. `--record` writes the figures of this run into
benches/figures.json, to be committed with the docs that quote them.

Usage: python3 scripts/bench_table.py target/bench/run.log [--record]
"""
from __future__ import annotations

import json
import operator
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PREVIOUS = ROOT / "benches" / "figures.json"

# key: (label, unit, target as (comparison, bound) or None, higher is better)
FIGURES: dict[str, tuple[str, str, tuple[str, float] | None, bool]] = {
    "ingest_events_per_s": ("pipeline ingest, facts cached", "events/s", None, True),
    "copy_ceiling_share_pct": ("pipeline / COPY ceiling", "%", (">=", 25), True),
    "one_per_event_multiple": ("pipeline / one transaction per event", "×", (">=", 10), True),
    "receive_commit_p50_ms": ("receive → commit p50", "ms", None, False),
    "receive_commit_p99_ms": ("receive → commit p99", "ms", ("<", 25), False),
    "ingest_peak_rss_mib": ("peak RSS of an ingest", "MiB", ("<=", 32), False),
    "aws_calls_per_push_event": ("AWS calls per push event", "calls", ("<=", 3), False),
    "aws_calls_per_repository_sweep": ("AWS calls per repository, full sweep", "calls", ("<=", 2), False),
    "verdicts_per_s": ("deploy verdicts served", "req/s", (">=", 990), True),
    "verdicts_p50_ms": ("deploy verdict p50, ingesting 200 events/s", "ms", None, False),
    "verdicts_p99_ms": ("deploy verdict p99, ingesting 200 events/s", "ms", ("<", 5), False),
    "verdicts_unanswered": ("deploy verdicts not from a current view", "requests", ("<=", 0), False),
    "verdicts_saturated_p99_ms": ("deploy verdict p99, ingesting flat out (2 cores saturated)", "ms", None, False),
    "verdicts_saturated_unanswered": ("deploy verdicts not from a current view, flat out", "requests", None, False),
    "verdicts_ingest_events_per_s": ("ingest flat out while serving verdicts", "events/s", None, True),
    "signing_off_events_per_s": ("ingest, evidence heads off", "events/s", None, True),
    "signing_on_events_per_s": ("ingest, heads signed by KMS and anchored in S3", "events/s", None, True),
    "signing_cost_pct": ("throughput lost to signing heads", "%", ("<=", 5), False),
    "verdict_view_load_s": ("verdict view: first load", "s", None, False),
    "tree_append_old_ms": ("tree growth per append of 20 records, one statement per level", "ms", None, False),
    "tree_append_new_ms": ("tree growth per append of 20 records, one insert", "ms", None, False),
    "alerts_off_events_per_s": ("ingest, alerts off", "events/s", None, True),
    "alerts_off_lock_held_mean_ms": ("evidence lock held per batch, alerts off", "ms", None, False),
    "alerts_on_events_per_s": ("ingest, alerts on, every push pages", "events/s", None, True),
    "alerts_on_lock_held_mean_ms": ("evidence lock held per batch, every push pages", "ms", None, False),
    **{
        f"workers_{n}_{key}": (f"{n} worker(s): {label}", unit, None, better)
        for n in (1, 2, 4)
        for key, label, unit, better in (
            ("events_per_s", "ingest", "events/s", True),
            ("lock_held_mean_ms", "evidence lock held per batch, mean", "ms", False),
            ("lock_busy_pct", "evidence lock busy", "%", False),
            ("lock_ceiling_events_per_s", "ceiling of one evidence sequence", "events/s", True),
        )
    },
    **{
        f"latency_{n}w_{key}": (f"push → {label}, {n} worker(s)", unit, target, False)
        for n in (1, 2, 4)
        for key, label, unit, target in (
            ("commit_p99_ms", "commit p99", "ms", None),
            ("alert_p99_ms", "alert p99", "ms", ("<", 2000)),
            ("lost", "alert lost", "alerts", ("<=", 0)),
            ("duplicates", "alert twice", "alerts", ("<=", 0)),
            ("lock_held_mean_ms", "commit: evidence lock held per batch, mean", "ms", None),
        )
    },
}

COMPARE = {"<": operator.lt, "<=": operator.le, ">=": operator.ge, ">": operator.gt}


def read_figures(log: Path) -> dict[str, float]:
    figures: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "figure":
            try:
                figures[parts[1]] = float(parts[2])
            except ValueError:
                continue
    return figures


def shown(value: float | None) -> str:
    if value is None:
        return "–"
    if abs(value) >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.2f}"


def row(key: str, now: float | None, before: float | None) -> list[str]:
    label, unit, target, higher_better = FIGURES.get(key, (key, "", None, True))
    change = "–"
    if now is not None and before:
        delta = 100 * (now - before) / before
        worse = delta < -5 if higher_better else delta > 5
        change = f"{delta:+.0f} %" + (" ⚠" if worse else "")
    met = "–"
    if target is not None and now is not None:
        met = "yes" if COMPARE[target[0]](now, target[1]) else "**no**"
    goal = f"{target[0]} {shown(target[1])}" if target else ""
    return [label, f"{shown(now)} {unit}".strip(), f"{shown(before)} {unit}".strip() if before is not None else "–",
            change, goal, met]


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    now = read_figures(Path(sys.argv[1]))
    previous = json.loads(PREVIOUS.read_text()) if PREVIOUS.exists() else {"figures": {}}
    before: dict[str, float] = previous.get("figures", {})
    keys = [k for k in FIGURES if k in now or k in before] + sorted(set(now) - set(FIGURES))
    print(f"\nprevious: {previous.get('date', 'none')}, {previous.get('machine', '')}")
    print("| figure | now | previous | change | target | met |")
    print("|---|---|---|---|---|---|")
    for key in keys:
        print("| " + " | ".join(row(key, now.get(key), before.get(key))) + " |")
    missed = [k for k in keys if k in now and FIGURES.get(k, ("", "", None, True))[2] is not None
              and row(k, now[k], None)[5] != "yes"]
    print(f"\n{len(now)} figures, {len(missed)} target(s) missed" + (f": {', '.join(missed)}" if missed else ""))
    if "--record" in sys.argv:
        machine = next((l.split("machine: ", 1)[1] for l in Path(sys.argv[1]).read_text().splitlines()
                        if l.startswith("machine: ")), "")
        PREVIOUS.write_text(json.dumps({"date": date.today().isoformat(), "machine": machine,
                                        "figures": {**before, **now}}, indent=2, sort_keys=True) + "\n")
        print(f"recorded in {PREVIOUS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
