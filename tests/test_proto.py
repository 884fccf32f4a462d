"""The committed message classes are exactly what protoc makes of the committed .proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agentgov.engine.proto import decision_pb2
from tests.conftest import REPO

PROTO_ROOT = REPO / "src" / "agentgov" / "engine" / "proto"


def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_ROOT}", f"--python_out={tmp_path}",
                    f"--pyi_out={tmp_path}", str(PROTO_ROOT / "agentgov" / "v1" / "decision.proto")], check=True)
    for name in ("decision_pb2.py", "decision_pb2.pyi"):
        fresh = (tmp_path / "agentgov" / "v1" / name).read_text()
        committed = (PROTO_ROOT / "agentgov" / "v1" / name).read_text()
        assert fresh == committed, f"{name} is stale: run `make proto`"


def test_service_name_is_the_contract() -> None:
    service = decision_pb2.DESCRIPTOR.services_by_name["DecisionService"]
    assert service.full_name == "agentgov.v1.DecisionService"
    assert sorted(m.name for m in service.methods) == ["BatchDecide", "Decide"]
