#!/usr/bin/env python3
"""Capture webhook for the slo-guard e2e tests (Python 3 standard library only).

Serves HTTPS on 127.0.0.1, stores the raw body of every AdmissionReview that
kube-apiserver POSTs to it as <out-dir>/<seq>.json (seq zero-padded, in
arrival order; the file is written to a temp name first, then renamed), and
answers allowed=true. It is a recorder, not a policy engine.

  capture_webhook.py --cert tls.crt --key tls.key --out DIR [--port N] [--port-file F]

With --port 0 (the default) the OS picks a free port; it is written to
--port-file once the socket is listening, so a caller can wait for that file.
"""
import argparse
import json
import os
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_lock = threading.Lock()
_seq = 0


class Handler(BaseHTTPRequestHandler):
    server_version = "slo-guard-capture/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # one line per request on stderr
        sys.stderr.write("capture: %s %s\n" % (self.address_string(), fmt % args))

    def _reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path in ("/healthz", "/readyz"):
            self._reply(200, {"status": "ok"})
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self):
        global _seq
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            review = json.loads(raw)
            uid = review["request"]["uid"]
            api_version = review.get("apiVersion", "admission.k8s.io/v1")
        except (ValueError, KeyError, TypeError) as e:
            self._reply(400, {"error": "not an AdmissionReview: %s" % e})
            return
        with _lock:
            _seq += 1
            seq = _seq
        out = self.server.out_dir
        tmp = os.path.join(out, ".%06d.json.tmp" % seq)
        with open(tmp, "wb") as f:
            f.write(raw)
        os.rename(tmp, os.path.join(out, "%06d.json" % seq))
        self._reply(200, {
            "apiVersion": api_version,
            "kind": "AdmissionReview",
            "response": {"uid": uid, "allowed": True},
        })


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    a = ap.parse_args()

    os.makedirs(a.out, exist_ok=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(a.cert, a.key)

    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    srv.daemon_threads = True
    srv.out_dir = a.out
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    port = srv.server_address[1]
    if a.port_file:
        tmp = a.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.rename(tmp, a.port_file)
    sys.stderr.write("capture: listening on https://127.0.0.1:%d, writing to %s\n" % (port, a.out))
    srv.serve_forever()


if __name__ == "__main__":
    main()
