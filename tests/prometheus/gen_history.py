#!/usr/bin/env python3
"""Generate deterministic OpenMetrics history for the slo-guard Prometheus harness.

Python 3.11 standard library only.

Every scenario is one `job` label value of the counter
`http_requests_total{job="<scenario>",code="200"|"500"}`.  The request rate of
each series is piecewise constant; the counter value at any time is the exact
integral of that rate, so rate() over any window is predictable.

Time is anchored at ANCHOR (`--anchor`, default: now, rounded down to the
sample step).  Scenario changes (incidents, bursts, the spike) are placed
relative to the anchor, and the history runs from ANCHOR - 35 days to
ANCHOR + horizon (default 6 h) *into the future*.  Prometheus never returns a
sample later than the evaluation time, so an instant query at wall-clock "now"
sees exactly the history up to now, and the figures stay put while the clock
moves on (see README.md for how long each scenario stays valid).

Sample grid (all timestamps are multiples of 15 s):
  * every 10 min over the whole range (enough for 30d windows),
  * every 15 s in [ANCHOR - 7h, ANCHOR + horizon]   (5m..6h windows at now),
  * every 15 s in [ANCHOR - 1w - 1h, ANCHOR - 1w + horizon]  (offset 1w).

Usage:
  gen_history.py [--anchor EPOCH] [--horizon-hours H] [--out FILE]
  gen_history.py --expected [--anchor EPOCH] [--at EPOCH]   # analytic figures as JSON

The module is also imported by harness.py, which uses SCENARIOS and
expected_figures() as the single source of truth for the checks.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass

MIN = 60
HOUR = 3600
DAY = 86400
WEEK = 7 * DAY

STEP_FINE = 15            # seconds
STEP_COARSE = 10 * MIN    # seconds
HISTORY = 35 * DAY        # > 30d period + 1w offset margin
DEFAULT_HORIZON_HOURS = 6
RECENT_FINE = 7 * HOUR    # fine grid before the anchor (covers 6h windows)
WEEK_FINE_BEFORE = 1 * HOUR

OBJECTIVE = 0.999
BUDGET = 1 - OBJECTIVE    # 0.001
PERIOD = 30 * DAY

METRIC = "http_requests"  # OpenMetrics family; samples are http_requests_total

NEG_INF = -math.inf


@dataclass(frozen=True)
class Scenario:
    job: str
    # (offset from anchor in seconds, value) pairs; the first offset must be
    # NEG_INF.  Each value holds until the next offset.
    total_rate: tuple[tuple[float, float], ...]    # requests / s
    error_ratio: tuple[tuple[float, float], ...]   # share of requests with code 500
    summary: str


def _exhausted_incident_ratio() -> float:
    # Base ratio 0.0002 for 716h plus a 4h incident must give 0.00105 over 720h.
    return (0.00105 * 720 - 0.0002 * 716) / 4   # = 0.1532


SCENARIOS: dict[str, Scenario] = {s.job: s for s in [
    Scenario("healthy",
             ((NEG_INF, 10.0),),
             ((NEG_INF, 0.0002),),
             "10 req/s, 0.02% errors: budget 80% left, burn 0.2, traffic = baseline"),
    Scenario("budget-low",
             ((NEG_INF, 10.0),),
             ((NEG_INF, 0.0009),),
             "10 req/s, 0.09% errors: budget 10% left (below a 25% agent floor, above 0), burn 0.9"),
    Scenario("exhausted",
             ((NEG_INF, 10.0),),
             ((NEG_INF, 0.0002),
              (-10 * DAY - 4 * HOUR, _exhausted_incident_ratio()),
              (-10 * DAY, 0.0002)),
             "4h incident 10 days ago (15.32% errors): 30d ratio 0.00105, budget -5%, recent burn 0.2"),
    Scenario("burn-short-only",
             ((NEG_INF, 10.0),),
             ((NEG_INF, 0.0002), (-8 * MIN, 0.03)),
             "3% errors since anchor-8m: 5m burn 30, 30m burn 8.2, 1h burn 4.2, 6h 0.86: no row fires"),
    Scenario("burn-both",
             ((NEG_INF, 10.0),),
             ((NEG_INF, 0.0002), (-2 * HOUR, 0.025)),
             "2.5% errors since anchor-2h: burn 25 on 5m/30m/1h, 6h 8.5: both rows fire"),
    Scenario("spike",
             ((NEG_INF, 10.0), (-30 * MIN, 30.0)),
             ((NEG_INF, 0.0002),),
             "10 req/s until anchor-30m, then 30 req/s: traffic 3x baseline, budget 80%"),
    Scenario("no-traffic",
             ((NEG_INF, 0.01),),
             ((NEG_INF, 0.0),),
             "0.01 req/s, no errors (the code=500 series exists, flat): below minRequestRate 1"),
    Scenario("idle",
             ((NEG_INF, 0.0),),
             ((NEG_INF, 0.0),),
             "both series exist but never increase: total 0, errors 0 (ratio 0/0 = NaN)"),
]}


# --------------------------------------------------------------------------
# rate profiles and exact counter integrals


def _breakpoints(sc: Scenario) -> list[float]:
    pts = {o for o, _ in sc.total_rate} | {o for o, _ in sc.error_ratio}
    return sorted(pts)


def _value_at(pairs, off: float) -> float:
    v = pairs[0][1]
    for o, val in pairs:
        if o <= off:
            v = val
        else:
            break
    return v


def segments(sc: Scenario, code: str) -> list[tuple[float, float]]:
    """(offset, rate) pieces for one series; code '200' or '500'."""
    out = []
    for o in _breakpoints(sc):
        tot = _value_at(sc.total_rate, o)
        ratio = _value_at(sc.error_ratio, o)
        out.append((o, tot * ratio if code == "500" else tot * (1 - ratio)))
    return out


def increase(segs: list[tuple[float, float]], a: float, b: float) -> float:
    """Exact counter increase between anchor offsets a < b."""
    total = 0.0
    for i, (o, r) in enumerate(segs):
        lo = max(o, a)
        hi = min(segs[i + 1][0] if i + 1 < len(segs) else math.inf, b)
        if hi > lo:
            total += r * (hi - lo)
    return total


# --------------------------------------------------------------------------
# sample grid and OpenMetrics output


def sample_offsets(horizon: int, coarse_step: int = STEP_COARSE) -> list[int]:
    """Sorted sample offsets (seconds relative to the anchor)."""
    pts = set(range(-HISTORY, horizon + 1, coarse_step))
    pts.update(range(-RECENT_FINE, horizon + 1, STEP_FINE))
    pts.update(range(-WEEK - WEEK_FINE_BEFORE, -WEEK + horizon + 1, STEP_FINE))
    return sorted(pts)


def write_openmetrics(out, anchor: int, horizon: int, coarse_step: int = STEP_COARSE,
                      jobs: list[str] | None = None) -> int:
    offs = sample_offsets(horizon, coarse_step)
    first = offs[0]
    n = 0
    out.write(f"# HELP {METRIC} Synthetic HTTP requests for the slo-guard harness (anchor {anchor}).\n")
    out.write(f"# TYPE {METRIC} counter\n")
    for job, sc in SCENARIOS.items():
        if jobs is not None and job not in jobs:
            continue
        for code in ("200", "500"):
            segs = segments(sc, code)
            labels = f'{METRIC}_total{{job="{job}",code="{code}"}}'
            # Walk the pieces incrementally instead of integrating from the start each time.
            lines = []
            value = 0.0
            prev = first
            for off in offs:
                value += increase(segs, prev, off) if off != prev else 0.0
                prev = off
                lines.append(f"{labels} {value:.6f} {anchor + off}\n")
            out.write("".join(lines))
            n += len(lines)
    out.write("# EOF\n")
    return n


# --------------------------------------------------------------------------
# analytic expectations (what an ideal rate() would return)


def expected_figures(anchor: int, at: float) -> dict:
    """Exact window averages for each scenario at evaluation time `at`."""
    t = at - anchor
    res = {}
    for job, sc in SCENARIOS.items():
        e = segments(sc, "500")
        g = segments(sc, "200")

        def rate(seg, w, offset=0.0):
            return increase(seg, t - offset - w, t - offset) / w

        fig = {}
        for name, w in (("30d", PERIOD), ("6h", 6 * HOUR), ("1h", HOUR), ("30m", 30 * MIN), ("5m", 5 * MIN)):
            err = rate(e, w)
            tot = err + rate(g, w)
            fig[f"errors_{name}"] = err
            fig[f"total_{name}"] = tot
            ratio = err / tot if tot > 0 else math.nan
            fig[f"ratio_{name}"] = ratio
            fig[f"burn_{name}"] = ratio / BUDGET
        fig["budget_left"] = 1 - fig["ratio_30d"] / BUDGET
        fig["traffic_current"] = fig["total_5m"]
        fig["traffic_baseline"] = rate(e, 5 * MIN, WEEK) + rate(g, 5 * MIN, WEEK)
        fig["traffic_ratio"] = (fig["traffic_current"] / fig["traffic_baseline"]
                                if fig["traffic_baseline"] > 0 else math.nan)
        res[job] = fig
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--anchor", type=int, default=None,
                    help="anchor epoch seconds (default: now, rounded down to 15 s)")
    ap.add_argument("--horizon-hours", type=float, default=DEFAULT_HORIZON_HOURS,
                    help="hours of data after the anchor (default %(default)s)")
    ap.add_argument("--out", default="-", help="output file (default stdout)")
    ap.add_argument("--coarse-step", type=int, default=STEP_COARSE,
                    help="seconds between samples outside the fine windows (default %(default)s); "
                         "recording rules over 5m windows need at most 60 over the whole period")
    ap.add_argument("--jobs", default=None,
                    help="comma-separated scenarios to write (default: all)")
    ap.add_argument("--expected", action="store_true",
                    help="print the analytic figures (JSON) instead of OpenMetrics")
    ap.add_argument("--at", type=float, default=None,
                    help="with --expected: evaluation time (default: anchor)")
    a = ap.parse_args(argv)
    anchor = a.anchor if a.anchor is not None else int(time.time()) // STEP_FINE * STEP_FINE
    if anchor % STEP_FINE:
        ap.error(f"--anchor must be a multiple of {STEP_FINE}")
    if a.expected:
        json.dump(expected_figures(anchor, a.at if a.at is not None else anchor),
                  sys.stdout, indent=1, sort_keys=True)
        print()
        return 0
    horizon = int(a.horizon_hours * HOUR) // STEP_FINE * STEP_FINE
    if a.coarse_step <= 0 or a.coarse_step % STEP_FINE:
        ap.error(f"--coarse-step must be a positive multiple of {STEP_FINE}")
    jobs = a.jobs.split(",") if a.jobs else None
    unknown = [job for job in jobs or [] if job not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenarios {unknown}: choose from {list(SCENARIOS)}")
    if a.out == "-":
        n = write_openmetrics(sys.stdout, anchor, horizon, a.coarse_step, jobs)
    else:
        with open(a.out, "w", encoding="ascii", buffering=1 << 20) as f:
            n = write_openmetrics(f, anchor, horizon, a.coarse_step, jobs)
    print(f"gen_history: {n} samples, {len(jobs or SCENARIOS) * 2} series, anchor {anchor}, "
          f"range [{anchor - HISTORY}, {anchor + horizon}]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
