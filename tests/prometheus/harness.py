#!/usr/bin/env python3
"""Real-Prometheus harness for slo-guard integration tests (Python 3.11 stdlib only).

  harness.py start DIR [--host ADDR] [--port N] [--horizon-hours H] [--anchor EPOCH] [--parent-pid PID]
  harness.py stop DIR
  harness.py figures URL [--json]     # query every scenario, print the SLO figures
  harness.py check [DIR]              # start, query, assert ranges, stop

`start` generates the history (gen_history.py), backfills it with
`promtool tsdb create-blocks-from openmetrics` into DIR/data, writes
DIR/prometheus.yml, starts /usr/bin/prometheus (our own process, never the
distribution's service) on a free 127.0.0.1 port, waits for /-/ready and for
the backfilled series to be queryable, then prints KEY=VALUE lines (also
written to DIR/env):

  PROM_URL=http://127.0.0.1:PORT
  PROM_PID=...            PROM_DIR=...
  PROM_ANCHOR=...         (epoch seconds the scenarios are anchored at)
  PROM_VALID_UNTIL=...    (end of the generated data; the watchdog stops Prometheus then)
  PROM_BURN_SHORT_ONLY_VALID_UNTIL=...
  PROM_STOP='.../stop.sh DIR'

Prometheus is detached (own session, stdio to DIR/prometheus.log), so a caller
reading start's stdout to EOF does not hang.  A detached watchdog stops it when
the data horizon ends, or earlier when --parent-pid exits.

Any missing binary or failed step exits non-zero with a message on stderr; the
harness never skips.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True    # leave no __pycache__ in the source tree
import gen_history as gh  # noqa: E402

READY_TIMEOUT = 30.0
BURN_SHORT_ONLY_VALID = 15 * 60   # seconds after the anchor (see README)
MAX_HORIZON_HOURS = 12            # burn-both's budget stays above 25% until then


class HarnessError(Exception):
    pass


def die(msg: str, code: int = 1) -> None:
    print(f"prometheus harness: ERROR: {msg}", file=sys.stderr)
    sys.exit(code)


def require_binaries() -> tuple[str, str]:
    prom = os.environ.get("PROMETHEUS_BIN") or shutil.which("prometheus")
    tool = os.environ.get("PROMTOOL_BIN") or shutil.which("promtool")
    missing = [n for n, p in (("prometheus", prom), ("promtool", tool)) if not p or not os.access(p, os.X_OK)]
    if missing:
        die(f"{' and '.join(missing)} not found on PATH (or via PROMETHEUS_BIN/PROMTOOL_BIN). "
            "Install Debian's package: apt-get update && apt-get install -y --no-install-recommends prometheus",
            code=2)
    return prom, tool


# --------------------------------------------------------------------------
# HTTP helpers


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def query(url: str, promql: str, at: float | None = None) -> list:
    params = {"query": promql}
    if at is not None:
        params["time"] = f"{at:.3f}"
    status, body = http_get(f"{url}/api/v1/query?{urllib.parse.urlencode(params)}")
    doc = json.loads(body)
    if status != 200 or doc.get("status") != "success":
        raise HarnessError(f"query failed ({status}): {promql}: {doc.get('error')}")
    return doc["data"]["result"]


def scalar(url: str, promql: str, at: float | None = None) -> tuple[float | None, float]:
    """Value of a single-sample instant vector (None if empty) and the eval time."""
    res = query(url, promql, at)
    if not res:
        return None, at if at is not None else time.time()
    if len(res) != 1:
        raise HarnessError(f"expected one sample, got {len(res)}: {promql}")
    ts, val = res[0]["value"]
    return float(val), float(ts)


# --------------------------------------------------------------------------
# start / stop


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still "exists"; treat it as dead
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def pid_is_ours(pid: int, marker: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return marker.encode() in f.read()
    except OSError:
        return False


def read_env(d: str) -> dict:
    env = {}
    try:
        with open(os.path.join(d, "env")) as f:
            for line in f:
                k, _, v = line.rstrip("\n").partition("=")
                env[k] = v.strip("'")
    except FileNotFoundError:
        pass
    return env


PROM_YML = """# written by tests/prometheus/harness.py; no scrape targets: all data is backfilled
global:
  scrape_interval: 1m
  evaluation_interval: 1m
