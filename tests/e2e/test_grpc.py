"""gRPC clients through a real Envoy and the filter: a refusal is a gRPC status a client
understands (RESOURCE_EXHAUSTED, its RetryInfo and QuotaFailure), for unary and streaming calls,
through gRPC-Web too, and a client that retries UNAVAILABLE does not retry it.

A real `grpcio` server (tests/e2e/grpc_upstream.py) behind Envoy (envoy/envoy.yaml with its
upstream cluster on HTTP/2 and Envoy's grpc_web filter before the rate limiter), a real `grpcio`
client; `google.rpc` messages decoded and re-encoded by googleapis-common-protos.
"""
import http.client
import json
import re
import struct
import tempfile
import time
from pathlib import Path

import grpc
import pytest
import yaml
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from harness import ENVOY_YAML, Envoy, Upstream, admin_get

GRPC_UPSTREAM = Path(__file__).parent / "grpc_upstream.py"
SAY_HELLO = "/helloworld.Greeter/SayHello"
WINDOW_S = 10
MESSAGE = "Quota of {{limit}} calls per 10 s used up (100 % — réessayez) in {{retry_after}} s"

CONFIG = {
    "rules": [
        {"name": "say_hello", "match": {"path": {"exact": SAY_HELLO}},
         "key": [{"header": "x-api-key"}], "on_missing_key": "deny",
         "limits": [{"name": "per_10s", "requests": 3, "window": f"{WINDOW_S}s", "message": MESSAGE}]},
        {"name": "greeter", "match": {"path": {"prefix": "/helloworld.Greeter/"}},
         "key": [{"header": "x-api-key"}],
         "limits": [{"name": "per_10s", "requests": 3, "window": f"{WINDOW_S}s"}]},
    ]
}


def grpc_envoy_yaml(directory: Path) -> Path:
    """envoy/envoy.yaml with its upstream on HTTP/2 and the grpc_web filter first."""
    config = yaml.safe_load(ENVOY_YAML.read_text())
    cluster = config["static_resources"]["clusters"][0]
    cluster["typed_extension_protocol_options"] = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    }
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"].insert(0, {
        "name": "envoy.filters.http.grpc_web",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb"},
    })
    path = directory / "envoy-grpc.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def grpc_upstream():
    upstream = Upstream(GRPC_UPSTREAM)
    yield upstream
    upstream.close()


@pytest.fixture
def start_grpc_envoy(grpc_upstream):
    started = []
    directory = Path(tempfile.mkdtemp(prefix="envoy-grpc-"))

    def start(filter_config=CONFIG) -> Envoy:
        envoy = Envoy(filter_config, grpc_upstream, envoy_yaml=grpc_envoy_yaml(directory))
        started.append(envoy)
        return envoy.start()

    yield start
    for envoy in started:
        envoy.close()


@pytest.fixture
def envoy(start_grpc_envoy):
    return start_grpc_envoy()


def channel(envoy: Envoy, retry_unavailable: bool = False) -> grpc.Channel:
    options = []
    if retry_unavailable:
        policy = {"maxAttempts": 5, "initialBackoff": "0.05s", "maxBackoff": "0.2s",
                  "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}
        service_config = {"methodConfig": [{"name": [{"service": "helloworld.Greeter"}], "retryPolicy": policy}]}
        options = [("grpc.enable_retries", 1), ("grpc.service_config", json.dumps(service_config))]
    return grpc.insecure_channel(f"127.0.0.1:{envoy.listen_port}", options=options)


def trailing(error: grpc.RpcError) -> dict:
    return {k: v for k, v in error.trailing_metadata() or ()}


def unpack(status: status_pb2.Status):
    retry, quota = error_details_pb2.RetryInfo(), error_details_pb2.QuotaFailure()
    kinds = []
    for detail in status.details:
        for message in (retry, quota):
            if detail.Is(message.DESCRIPTOR):
                detail.Unpack(message)
                kinds.append(message.DESCRIPTOR.full_name)
    return kinds, retry, quota


def expected_refusal(code: int, message: str, retry_after: int, violations) -> bytes:
    """The google.rpc.Status the filter should send, serialized by Python's protobuf."""
    retry, quota = any_pb2.Any(), any_pb2.Any()
    retry.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=retry_after)))
    quota.Pack(error_details_pb2.QuotaFailure(violations=violations))
    return status_pb2.Status(code=code, message=message, details=[retry, quota]).SerializeToString()


