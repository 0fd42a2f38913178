#!/usr/bin/env python3
"""A demo OpenAI-compatible upstream for `make run EXAMPLE=llm` and the tests: no model, no network.

POST /v1/chat/completions answers a chat completion whose `usage.total_tokens` is the request's
`x-demo-tokens` header (default 100): as one JSON body, or, when the request body says
`"stream": true`, as server-sent events ending with a chunk that carries the usage (as OpenAI
sends it with `stream_options.include_usage`) and `data: [DONE]`. `x-demo-status` sets the status
(default 200; an error status answers an OpenAI-shaped error, with usage when `x-demo-tokens` is
given), `x-demo-delay-ms` holds the answer back (a request in flight; in a stream, each event),
and `x-demo-reset: 1`
closes the connection without an answer. GET /v1/models lists the one demo model. Standard
library only.

    python3 envoy/examples/llm/upstream.py [--host 127.0.0.1] [--port 8080]
"""
import argparse
import itertools
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "demo-model"
IDS = itertools.count(1)


def usage(total: int) -> dict:
    prompt = total // 4
    return {"prompt_tokens": prompt, "completion_tokens": total - prompt, "total_tokens": total}


def completion(model: str, total: int) -> dict:
    return {
        "id": f"chatcmpl-demo-{next(IDS)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": f"A demo answer that used {total} tokens."},
            "finish_reason": "stop",
        }],
        "usage": usage(total),
    }


def chunks(model: str, total: int):
    """The SSE events of a streamed completion: a few deltas, then the usage, then [DONE]."""
    base = {"id": f"chatcmpl-demo-{next(IDS)}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model}
    for word in ["A ", "demo ", "answer."]:
        yield {**base, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
    yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    yield {**base, "choices": [], "usage": usage(total)}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes

    def do_GET(self):
        if self.path.split("?")[0] == "/v1/models":
            return self.send_json(200, {"object": "list", "data": [
                {"id": MODEL, "object": "model", "created": 0, "owned_by": "demo"}]})
        self.send_json(404, error("not_found", f"no route {self.path}"))

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.split("?")[0] != "/v1/chat/completions":
            return self.send_json(404, error("not_found", f"no route {self.path}"))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self.send_json(400, error("invalid_request_error", "the body is not JSON"))
        delay = int(self.headers.get("x-demo-delay-ms") or 0) / 1000
        if not body.get("stream"):
            time.sleep(delay)
        if self.headers.get("x-demo-reset") == "1":
            self.close_connection = True
            return
        status = int(self.headers.get("x-demo-status") or 200)
        total = int(self.headers.get("x-demo-tokens") or 100)
        model = body.get("model") or MODEL
        if status >= 400:
            answer = error("server_error" if status >= 500 else "invalid_request_error",
                           f"the demo upstream answered {status}, as x-demo-status asked")
            if self.headers.get("x-demo-tokens"):
                answer["usage"] = usage(total)
            return self.send_json(status, answer)
        if body.get("stream"):
            return self.send_events(status, chunks(model, total), delay)
        self.send_json(status, completion(model, total))

    def send_json(self, status: int, answer: dict) -> None:
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_events(self, status: int, events, delay: float) -> None:
        self.send_response(status)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for event in [*(json.dumps(e) for e in events), "[DONE]"]:
            time.sleep(delay)
            data = f"data: {event}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args):
        pass


def error(kind: str, message: str) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    ThreadingHTTPServer.request_queue_size = 1024
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(f"demo LLM upstream on http://{args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