scrape_configs: []
"""


def cmd_start(a) -> int:
    prom, tool = require_binaries()
    d = os.path.abspath(a.dir)
    os.makedirs(d, exist_ok=True)
    old = read_env(d)
    if old.get("PROM_PID") and pid_alive(int(old["PROM_PID"])) and pid_is_ours(int(old["PROM_PID"]), d):
        die(f"a harness Prometheus is already running from {d} (pid {old['PROM_PID']}); run stop.sh {d} first")
    data = os.path.join(d, "data")
    shutil.rmtree(data, ignore_errors=True)
    for f in ("env", "prometheus.pid", "watchdog.pid", "history.om", "prometheus.log"):
        try:
            os.remove(os.path.join(d, f))
        except FileNotFoundError:
            pass

    t0 = time.monotonic()
    anchor = a.anchor if a.anchor is not None else int(time.time()) // gh.STEP_FINE * gh.STEP_FINE
    horizon = int(a.horizon_hours * gh.HOUR) // gh.STEP_FINE * gh.STEP_FINE
    if not 20 * 60 <= horizon <= MAX_HORIZON_HOURS * 3600:
        die(f"--horizon-hours must be between 1/3 and {MAX_HORIZON_HOURS}")
    om = os.path.join(d, "history.om")
    with open(om, "w", encoding="ascii", buffering=1 << 20) as f:
        nsamples = gh.write_openmetrics(f, anchor, horizon)
    t_gen = time.monotonic()

    # --max-block-duration is a hidden promtool flag: without it promtool
    # re-parses the whole file once per 2h block (≈440 passes for 35 days).
    r = subprocess.run([tool, "tsdb", "create-blocks-from", "openmetrics", "--quiet",
                        "--max-block-duration=1500h", om, data],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if r.returncode != 0:
        die(f"promtool backfill failed (exit {r.returncode}):\n{r.stdout}{r.stderr}")
    if not a.keep_openmetrics:
        os.remove(om)
    t_fill = time.monotonic()

    cfg = os.path.join(d, "prometheus.yml")
    with open(cfg, "w") as f:
        f.write(PROM_YML)

    log_path = os.path.join(d, "prometheus.log")
    proc = None
    url = None
    for attempt in range(5):
        port = a.port or free_port(a.host)
        url = f"http://{a.host}:{port}"
        log = open(log_path, "ab")
        proc = subprocess.Popen(
            [prom,
             f"--config.file={cfg}",
             f"--storage.tsdb.path={data}",
             # retention counts back from the newest block; keep everything
             "--storage.tsdb.retention.time=3650d",
             f"--web.listen-address={a.host}:{port}",
             "--web.enable-lifecycle",
             "--log.level=info"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True, close_fds=True)
        log.close()
        if wait_ready(url, proc, data):
            break
        rc = proc.poll()
        with open(log_path, "rb") as f:
            tail = f.read()[-3000:].decode(errors="replace")
        if rc is not None and "address already in use" in tail and not a.port:
            continue   # lost the race for the port; try another one
        if rc is None:
            proc.kill()
            proc.wait()
        why = f"exited with code {rc}" if rc is not None else f"not ready within {READY_TIMEOUT:.0f}s"
        die(f"prometheus did not become ready at {url} ({why}); log {log_path}:\n{tail}")
    else:
        die("prometheus could not bind a free port after 5 attempts")

    # The backfilled blocks must be visible before we claim readiness.
    deadline = time.monotonic() + READY_TIMEOUT
    want = len(gh.SCENARIOS) * 2
    while True:
        try:
            n, _ = scalar(url, "count(http_requests_total)")
        except (HarnessError, OSError, ValueError):
            n = None
        if n == want:
            break
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            die(f"prometheus at {url} is ready but shows {n} series instead of {want}; log {log_path}")
        time.sleep(0.05)
    t_ready = time.monotonic()

    valid_until = anchor + horizon
    with open(os.path.join(d, "prometheus.pid"), "w") as f:
        f.write(f"{proc.pid}\n")

    # Detached watchdog: stop Prometheus at the end of the data, or when the parent goes away.
    wd_cmd = [sys.executable, os.path.abspath(__file__), "_watchdog", d, str(proc.pid), str(valid_until)]
    if a.parent_pid:
        wd_cmd.append(str(a.parent_pid))
    wd = subprocess.Popen(wd_cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    with open(os.path.join(d, "watchdog.pid"), "w") as f:
        f.write(f"{wd.pid}\n")

    env = {
        "PROM_URL": url,
        "PROM_PID": str(proc.pid),
        "PROM_DIR": d,
        "PROM_ANCHOR": str(anchor),
        "PROM_VALID_UNTIL": str(valid_until),
        "PROM_BURN_SHORT_ONLY_VALID_UNTIL": str(anchor + BURN_SHORT_ONLY_VALID),
        "PROM_STOP": f"'{os.path.join(HERE, 'stop.sh')} {d}'",
    }
    text = "".join(f"{k}={v}\n" for k, v in env.items())
    with open(os.path.join(d, "env"), "w") as f:
        f.write(text)
    sys.stdout.write(text)
    sys.stdout.flush()
    print(f"prometheus harness: {nsamples} samples; generate {t_gen - t0:.2f}s, "
          f"backfill {t_fill - t_gen:.2f}s, start+ready {t_ready - t_fill:.2f}s, "
          f"total {t_ready - t0:.2f}s; data {dir_size(data) / 1024:.0f} KiB; "
          f"log {log_path}", file=sys.stderr)
    return 0


def wait_ready(url: str, proc: subprocess.Popen, data: str) -> bool:
    """/-/ready answers 200 *and* the server on that port is ours (another
    Prometheus may already hold the port while ours fails to bind)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            status, _ = http_get(f"{url}/-/ready", timeout=1.0)
            if status == 200:
                status, body = http_get(f"{url}/api/v1/status/flags", timeout=1.0)
                path = json.loads(body).get("data", {}).get("storage.tsdb.path") if status == 200 else None
                if path == data and proc.poll() is None:
                    return True
                if path != data:
                    time.sleep(0.2)   # someone else's server: ours will exit with "address already in use"
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
                    return False
        except (OSError, ValueError):
            pass
        time.sleep(0.03)
    return False