def downstream_requests(envoy: Envoy) -> int:
    stats = admin_get(envoy.admin_port, "/stats?filter=^http.ingress.downstream_rq_total$")
    return int(re.search(r"downstream_rq_total: (\d+)", stats).group(1))


def test_a_unary_call_over_its_limit_is_resource_exhausted_with_retry_info(envoy):
    with channel(envoy) as ch:
        hello = ch.unary_unary(SAY_HELLO)
        metadata = [("x-api-key", "unary")]
        for _ in range(3):
            reply, call = hello.with_call(b"world", metadata=metadata, timeout=10)
            assert reply == b"hello world"
            # An admitted call carries the rate-limit headers as initial metadata.
            assert dict(call.initial_metadata())["x-ratelimit-limit"] == "3"
        with pytest.raises(grpc.RpcError) as refused:
            hello(b"world", metadata=metadata, timeout=10)
    error = refused.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Trailers-only (one HEADERS frame with END_STREAM): grpcio hands every header over as
    # trailing metadata and has no initial metadata.
    assert error.initial_metadata() == ()
    meta = trailing(error)
    retry_after = int(meta["retry-after"])
    assert 1 <= retry_after <= WINDOW_S + 1  # a sliding window: its last sub-window too
    assert (meta["x-ratelimit-limit"], meta["x-ratelimit-remaining"]) == ("3", "0")
    # grpc-message, percent-encoded by the filter, decoded by the client: the limit's sentence.
    sentence = f"Quota of 3 calls per 10 s used up (100 % — réessayez) in {retry_after} s"
    assert error.details() == sentence
    # grpcio-status checks that the details' code and message are the call's own.
    status = rpc_status.from_call(error)
    kinds, retry, quota = unpack(status)
    assert kinds == ["google.rpc.RetryInfo", "google.rpc.QuotaFailure"]
    assert retry.retry_delay.ToTimedelta().total_seconds() == retry_after
    [violation] = quota.violations
    assert (violation.subject, violation.description) == ("rule:say_hello", "3 requests per 10s")
    assert (violation.quota_id, violation.quota_value) == ("per_10s", 3)
    # Byte for byte what Python's protobuf serializes for the same message.
    sent = meta["grpc-status-details-bin"]
    assert sent == status.SerializeToString()
    assert sent == expected_refusal(8, sentence, retry_after, [violation])


def test_streaming_calls_count_once_per_call(envoy):
    with channel(envoy) as ch:
        hellos = ch.unary_stream("/helloworld.Greeter/SayHellos")
        chat = ch.stream_stream("/helloworld.Greeter/Chat")
        metadata = [("x-api-key", "streams")]
        # Three calls of the service (its rule: 3 per 10 s), each with several messages.
        assert list(hellos(b"a", metadata=metadata, timeout=10)) == [b"hello 0 a", b"hello 1 a", b"hello 2 a"]
        assert list(chat(iter([b"1", b"2", b"3", b"4"]), metadata=metadata, timeout=10)) == [
            b"echo 1", b"echo 2", b"echo 3", b"echo 4"]
        assert len(list(hellos(b"b", metadata=metadata, timeout=10))) == 3
        for refused_call in (lambda: list(hellos(b"c", metadata=metadata, timeout=10)),
                             lambda: list(chat(iter([b"5"]), metadata=metadata, timeout=10))):
            with pytest.raises(grpc.RpcError) as refused:
                refused_call()
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            kinds, retry, quota = unpack(rpc_status.from_call(refused.value))
            assert retry.retry_delay.seconds == int(trailing(refused.value)["retry-after"])
            assert quota.violations[0].subject == "rule:greeter"


