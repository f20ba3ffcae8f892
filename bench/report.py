"""Turn a results dict from ``python -m bench`` into the Markdown tables of the README."""

from __future__ import annotations

from typing import Any


def _f(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _count_pct(counts: dict[str, int], q: float) -> float | None:
    """Nearest-rank percentile over a ``{value: how many}`` histogram."""
    items = sorted((int(k), v) for k, v in counts.items())
    n = sum(v for _, v in items)
    if not n:
        return None
    rank = min(n - 1, int(q / 100 * n))
    seen = 0
    for value, v in items:
        seen += v
        if seen > rank:
            return float(value)
    return float(items[-1][0])


def passthrough_table(runs: dict[str, Any]) -> list[str]:
    """One row per proxy; ratios against direct (speed, latency) and the minimal proxy (CPU)."""
    direct = runs.get("direct", {}).get("client", {})
    minimal = runs.get("aiohttp-minimal", {}).get("proxy", {})
    base_eps = direct.get("events_per_s") or None
    base_lat = direct.get("latency_ms", {})
    base_cpu = minimal.get("cpu_s_per_1e5_events")
    rows = [
        "| proxy | events/s (x direct) | latency p50 / p99 ms | added p50 / p99 ms "
        "| CPU s per 1e5 events (x minimal) | RSS idle -> peak MiB | KiB per open stream "
        "| errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, run in runs.items():
        if "error" in run:
            rows.append(f"| {mode} | failed: {run['error'][:120]} | | | | | | |")
            continue
        c, p = run["client"], run.get("proxy")
        lat = c["latency_ms"]
        eps = c["events_per_s"]
        ratio = f" ({eps / base_eps:.2f}x)" if base_eps else ""
        added = "-"
        if mode != "direct" and base_lat:
            added = f"{lat['p50'] - base_lat['p50']:.2f} / {lat['p99'] - base_lat['p99']:.2f}"
        cpu = rss = kib = "-"
        if p:
            per = p["cpu_s_per_1e5_events"]
            cpu = _f(per, 2) + (f" ({per / base_cpu:.2f}x)" if base_cpu and per else "")
            rss = f"{p['rss_idle_mib']:.0f} -> {p['rss_peak_mib']:.0f}"
            kib = _f(p["kib_per_stream"])
        errors = sum(c["errors"].values())
        rows.append(
            f"| {mode} | {eps:,.0f}{ratio} | {lat['p50']:.2f} / {lat['p99']:.2f} | {added} "
            f"| {cpu} | {rss} | {kib} | {errors} |"
        )
    return rows


def fault_table(runs: dict[str, Any]) -> list[str]:
    """Measured value of each timing or count fault against its setting."""
    rows = [
        "| fault | streams | setting | measured p50 / p99 | error p50 / p99 | what is measured |",
        "|---|---|---|---|---|---|",
    ]
    for name, run in runs.items():
        c, setting = run["client"], run["setting"]
        if name.startswith("first_byte"):
            m = c["first_event_latency_ms"]
            p50, p99, what, unit = m.get("p50"), m.get("p99"), "first event: receive - send", "ms"
        elif name.startswith("throttle"):
            # The throttle keeps an absolute schedule, so the rate over a stream is
            # what it promises; single gaps jitter around it (reported in the JSON).
            m = c["stream_rate"]
            p50, p99, what, unit = m.get("p50"), m.get("p1"), "events/s per stream (p50 / p1)", "/s"
        else:
            p50, p99 = _count_pct(c["counts"], 50), _count_pct(c["counts"], 99)
            what, unit = "data events delivered before the cut", "events"
        err = "-"
        if p50 is not None and p99 is not None:
            err = f"{(p50 - setting) / setting:+.1%} / {(p99 - setting) / setting:+.1%}"
        rows.append(
            f"| {name} | {run['load']['streams']} | {setting:g} {unit} "
            f"| {_f(p50, 1)} / {_f(p99, 1)} | {err} | {what} |"
        )
    return rows


def family_table(runs: dict[str, Any]) -> list[str]:
    """Proxy CPU per event with each fault family armed on every stream, against clean."""
    base = runs.get("clean", {}).get("proxy", {}).get("cpu_s_per_1e5_events")
    rows = [
        "| fault family armed | CPU s per 1e5 events (x clean) | events/s | errors |",
        "|---|---|---|---|",
    ]
    for name, run in runs.items():
        if "error" in run:
            rows.append(f"| {name} | failed: {run['error'][:120]} | | |")
            continue
        per = run["proxy"]["cpu_s_per_1e5_events"]
        ratio = f" ({per / base:.2f}x)" if base and per else ""
        c = run["client"]
        errors = sum(c["errors"].values())
        rows.append(f"| {name} | {_f(per, 2)}{ratio} | {c['events_per_s']:,.0f} | {errors} |")
    return rows


def markdown(results: dict[str, Any]) -> str:
    """All tables plus the machine line, ready to paste."""
    m = results["machine"]
    lines = [
        f"Machine: {m['cpu']} ({m['cores']} cores), {m['platform']}, Python {m['python']}, "
        f"aiohttp {m['aiohttp']}, uvloop {m['uvloop']}, mitmproxy {m['mitmproxy']}"
        + (" — quick mode" if results.get("quick") else ""),
        "",
    ]
    titles = {
        "burst": "Pass-through, as fast as possible",
        "paced": "Pass-through, paced at 20 events/s per stream",
    }
    for part in ("burst", "paced"):
        runs = results["runs"].get(part)
        if not runs:
            continue
        load = next(iter(runs.values())).get("load", {})
        lines += [
            f"**{titles[part]}** ({load.get('streams')} streams x {load.get('events')} events)",
            "",
            *passthrough_table(runs),
            "",
        ]
    if results["runs"].get("faults"):
        lines += [
            "**Fault fidelity at load** (chaosstream)",
            "",
            *fault_table(results["runs"]["faults"]),
            "",
        ]
    if results["runs"].get("families"):
        load = next(iter(results["runs"]["families"].values())).get("load", {})
        lines += [
            f"**Proxy CPU per event by fault family** ({load.get('streams')} streams x "
            f"{load.get('events')} events, as fast as possible)",
            "",
            *family_table(results["runs"]["families"]),
            "",
        ]
    shares = shares_table(results["runs"])
    if shares:
        lines += ["**Where each proxy's CPU goes** (py-spy self time, `--shares`)", "", *shares, ""]
    lines += [f"Note: {n}" for n in results.get("notes", [])]
    return "\n".join(lines).rstrip() + "\n"


def shares_table(runs: dict[str, dict[str, Any]]) -> list[str]:
    """One row per proxy run that was sampled (bench/shares.py); empty when none was."""
    names = ("chaosstream", "aiohttp", "loop", "structlog", "other")
    rows = []
    for part, by_mode in runs.items():
        for mode, run in by_mode.items():
            got = run.get("shares") if isinstance(run, dict) else None
            if not got:
                continue
            if "error" in got:
                rows.append(f"| {part} | {mode} | {got['error']} |" + " |" * len(names))
                continue
            cells = " | ".join("-" if got[n] is None else f"{got[n]:.0%}" for n in names)
            rows.append(f"| {part} | {mode} | {cells} | {got['samples']} |")
    if not rows:
        return []
    head = "| part | proxy | " + " | ".join(names) + " | samples |"
    return [head, "|" + "---|" * (len(names) + 3), *rows]