def dir_size(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def terminate(pid: int, marker: str, timeout: float = 10.0) -> bool:
    """SIGTERM (then SIGKILL) one process, only if its command line names `marker`."""
    if not pid_alive(pid) or not pid_is_ours(pid, marker):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    return True


def read_pid(d: str, name: str) -> int | None:
    try:
        with open(os.path.join(d, name)) as f:
            return int(f.read().strip())
    except (FileNotFoundError, ValueError):
        return None


def cmd_stop(a) -> int:
    d = os.path.abspath(a.dir)
    wd = read_pid(d, "watchdog.pid")
    if wd:
        terminate(wd, "_watchdog", timeout=2.0)
    pid = read_pid(d, "prometheus.pid")
    if pid and terminate(pid, os.path.join(d, "data")):
        print(f"prometheus harness: stopped pid {pid}", file=sys.stderr)
    else:
        print(f"prometheus harness: nothing running from {d}", file=sys.stderr)
    for f in ("prometheus.pid", "watchdog.pid"):
        try:
            os.remove(os.path.join(d, f))
        except FileNotFoundError:
            pass
    return 0


def cmd_watchdog(a) -> int:
    pid, until = int(a.pid), float(a.until)
    parent = int(a.parent) if a.parent else None
    marker = os.path.join(os.path.abspath(a.dir), "data")
    while pid_alive(pid):
        if time.time() >= until or (parent and not pid_alive(parent)):
            terminate(pid, marker)
            break
        time.sleep(1.0)
    return 0


# --------------------------------------------------------------------------
# figures and checks

WINDOWS = ("30d", "6h", "1h", "30m", "5m")


def errors_q(job: str, w: str) -> str:
    return f'sum(rate(http_requests_total{{job="{job}",code=~"5.."}}[{w}]))'


def total_q(job: str, w: str) -> str:
    return f'sum(rate(http_requests_total{{job="{job}"}}[{w}]))'


def current_q(job: str) -> str:
    return f'sum(rate(http_requests_total{{job="{job}"}}[5m]))'


def baseline_q(job: str) -> str:
    return f'sum(rate(http_requests_total{{job="{job}"}}[5m] offset 1w))'


def div(a, b):
    if a is None or b is None:
        return None
    if b == 0:
        return math.nan
    return a / b


def measure(url: str, job: str, at: float | None = None) -> dict:
    """The figures slo-guard computes, from the policy's exact PromQL."""
    fig: dict = {"job": job}
    times = []
    for w in WINDOWS:
        err, t1 = scalar(url, errors_q(job, w), at)
        tot, t2 = scalar(url, total_q(job, w), at)
        times += [t1, t2]
        ratio = div(err, tot)
        fig[f"errors_{w}"] = err
        fig[f"total_{w}"] = tot
        fig[f"ratio_{w}"] = ratio
        fig[f"burn_{w}"] = None if ratio is None else ratio / gh.BUDGET
    r30 = fig["ratio_30d"]
    fig["budget_left"] = None if r30 is None else 1 - r30 / gh.BUDGET
    cur, t1 = scalar(url, current_q(job), at)
    base, t2 = scalar(url, baseline_q(job), at)
    times += [t1, t2]
    fig["traffic_current"] = cur
    fig["traffic_baseline"] = base
    fig["traffic_ratio"] = div(cur, base)
    fig["eval_time"] = sum(times) / len(times)
    return fig


def fmt(v, spec=".4g"):
    if v is None:
        return "empty"
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    return format(v, spec)


def print_table(figs: list[dict], out=sys.stdout) -> None:
    hdr = (f"{'job':<16} {'budget':>8} {'burn5m':>8} {'burn30m':>8} {'burn1h':>8} {'burn6h':>8} "
           f"{'ratio30d':>10} {'req/s':>8} {'base':>8} {'traffic':>8}")
    print(hdr, file=out)
    for f in figs:
        b = f["budget_left"]
        print(f"{f['job']:<16} {fmt(None if b is None else b * 100, '.2f') + ('%' if b is not None and not math.isnan(b) else ''):>8} "
              f"{fmt(f['burn_5m'], '.3f'):>8} {fmt(f['burn_30m'], '.3f'):>8} {fmt(f['burn_1h'], '.3f'):>8} "
              f"{fmt(f['burn_6h'], '.3f'):>8} {fmt(f['ratio_30d'], '.6f'):>10} "
              f"{fmt(f['traffic_current'], '.4f'):>8} {fmt(f['traffic_baseline'], '.4f'):>8} "
              f"{fmt(f['traffic_ratio'], '.3f'):>8}", file=out)


# Asserted ranges (inclusive).  They hold for every evaluation time between the
# anchor and PROM_VALID_UNTIL (burn-short-only: PROM_BURN_SHORT_ONLY_VALID_UNTIL).
# "nan" means the value must be NaN, "empty" an empty result, a number an exact-ish value.
RANGES: dict[str, dict] = {
    "healthy": {"budget_left": (0.79, 0.81), "burn_5m": (0.1, 0.3), "burn_30m": (0.1, 0.3),
                "burn_1h": (0.1, 0.3), "burn_6h": (0.1, 0.3), "traffic_current": (9.5, 10.5),
                "traffic_ratio": (0.95, 1.05)},
    "budget-low": {"budget_left": (0.09, 0.11), "burn_5m": (0.8, 1.0), "burn_30m": (0.8, 1.0),
                   "burn_1h": (0.8, 1.0), "burn_6h": (0.8, 1.0), "traffic_current": (9.5, 10.5),
                   "traffic_ratio": (0.95, 1.05)},
    "exhausted": {"budget_left": (-0.06, -0.04), "burn_5m": (0.1, 0.3), "burn_30m": (0.1, 0.3),
                  "burn_1h": (0.1, 0.3), "burn_6h": (0.1, 0.3), "traffic_current": (9.5, 10.5),
                  "traffic_ratio": (0.95, 1.05)},
    "burn-short-only": {"budget_left": (0.75, 0.80), "burn_5m": (28.0, 32.0), "burn_30m": (7.5, 30.0),
                        "burn_1h": (3.0, 12.5), "burn_6h": (0.5, 2.5), "traffic_current": (9.5, 10.5),
                        "traffic_ratio": (0.95, 1.05)},
    "burn-both": {"budget_left": (0.30, 0.74), "burn_5m": (23.0, 27.0), "burn_30m": (23.0, 27.0),
                  "burn_1h": (23.0, 27.0), "burn_6h": (8.0, 27.0), "traffic_current": (9.5, 10.5),
                  "traffic_ratio": (0.95, 1.05)},
    "spike": {"budget_left": (0.79, 0.81), "burn_5m": (0.1, 0.3), "burn_30m": (0.1, 0.3),
              "burn_1h": (0.1, 0.3), "burn_6h": (0.1, 0.3), "traffic_current": (28.5, 31.5),
              "traffic_baseline": (9.5, 10.5), "traffic_ratio": (2.85, 3.15)},
    "no-traffic": {"budget_left": (1.0, 1.0), "burn_5m": (0.0, 0.0), "burn_1h": (0.0, 0.0),
                   "traffic_current": (0.005, 0.02), "traffic_baseline": (0.005, 0.02),
                   "traffic_ratio": (0.9, 1.1)},
    "idle": {"total_5m": (0.0, 0.0), "total_30d": (0.0, 0.0), "errors_30d": (0.0, 0.0),
             "budget_left": "nan", "burn_5m": "nan", "burn_1h": "nan", "traffic_current": (0.0, 0.0),
             "traffic_ratio": "nan"},
    "does-not-exist": {"errors_30d": "empty", "total_30d": "empty", "total_5m": "empty",
                       "traffic_current": "empty", "traffic_baseline": "empty", "budget_left": "empty"},
}


def check_figs(fig: dict, ranges: dict) -> list[str]:
    bad = []
    for key, want in ranges.items():
        v = fig.get(key)
        if want == "nan":
            ok = v is not None and math.isnan(v)
        elif want == "empty":
            ok = v is None
        else:
            lo, hi = want
            ok = v is not None and not math.isnan(v) and lo <= v <= hi
        if not ok:
            bad.append(f"{fig['job']}: {key} = {fmt(v, '.6g')}, want {want}")
    return bad


def check_analytic(fig: dict, anchor: int) -> list[str]:
    """Measured figures must match the generator's exact integrals (Prometheus extrapolation tolerance)."""
    exp = gh.expected_figures(anchor, fig["eval_time"]).get(fig["job"])
    if exp is None:
        return []
    bad = []
    for key in ("budget_left", "burn_5m", "burn_30m", "burn_1h", "burn_6h", "traffic_current", "traffic_ratio"):
        m, e = fig[key], exp[key]
        if m is None or e is None:
            bad.append(f"{fig['job']}: {key} measured {fmt(m)} vs expected {fmt(e)}")
            continue
        if math.isnan(e) or math.isnan(m):
            if not (math.isnan(e) and math.isnan(m)):
                bad.append(f"{fig['job']}: {key} measured {fmt(m)} vs expected {fmt(e)}")
            continue
        # rate() extrapolation and the 10-minute grid at the 30d window's far edge
        # cost a little precision; burn figures also move with the eval time.
        tol = 0.005 if key == "budget_left" else 0.02 * abs(e) + (0.05 if key.startswith("burn") else 0.0)
        if abs(m - e) > tol:
            bad.append(f"{fig['job']}: {key} measured {m:.6g} vs generator {e:.6g}")
    return bad


def all_jobs() -> list[str]:
    return list(gh.SCENARIOS) + ["does-not-exist"]


def cmd_figures(a) -> int:
    figs = [measure(a.url, j, a.at) for j in all_jobs()]
    if a.json:
        json.dump(figs, sys.stdout, indent=1)
        print()
    else:
        print_table(figs)
    return 0


def cmd_check(a) -> int:
    require_binaries()
    own_tmp = a.dir is None
    d = a.dir or tempfile.mkdtemp(prefix="slo-guard-prom-")
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "start", d,
                        "--horizon-hours", str(a.horizon_hours)],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True)
    t_start = time.monotonic() - t0
    sys.stderr.write(r.stderr)
    if r.returncode != 0:
        die(f"start failed (exit {r.returncode})", code=r.returncode)
    env = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    url, anchor = env["PROM_URL"], int(env["PROM_ANCHOR"])
    print(f"started {url} (pid {env['PROM_PID']}) in {t_start:.2f}s (wall clock, incl. python start); "
          f"data dir {dir_size(os.path.join(d, 'data')) / 1024:.0f} KiB")
    failures: list[str] = []
    try:
        # 1) at wall-clock now, exactly as slo-guard will ask (no time= parameter)
        figs = [measure(url, j) for j in all_jobs()]
        print(f"\nfigures at now (anchor{figs[0]['eval_time'] - anchor:+.1f}s):")
        print_table(figs)
        for f in figs:
            failures += check_figs(f, RANGES[f["job"]])
            failures += check_analytic(f, anchor)
        # 2) at the edges of the validity windows (time= in the future; the data is already there)
        valid_until = int(env["PROM_VALID_UNTIL"])
        bso_until = int(env["PROM_BURN_SHORT_ONLY_VALID_UNTIL"])
        for label, at, jobs in (
                ("burn-short-only valid-until", bso_until, ["burn-short-only"]),
                ("data horizon - 1m", valid_until - 60, [j for j in all_jobs() if j != "burn-short-only"])):
            figs = [measure(url, j, at) for j in jobs]
            print(f"\nfigures at {label} (anchor{at - anchor:+d}s):")
            print_table(figs)
            for f in figs:
                failures += check_figs(f, RANGES[f["job"]])
                failures += check_analytic(f, anchor)
    finally:
        subprocess.run([sys.executable, os.path.abspath(__file__), "stop", d], stdin=subprocess.DEVNULL)
        if own_tmp:
            shutil.rmtree(d, ignore_errors=True)
    if failures:
        print("\nFAIL:", file=sys.stderr)
        for f in failures:
            print(f"  {f}", file=sys.stderr)
        return 1
    print("\nOK: every scenario is within its expected range")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start", help="backfill and start Prometheus in DIR")
    s.add_argument("dir")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on: loopback, or one the caller made (the real-cluster test's pod bridge)")
    s.add_argument("--port", type=int, default=int(os.environ.get("PROM_HARNESS_PORT", "0")),
                   help="listen port (default: a free one)")
    s.add_argument("--horizon-hours", type=float,
                   default=float(os.environ.get("PROM_HARNESS_HORIZON_HOURS", gh.DEFAULT_HORIZON_HOURS)),
                   help="hours of data after the anchor; Prometheus is stopped then (default %(default)s)")
    s.add_argument("--anchor", type=int, default=None,
                   help="anchor epoch seconds, multiple of 15 (default: now)")
    s.add_argument("--parent-pid", type=int, default=int(os.environ.get("PROM_HARNESS_PARENT_PID", "0")),
                   help="stop Prometheus when this process exits")
    s.add_argument("--keep-openmetrics", action="store_true", help="keep DIR/history.om")
    s.set_defaults(fn=cmd_start)
    s = sub.add_parser("stop", help="stop the Prometheus started from DIR")
    s.add_argument("dir")
    s.set_defaults(fn=cmd_stop)
    s = sub.add_parser("figures", help="query every scenario and print the figures")
    s.add_argument("url")
    s.add_argument("--at", type=float, default=None, help="evaluation time (default: now)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_figures)
    s = sub.add_parser("check", help="start, query, assert, stop")
    s.add_argument("dir", nargs="?", default=None)
    s.add_argument("--horizon-hours", type=float, default=gh.DEFAULT_HORIZON_HOURS)
    s.set_defaults(fn=cmd_check)
    s = sub.add_parser("_watchdog")
    s.add_argument("dir")
    s.add_argument("pid")
    s.add_argument("until")
    s.add_argument("parent", nargs="?")
    s.set_defaults(fn=cmd_watchdog)
    sys.stdout.reconfigure(line_buffering=True)
    a = ap.parse_args(argv)
    try:
        return a.fn(a)
    except HarnessError as e:
        die(str(e))
    return 1


if __name__ == "__main__":
    sys.exit(main())
