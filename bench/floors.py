"""The servers the gateway benchmark measures agentgov against, one per process:

  upstream     the instant fake LLM/tool backend every row forwards to (a fixed OpenAI-style answer)
  http-authz   a do-nothing ext_authz over HTTP (Envoy's http_service): 200 to everything
  grpc-authz   a do-nothing ext_authz over gRPC (grpc.aio): OK to everything

The two authorizers are the floors: what a Python authorizer costs before it decides anything.
They use the same event loop (uvloop) and HTTP parser (httptools) as agentgov's own transport.

    python bench/floors.py upstream --port 8081
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import grpc
import uvloop
from envoy.service.auth.v3 import external_auth_pb2 as authz
from envoy.service.auth.v3 import external_auth_pb2_grpc as authz_grpc
from google.rpc import code_pb2, status_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentgov.engine.server.http_authz import HttpServer, Request, Response

ANSWER = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
}).encode()


async def _upstream(_: Request) -> Response:
    return Response(200, [("content-type", "application/json")], ANSWER)


async def _allow(_: Request) -> Response:
    return Response(200, [])


class _AllowAll(authz_grpc.AuthorizationServicer):  # type: ignore[misc]
    async def Check(self, request: authz.CheckRequest, context: object) -> authz.CheckResponse:
        return authz.CheckResponse(status=status_pb2.Status(code=code_pb2.OK), ok_response=authz.OkHttpResponse())


async def serve(kind: str, port: int) -> None:
    if kind == "grpc-authz":
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        authz_grpc.add_AuthorizationServicer_to_server(_AllowAll(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()
        return
    http = HttpServer(_upstream if kind == "upstream" else _allow, max_body_bytes=4 * 1024 * 1024)
    await http.start("127.0.0.1", port)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["upstream", "http-authz", "grpc-authz"])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.kind, args.port))


if __name__ == "__main__":
    main()