def test_a_client_retrying_unavailable_does_not_retry_a_refusal(start_grpc_envoy):
    """With `"grpc": "http"` (the reply before this feature) Envoy turns the 429 into UNAVAILABLE
    and the client retries at once; by default the refusal reaches the client after one try."""
    as_http = json.loads(json.dumps(CONFIG))
    as_http["rules"][0]["grpc"] = "http"
    for config, code, tries in ((as_http, grpc.StatusCode.UNAVAILABLE, 5),
                                (CONFIG, grpc.StatusCode.RESOURCE_EXHAUSTED, 1)):
        envoy = start_grpc_envoy(config)
        with channel(envoy, retry_unavailable=True) as ch:
            hello = ch.unary_unary(SAY_HELLO)
            metadata = [("x-api-key", "retrier")]
            for _ in range(3):
                hello(b"x", metadata=metadata, timeout=10)
            before = downstream_requests(envoy)
            with pytest.raises(grpc.RpcError) as refused:
                hello(b"x", metadata=metadata, timeout=10)
            assert refused.value.code() == code
            time.sleep(0.3)  # the stats of the last attempt
            assert downstream_requests(envoy) - before == tries, config


def test_a_call_without_a_key_is_unauthenticated(envoy):
    with channel(envoy) as ch:
        with pytest.raises(grpc.RpcError) as refused:
            ch.unary_unary(SAY_HELLO)(b"x", timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert refused.value.details() == "This endpoint needs a client key (rule say_hello)."
    status = rpc_status.from_call(refused.value)
    assert (status.code, list(status.details)) == (16, [])


def grpc_web_call(envoy: Envoy, key: str):
    conn = http.client.HTTPConnection("127.0.0.1", envoy.listen_port, timeout=10)
    try:
        frame = b"\x00" + struct.pack(">I", 3) + b"web"
        headers = {"content-type": "application/grpc-web+proto", "x-grpc-web": "1",
                   "x-api-key": key}
        conn.request("POST", SAY_HELLO, body=frame, headers=headers)
        response = conn.getresponse()
        return response.status, dict((k.lower(), v) for k, v in response.getheaders()), response.read()
    finally:
        conn.close()


def grpc_web_trailers(body: bytes) -> dict:
    """The trailer frame (flag 0x80) of a gRPC-Web response body."""
    while body:
        flag, length = body[0], struct.unpack(">I", body[1:5])[0]
        payload, body = body[5:5 + length], body[5 + length:]
        if flag & 0x80:
            lines = payload.decode().strip().split("\r\n")
            return dict(line.split(":", 1) for line in lines)
    return {}


def test_grpc_web_through_envoys_grpc_web_filter(envoy):
    for _ in range(3):
        status, headers, body = grpc_web_call(envoy, "web")
        assert status == 200 and headers["content-type"].startswith("application/grpc-web")
        assert b"hello web" in body
        assert grpc_web_trailers(body)["grpc-status"].strip() == "0"
    status, headers, body = grpc_web_call(envoy, "web")
    # Trailers-only: the status in the response headers, no body.
    assert (status, body) == (200, b"")
    assert headers["content-type"].startswith("application/grpc-web")
    assert headers["grpc-status"] == "8"
    retry_after = int(headers["retry-after"])
    details = headers["grpc-status-details-bin"]
    sent = __import__("base64").b64decode(details + "=" * (-len(details) % 4))
    status_message = status_pb2.Status.FromString(sent)
    assert status_message.SerializeToString() == sent
    kinds, retry, _ = unpack(status_message)
    assert kinds == ["google.rpc.RetryInfo", "google.rpc.QuotaFailure"]
    assert retry.retry_delay.seconds == retry_after
    assert status_message.message.startswith("Quota of 3 calls")
