"""What a request will cost is what it asks for: an OpenAI request for `n` completions (or `best_of`
candidates) may generate the token limit n times over, and the policy and the budget see that."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from agentgov.cli.stack import LocalStack
from agentgov.engine.hooks.budget.limits import estimate_tokens
from agentgov.engine.protocols import ProtocolError
from agentgov.engine.protocols.llm import OPENAI_CHAT, OPENAI_RESPONSES, parse_llm
from agentgov.engine.server.demo_backend import DEMO_INPUT_TOKENS, DEMO_OUTPUT_TOKENS
from tests.conftest import POLICIES
from tests.http_helpers import bearer, request
from tests.support import wait_for


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]} | extra


def test_the_limit_is_multiplied_by_the_choices() -> None:
    parsed = parse_llm(OPENAI_CHAT, json.dumps(chat(max_tokens=100, n=3)).encode())
    assert parsed.arguments["max_tokens"] == 300
    assert (parsed.arguments["n"], parsed.arguments["max_tokens_per_choice"]) == (3, 100)
    assert parse_llm(OPENAI_CHAT, json.dumps(chat(max_tokens=10, n=2, best_of=5)).encode()).arguments["max_tokens"] == 50
    single = parse_llm(OPENAI_CHAT, json.dumps(chat(max_tokens=100, n=None)).encode()).arguments
    assert single == {"model": "gpt-4o-mini", "stream": False, "max_tokens": 100}
    assert estimate_tokens(parse_llm(OPENAI_CHAT, json.dumps(chat(n=4)).encode()), 1024)[1] == 4096
    # The Responses API has no `n`: a field of that name is not read as one.
    responses = {"model": "gpt-4o-mini", "input": "hi", "max_output_tokens": 10, "n": 99}
    assert parse_llm(OPENAI_RESPONSES, json.dumps(responses).encode()).arguments["max_tokens"] == 10


@pytest.mark.parametrize("value", [0, -1, 129, 1.5, "3", True, [2]])
@pytest.mark.parametrize("name", ["n", "best_of"])
def test_a_bad_count_is_refused(name: str, value: Any) -> None:
    with pytest.raises(ProtocolError, match=f"{name} must be an integer from 1 to 128"):
        parse_llm(OPENAI_CHAT, json.dumps(chat(max_tokens=10, **{name: value})).encode())


@pytest.mark.envoy
@pytest.mark.parametrize("engine", ["rego", "cedar"])
def test_the_policy_cap_counts_every_choice_through_envoy(engine: str) -> None:
    with LocalStack(policies=POLICIES, engine=engine) as stack:
        token = bearer(stack.keys.token("alice", ["analyst"], "acme"))  # gpt-4o-mini: at most 4096 tokens
        url = stack.url + OPENAI_CHAT
        assert request(url, "POST", chat(max_tokens=1000, n=4), token)[0] == 200
        status, _, body = request(url, "POST", chat(max_tokens=1000, n=5), token)
        assert status == 403
        assert "max_tokens_exceeded" in json.loads(body)["reasons"]
        status, _, body = request(url, "POST", chat(max_tokens=10, n=129), token)
        assert status == 400
        assert "n must be an integer from 1 to 128" in json.loads(body)["detail"]


@pytest.mark.envoy
def test_a_128_choice_request_is_reserved_at_128_times_and_settled_at_what_was_used(
        tmp_path: Path, run_cli: Callable[..., Result]) -> None:
    limits = [{"name": "tokens", "key": "tenant", "window": "1h", "tokens": 6000}]
    extra = {"budgets": {"store": f"sqlite:///{tmp_path / 'b.sqlite3'}", "limits": limits}}
    with LocalStack(policies=POLICIES, ext_proc=True, config_extra=extra) as stack:
        token = bearer(stack.keys.token("alice", ["analyst"], "acme"))
        url = stack.url + OPENAI_CHAT
        # gpt-4o: at most 8,192 output tokens for an analyst, so only the budget can refuse 6,400.
        status, _, body = request(url, "POST", chat(model="gpt-4o", max_tokens=50, n=128), token)  # > 6,000
        assert status == 429
        assert "budget_insufficient" in json.loads(body)["reasons"]
        status, _, body = request(url, "POST", chat(model="gpt-4o", max_tokens=50, n=100), token)  # 5,000 + prompt
        assert status == 200, body
        config = str(stack.workdir / "agentgov.yaml")

        def used() -> int:
            result = run_cli("budget", "show", "--config", config, "--tenant", "acme", "--format", "json")
            assert result.exit_code == 0, result.output
            return sum(int(r["tokens"]) for r in json.loads(result.output) if r["limit"] == "tokens")

        # Settled from the backend's reported usage once the answer passed: not the 5,000 reserved.
        assert wait_for(lambda: used() == DEMO_INPUT_TOKENS + DEMO_OUTPUT_TOKENS, 10), used()
