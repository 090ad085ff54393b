#!/usr/bin/env python3
"""A steady stream of admissions through the real kube-apiserver, for the
availability scenarios of tests/e2e/real-cluster.sh.

Each request is a server-side dry-run CREATE of a Deployment in a governed
namespace, so the apiserver calls slo-guard's mutating and validating webhooks
for every one. It runs until STOP_FILE exists (or --max-seconds pass), at
about --rate requests per second, over keep-alive connections, and prints one
JSON summary line: sent, admitted, failed, and the first failure messages.

Loopback or the test's own bridge only: the URL is the test's apiserver.
"""
import argparse
import http.client
import json
import os
import ssl
import threading
import time
import urllib.parse


def deployment(namespace: str) -> bytes:
    return json.dumps({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"generateName": "stream-", "namespace": namespace,
                     "labels": {"app": "checkout"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "checkout"}},
            "template": {
                "metadata": {"labels": {"app": "checkout"}},
                "spec": {"containers": [{"name": "checkout", "image": "docker.io/slo-guard-e2e/pause:1"}]},
            },
        },
    }).encode()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--server", required=True, help="https://HOST:PORT of the apiserver")
    p.add_argument("--ca", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--stop-file", required=True)
    p.add_argument("--rate", type=float, default=20.0, help="requests per second, all workers together")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--max-seconds", type=float, default=300.0)
    a = p.parse_args()

    url = urllib.parse.urlsplit(a.server)
    ctx = ssl.create_default_context(cafile=a.ca)
    ctx.load_cert_chain(a.cert, a.key)
    body = deployment(a.namespace)
    path = f"/apis/apps/v1/namespaces/{a.namespace}/deployments?dryRun=All"
    lock = threading.Lock()
    counts = {"sent": 0, "admitted": 0, "failed": 0}
    failures: list[str] = []
    deadline = time.monotonic() + a.max_seconds
    interval = a.workers / a.rate

    def worker() -> None:
        conn = None
        next_at = time.monotonic()
        while time.monotonic() < deadline and not os.path.exists(a.stop_file):
            next_at += interval
            status, text = 0, ""
            try:
                if conn is None:
                    conn = http.client.HTTPSConnection(url.hostname, url.port, context=ctx, timeout=35)
                conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                status, text = resp.status, resp.read().decode(errors="replace")
            except (OSError, http.client.HTTPException) as e:
                text = f"{type(e).__name__}: {e}"
                if conn is not None:
                    conn.close()
                conn = None
            with lock:
                counts["sent"] += 1
                if status == 201:
                    counts["admitted"] += 1
                else:
                    counts["failed"] += 1
                    if len(failures) < 5:
                        try:
                            text = json.loads(text).get("message", text)
                        except ValueError:
                            pass
                        failures.append(f"{status}: {text[:300]}")
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            else:
                next_at = time.monotonic()

    threads = [threading.Thread(target=worker) for _ in range(a.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({**counts, "failures": failures}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
