"""The alerting rules and the dashboard are checked like code: promtool (Debian's `prometheus`
package) validates the rules and runs their unit tests, every dashboard query parses as PromQL, and
every metric either names is exported by a running worker."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from agentgov.cli.stack import LocalStack, free_port
from tests.conftest import POLICIES, REPO
from tests.http_helpers import CALL, bearer, send

RULES = REPO / "deploy" / "prometheus" / "agentgov-alerts.yaml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "agentgov-alerts.test.yaml"
DASHBOARD = REPO / "deploy" / "grafana" / "agentgov-dashboard.json"
METRIC = re.compile(r"\b(agentgov_[a-z_]+|process_start_time_seconds)\b")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:  # .ci/run and `make test` install it; a missing tool must not pass silently
        pytest.fail("promtool is needed: apt-get install prometheus (Debian's package ships it)")
    return found


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd)


def test_the_alerting_rules_are_valid() -> None:
    result = _run("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout


def test_the_alerting_rules_fire_as_their_unit_tests_say() -> None:
    result = _run("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def _dashboard_queries() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in doc["panels"] for target in panel["targets"]]


def test_every_dashboard_query_is_promql(tmp_path: Path) -> None:
    """Grafana's variables filled in as Grafana would, each query checked as a recording rule."""
    rules = [{"record": f"agentgov:dashboard_{i}",
              "expr": expr.replace("$__rate_interval", "1m").replace("$instance", ".*")}
             for i, expr in enumerate(_dashboard_queries())]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _run("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(rules) >= 20


def _named_metrics() -> set[str]:
    text = RULES.read_text() + "\n".join(_dashboard_queries())
    names = set(METRIC.findall(text))
    return {re.sub(r"_(bucket|count|sum)$", "", n) for n in names}


@pytest.mark.envoy
def test_every_metric_the_rules_and_dashboard_name_is_exported_by_a_worker(tmp_path: Path) -> None:
    metrics_port = free_port()
    extra = {"audit": {"dir": str(tmp_path / "audit"), "sinks": [{"type": "opa_http", "url": "http://127.0.0.1:1"}]},
             "budgets": {"store": f"sqlite:///{tmp_path / 'b.sqlite3'}",
                         "limits": [{"name": "calls", "key": "subject", "window": "1h", "requests": 100}]}}
    with LocalStack(policies=POLICIES, ext_proc=True, config_extra=extra,
                    server_extra={"metrics_port": metrics_port}) as stack:
        send(stack, "/mcp", CALL, bearer(stack.keys.token("alice", ["analyst"], "acme")))
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
            exposition = response.read().decode()
    exported: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            family = line.split()[2]
            exported |= {family, f"{family}_total", f"{family}_bucket", f"{family}_count", f"{family}_sum"}
        elif line and not line.startswith("#"):
            exported.add(line.split("{", 1)[0].split(" ", 1)[0])
    missing = sorted(_named_metrics() - exported)
    assert missing == [], missing
