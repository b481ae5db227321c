#!/usr/bin/env python3
"""A tiny OpenAI-compatible model for tests/openclaw-interop/run.sh only: answers every chat
completion with "pong: <the user's words>", streamed as SSE chunks then [DONE] (or as one JSON body
when not streamed). Listens on 127.0.0.1 inside the run's network namespace.
Usage: fake_model.py PORT [FILE]  (FILE: keep the last request body there, for debugging)."""
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def visible(text):
    """The user's own words. OpenClaw sends "[<timestamp>] <words>", a blank line, runtime notes,
    and a separate <<<...INTERNAL_CONTEXT>>> message: keep the first paragraph outside those."""
    out, inside = [], False
    for line in text.splitlines():
        if "<<<" in line and "INTERNAL_CONTEXT" in line:
            inside = "END_" not in line
            continue
        if inside:
            continue
        if not line.strip():
            if out:
                break
            continue
        out.append(line.strip())
    words = " ".join(out)
    if words.startswith("[") and "] " in words:
        words = words.split("] ", 1)[1]
    return words[-200:]


def user_words(body):
    """The newest user message that has words of the user's own."""
    for m in reversed(body.get("messages", [])):
        if m.get("role") != "user":
            continue
        c = m.get("content")
        if isinstance(c, list):
            c = " ".join(p.get("text", "") for p in c if isinstance(p, dict))
        if isinstance(c, str) and visible(c):
            return visible(c)
    return ""


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send_json(self, obj):
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.send_json({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    def do_POST(self):
        n = int(self.headers.get("content-length", "0"))
        body = json.loads(self.rfile.read(n) or b"{}")
        if len(sys.argv) > 2:
            with open(sys.argv[2], "w") as f:
                json.dump(body, f, indent=1)
        text = ("pong: " + user_words(body)).strip()
        sys.stderr.write("model request -> %r\n" % text)
        base = {"id": "chatcmpl-fake", "created": int(time.time()), "model": "fake-model"}
        if not body.get("stream"):
            self.send_json(dict(base, object="chat.completion",
                                choices=[{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": text}}],
                                usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}))
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        words = text.split(" ")
        deltas = [{"role": "assistant", "content": ""}]
        deltas += [{"content": (w if i == 0 else " " + w)} for i, w in enumerate(words)]
        for d in deltas:
            ev = dict(base, object="chat.completion.chunk",
                      choices=[{"index": 0, "delta": d, "finish_reason": None}])
            self.wfile.write(b"data: " + json.dumps(ev).encode() + b"\n\n")
            self.wfile.flush()
            time.sleep(0.05)
        ev = dict(base, object="chat.completion.chunk",
                  choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}],
                  usage={"prompt_tokens": 1, "completion_tokens": len(words),
                         "total_tokens": 1 + len(words)})
        self.wfile.write(b"data: " + json.dumps(ev).encode() + b"\n\ndata: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 18000), H).serve_forever()
