#!/usr/bin/env python3
"""A stand-in OpenAI-compatible server (python3 stdlib only) for tests/bench/e2e_bench.sh --mock.

Streams one SSE chunk per "token" over chunked transfer encoding, a usage chunk when
stream_options.include_usage is set, then `data: [DONE]`, like vLLM, SGLang and deltaserve do.
Non-streamed completions answer "... #### 18" (right for GSM8K test question 0 only).
Prints the port it listens on as its first stdout line.
"""
import argparse
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "mock-model"


def prompt_tokens(body):
    if "messages" in body:
        return sum(len(str(m.get("content", "")).split()) for m in body["messages"])
    p = body.get("prompt", "")
    return len(p) if isinstance(p, list) else len(str(p).split())


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    token_delay = 0.0

    def log_message(self, fmt, *args):  # keep the test output clean
        pass

    def send_json(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/v1/models":
            self.send_json(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
        elif self.path == "/health":
            self.send_json(200, {})
        else:
            self.send_json(404, {"error": {"message": "no route " + self.path, "code": 404}})

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        try:
            body = json.loads(self.rfile.read(length))
        except ValueError:
            return self.send_json(400, {"error": {"message": "malformed JSON", "code": 400}})
        chat = self.path == "/v1/chat/completions"
        if not chat and self.path != "/v1/completions":
            return self.send_json(404, {"error": {"message": "no route " + self.path, "code": 404}})
        n = int(body.get("max_tokens", 16))
        if n <= 0:
            return self.send_json(400, {"error": {"message": "max_tokens must be positive", "code": 400}})
        usage = {"prompt_tokens": prompt_tokens(body), "completion_tokens": n,
                 "total_tokens": prompt_tokens(body) + n}
        if not body.get("stream"):
            text = " So the answer is 18.\n#### 18"
            usage["completion_tokens"] = len(text.split())
            choice = {"index": 0, "finish_reason": "stop"}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            return self.send_json(200, {"id": "cmpl-mock", "object": "text_completion", "model": MODEL,
                                        "choices": [choice], "usage": usage})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()

        def event(obj):
            data = ("data: " + (obj if isinstance(obj, str) else json.dumps(obj)) + "\n\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        for i in range(n):
            time.sleep(self.token_delay)
            finish = "length" if i + 1 == n else None
            choice = {"index": 0, "finish_reason": finish}
            if chat:
                choice["delta"] = {"content": "tok%d " % i}
            else:
                choice["text"] = "tok%d " % i
            event({"id": "cmpl-mock", "object": "text_completion", "model": MODEL, "choices": [choice]})
        if (body.get("stream_options") or {}).get("include_usage"):
            event({"id": "cmpl-mock", "model": MODEL, "choices": [], "usage": usage})
        event("[DONE]")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--token-delay", type=float, default=0.001)
    args = ap.parse_args()
    Handler.token_delay = args.token_delay
    ThreadingHTTPServer.request_queue_size = 256
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
