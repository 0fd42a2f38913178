"""A client key given twice, in a real Envoy: what Envoy hands the filter and the upstream, and the
filter's answer (refused as ambiguous by default; counted under the value a rule names)."""
import http.client
import json
import textwrap

from contextlib import contextmanager

from harness import Envoy, Upstream, prometheus

LIMIT = {"requests": 2, "window": "60s"}

# An upstream that answers with every header line it received, in order.
LINES_UPSTREAM = textwrap.dedent('''
    import argparse, json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Lines(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_GET(self):
            body = json.dumps({"lines": [[k.lower(), v] for k, v in self.headers.items()]}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int)
    ThreadingHTTPServer(("127.0.0.1", parser.parse_args().port), Lines).serve_forever()
''')

CONFIG = {"rules": [
    {"name": "header", "match": {"path": {"prefix": "/header"}}, "key": [{"header": "x-api-key"}, {"client_ip": {}}],
     "limits": [LIMIT]},
    {"name": "query", "match": {"path": {"prefix": "/query"}}, "key": [{"query": "api_key"}], "limits": [LIMIT]},
    {"name": "bearer", "match": {"path": {"prefix": "/bearer"}}, "key": [{"bearer": {}}, {"client_ip": {}}],
     "limits": [LIMIT]},
    {"name": "first", "match": {"path": {"prefix": "/first"}}, "key": [{"header": "x-api-key"}],
     "on_ambiguous_key": "first", "limits": [LIMIT]},
    {"name": "last", "match": {"path": {"prefix": "/last"}}, "key": [{"header": "x-api-key"}],
     "on_ambiguous_key": "last", "limits": [LIMIT]},
]}


def send(envoy, path, lines):
    """A request with these header lines, in this order (a name may come twice)."""
    conn = envoy.connection()
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        for name, value in lines:
            conn.putheader(name, value)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        conn.close()


@contextmanager
def envoy_before_lines_upstream(config, tmp_path, host="wasm"):
    """Envoy with the filter in front of the upstream that echoes its header lines."""
    script = tmp_path / "lines_upstream.py"
    script.write_text(LINES_UPSTREAM)
    upstream = Upstream(script)
    try:
        with Envoy(config, upstream, concurrency=2, host=host) as envoy:
            yield envoy
    finally:
        upstream.close()


def assert_ambiguous(answer, source):
    status, headers, body = answer
    assert status == 400, answer
    reply = json.loads(body)
    assert reply["error"] == "ambiguous_client_key", reply
    assert source in reply["message"], reply
    assert "retry-after" not in headers and not any(k.startswith("x-ratelimit") for k in headers), headers


def test_a_key_given_twice_never_escapes_its_limit(tmp_path, host):
    with envoy_before_lines_upstream(CONFIG, tmp_path, host) as envoy:
        refused_as_ambiguous(envoy)


def refused_as_ambiguous(envoy):
    exhausted = [("x-api-key", "exhausted")]
    assert [send(envoy, "/header", exhausted)[0] for _ in range(3)] == [200, 200, 429]
    # The upstream is handed both lines: one that read "junk" or the last line would let the
    # client past its exhausted limit. The filter refuses the request as ambiguous, in either order.
    for lines in ([("x-api-key", "junk"), ("x-api-key", "exhausted")],
                  [("x-api-key", "exhausted"), ("x-api-key", "junk")],
                  [("x-api-key", ""), ("x-api-key", "exhausted")]):
        assert_ambiguous(send(envoy, "/header", lines), "header x-api-key")
    # The same value twice says one thing: counted, and refused by the limit.
    assert send(envoy, "/header", exhausted * 2)[0] == 429
    # A fresh key sent twice with different values is never counted under either.
    for _ in range(3):
        assert_ambiguous(send(envoy, "/header", [("x-api-key", "a"), ("x-api-key", "b")]), "header x-api-key")
    assert [send(envoy, "/header", [("x-api-key", "a")])[0] for _ in range(3)] == [200, 200, 429]

    # Query parameters.
    assert [send(envoy, "/query?api_key=q", [])[0] for _ in range(3)] == [200, 200, 429]
    assert_ambiguous(send(envoy, "/query?api_key=junk&api_key=q", []), "query parameter api_key")
    assert_ambiguous(send(envoy, "/query?api_key=q&api%5Fkey=junk", []), "query parameter api_key")

    # Bearer tokens: two Authorization lines, one comma-joined line, a bearer beside Basic.
    token = [("authorization", "Bearer t")]
    assert [send(envoy, "/bearer", token)[0] for _ in range(3)] == [200, 200, 429]
    for lines in ([("authorization", "Bearer junk"), ("authorization", "Bearer t")],
                  [("authorization", "Bearer junk, Bearer t")],
                  [("authorization", "Basic dTpw"), ("authorization", "Bearer t")]):
        assert_ambiguous(send(envoy, "/bearer", lines), "bearer token (authorization)")

    # A rule told which value its upstream reads counts that one.
    for path, counted, other in (("/first", "k1", "k2"), ("/last", "k2", "k1")):
        for _ in range(2):
            assert send(envoy, path, [("x-api-key", "k1"), ("x-api-key", "k2")])[0] == 200
        assert send(envoy, path, [("x-api-key", counted)])[0] == 429, path
        assert send(envoy, path, [("x-api-key", other)])[0] == 200, path

    stats = prometheus(envoy)
    ambiguous = {rule: stats[f"ratelimit_{rule}_ambiguous_key"] for rule in ("header", "query", "bearer", "first")}
    assert ambiguous == {"header": 6, "query": 2, "bearer": 3, "first": 0}, ambiguous
    assert stats["ratelimit_header_refused"] == 3, "by the limits alone: exhausted, the same value twice, a"


def test_envoy_hands_both_lines_to_the_upstream(tmp_path):
    """What Envoy does with a header line given twice: the upstream receives both lines (so it may
    read either), two Authorization lines as one, two X-Forwarded-For lines as one list. No filter
    rule applies here."""
    config = {"rules": [{"name": "other", "match": {"path": {"prefix": "/nothing"}}, "limits": [LIMIT]}]}
    with envoy_before_lines_upstream(config, tmp_path) as envoy:
        status, _, body = send(envoy, "/seen", [("x-api-key", "junk"), ("x-api-key", "exhausted"),
                                                ("authorization", "Bearer a"), ("authorization", "Bearer b"),
                                                ("x-forwarded-for", "6.6.6.6"), ("x-forwarded-for", "7.7.7.7")])
        assert status == 200
        lines = json.loads(body)["lines"]
        assert [v for k, v in lines if k == "x-api-key"] == ["junk", "exhausted"], lines
        authorization = [v for k, v in lines if k == "authorization"]
        # Envoy 1.40 joins Authorization lines into one, comma-separated (it keeps that header in
        # one place of its header map): the filter reads the same two credentials either way.
        assert authorization == ["Bearer a,Bearer b"], authorization
        forwarded = [v for k, v in lines if k == "x-forwarded-for"]
        # X-Forwarded-For lines too (then Envoy appends what it adds): one list, as client_ip reads it.
        assert len(forwarded) == 1 and forwarded[0].startswith("6.6.6.6,7.7.7.7"), forwarded
