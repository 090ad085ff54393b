"""A stand-in Prometheus for benches/callgrind/run.sh, on 127.0.0.1:<port>.

Every instant query (GET or POSTed form) gets one sample: the current time for a
timestamp() query (fresh data), 0.001 for an error query (code=~"5.."), 10 otherwise, so
the checkout policy of tests/load/policies admits the review with its budget at 90%.
"""
import json
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Answers(BaseHTTPRequestHandler):
    def answer(self, query):
        if "timestamp" in query:
            value = str(time.time())
        elif "5.." in query:
            value = "0.001"
        else:
            value = "10"
        body = json.dumps({
            "status": "success",
            "data": {"resultType": "vector", "result": [{"metric": {}, "value": [time.time(), value]}]},
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query).get("query", [""])[0]
        self.answer(query)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        self.answer(form.get("query", [""])[0])

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Answers).serve_forever()
