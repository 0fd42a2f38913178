#!/usr/bin/env python3
"""A gRPC server for the gRPC tests (grpcio, no generated code): `helloworld.Greeter` with a
unary method, a server-streaming one and a bidirectional one, each answering with the bytes it
got (messages are opaque bytes here: identity serializers).

    python3 tests/e2e/grpc_upstream.py --port 50051
"""
import argparse
import signal
import threading
from concurrent import futures

import grpc


def say_hello(request: bytes, context) -> bytes:
    return b"hello " + request


def say_hellos(request: bytes, context):
    for i in range(3):
        yield b"hello %d " % i + request


def chat(requests, context):
    for request in requests:
        yield b"echo " + request


def handlers() -> grpc.GenericRpcHandler:
    same = {"request_deserializer": None, "response_serializer": None}
    return grpc.method_handlers_generic_handler(
        "helloworld.Greeter",
        {
            "SayHello": grpc.unary_unary_rpc_method_handler(say_hello, **same),
            "SayHellos": grpc.unary_stream_rpc_method_handler(say_hellos, **same),
            "Chat": grpc.stream_stream_rpc_method_handler(chat, **same),
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handlers(),))
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    server.stop(grace=0.5).wait()


if __name__ == "__main__":
    main()
