"""agentgov's own gRPC API (`agentgov/v1/decision.proto`) and its generated message classes.

Only `*_pb2.py` is generated (`make proto`): grpc's service stubs would import `agentgov.v1`,
which is not where the package lives, so the two handlers are registered by hand in
server/decision_service.py and called by name in server/decision_client.py.
"""

from agentgov.engine.proto.agentgov.v1 import decision_pb2

SERVICE = "agentgov.v1.DecisionService"
DECIDE = f"/{SERVICE}/Decide"
BATCH_DECIDE = f"/{SERVICE}/BatchDecide"

__all__ = ["BATCH_DECIDE", "DECIDE", "SERVICE", "decision_pb2"]
