"""The PII and secrets detectors: exact spans on the labelled development set, validators on known
vectors, every secret format, the operator's settings, and properties that must hold for any text."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentgov.engine.hooks.pii import validators as v
from agentgov.engine.hooks.pii.detectors import ALL_TYPES
from agentgov.engine.hooks.pii.hook import PiiConfigError, settings_from_config
from agentgov.engine.hooks.pii.jsonscan import redact_document
from agentgov.engine.hooks.pii.scanner import Scanner, ScanSettings, redact_text
from bench.pii_eval import CORPUS_LABEL, evaluate
from tests.conftest import REPO

CORPUS = sorted((REPO / "tests" / "data" / "pii").glob("*.jsonl"))
SCANNER = Scanner()


def found(text: str, scanner: Scanner = SCANNER) -> list[tuple[str, str]]:
    return [(s.type, text[s.start:s.end]) for s in scanner.scan(text)]


def _corpus() -> list[dict[str, object]]:
    return [json.loads(line) for path in CORPUS for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("doc", _corpus(), ids=lambda d: str(d["id"]))
def test_dev_corpus_spans_are_found_exactly_and_negatives_stay_clean(doc: dict[str, object]) -> None:
    text = str(doc["text"])
    got = sorted((s.start, s.end, CORPUS_LABEL.get(s.type, s.type)) for s in SCANNER.scan(text)
                 if s.type != "DATE_OF_BIRTH")  # the corpus does not label dates of birth
    assert got == sorted(tuple(x) for x in doc["spans"])  # type: ignore[union-attr]


def test_precision_and_recall_per_type_on_the_dev_corpus() -> None:
    result = evaluate(CORPUS)
    assert len(result["types"]) == 14
    for label, row in result["types"].items():
        assert row["precision"] >= 0.95 and row["recall"] >= 0.95, (label, row)  # noqa: PT018


# --- validators ------------------------------------------------------------------------------

@pytest.mark.parametrize(("number", "brand"), [
    ("4111111111111111", "visa"), ("4012888888881881", "visa"), ("5555555555554444", "mastercard"),
    ("2223003122003222", "mastercard"), ("378282246310005", "amex"), ("6011111111111117", "discover"),
    ("3530111333300000", "jcb"), ("30569309025904", "diners"), ("6221260000000000", "discover"),
])
def test_cards_by_network(number: str, brand: str) -> None:
    assert v.card_brand(number) == brand
    assert v.card_ok(number)
    assert found(f"card {number[:4]} {number[4:8]} {number[8:12]} {number[12:]} ok") == \
        [("CREDIT_CARD", f"{number[:4]} {number[4:8]} {number[8:12]} {number[12:]}")]


@pytest.mark.parametrize("number", ["4111111111111112", "2721003122003222", "9111111111111111", "1234567812345678"])
def test_numbers_that_are_not_cards(number: str) -> None:
    assert not v.card_ok(number)
    assert found(f"ref {number}") == []


def test_iban_mod97_and_country_lengths() -> None:
    assert v.iban_ok("GB82WEST12345698765432")
    assert not v.iban_ok("GB82WEST12345698765433")  # checksum
    assert not v.iban_ok("GB82WEST1234569876543")  # length for GB
    assert not v.iban_ok("ZZ82WEST12345698765432")  # no such country
    assert found("pay to GB82 WEST 1234 5698 7654 32 today") == [("IBAN", "GB82 WEST 1234 5698 7654 32")]
    assert found("iban gb82west12345698765432 please") == [("IBAN", "gb82west12345698765432")]
    assert found("GB82 WEST 1234 5698 7654 3200") == []  # runs past the length GB fixes


@pytest.mark.parametrize(("ssn", "ok"), [("123-45-6788", True), ("000-12-3456", False), ("666-12-3456", False),
                                         ("912-12-3456", False), ("123-00-3456", False), ("123-45-0000", False),
                                         ("078-05-1120", False)])
def test_ssn_area_group_serial_rules(ssn: str, ok: bool) -> None:
    assert v.ssn_ok(ssn.replace("-", "")) is ok
    assert bool(found(f"SSN {ssn}")) is ok


def test_crypto_checksums() -> None:
    assert v.base58check_ok("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2")
    assert not v.base58check_ok("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN3")
    assert v.bech32_ok("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq")
    assert v.bech32_ok("bc1p5d7rjq7g6rdk2yhzks9smlaqtedr4dekq08ge8ztwac72sfr9rusxg3297")  # taproot, bech32m
    assert not v.bech32_ok("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdp")
    # Keccak-256 (Ethereum's, not SHA3) and EIP-55 mixed-case checksums.
    assert v.keccak256(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    assert v.eth_ok("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
    assert not v.eth_ok("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD")
    assert found("send to 0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359 now") == \
        [("CRYPTO", "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359")]


def test_ip_addresses_and_version_strings() -> None:
    assert found("from 203.0.113.9 and 2001:db8::1:0:1") == [("IP_ADDRESS", "203.0.113.9"),
                                                               ("IP_ADDRESS", "2001:db8::1:0:1")]
    assert found("upgrade to version 4.5.30.83 or 1.3.6.1.4.1.8623, host 300.1.1.1") == []
    assert found("at 12:30:45 the MAC 32:FE:4A:02:A5:1B") == []


def test_dates_of_birth_need_a_cue_and_a_real_past_date() -> None:
    assert found("DOB: 1984-07-21") == [("DATE_OF_BIRTH", "1984-07-21")]
    assert found("date of birth: March 15, 1987") == [("DATE_OF_BIRTH", "March 15, 1987")]
    assert found("born 3 Sept 1990 in Leeds") == [("DATE_OF_BIRTH", "3 Sept 1990")]
    assert found("DOB: Feb 30, 1990") == []
    assert found("born on 21/07/1984") == [("DATE_OF_BIRTH", "21/07/1984")]
    assert found("due 1984-07-21") == []
    assert found("DOB: 1984-13-45") == []
    assert found("DOB: 2990-01-01") == []


def test_phone_numbers_by_region_and_cue() -> None:
    assert found("call +44 20 7946 0958 or (415) 555-2671") == [("PHONE", "+44 20 7946 0958"),
                                                                ("PHONE", "(415) 555-2671")]
    assert found("order 4155552671 shipped") == []  # a bare digit run needs a word that says phone
    assert found("my mobile is 4155552671") == [("PHONE", "4155552671")]
    gb = Scanner(settings_from_config({"default_region": "GB"}).scan)
    assert found("text me on 020 7946 0958", gb) == []  # national format without a + is not guessed
    assert found("call 07700 900123", gb) == []


# --- secrets ---------------------------------------------------------------------------------
# TEST VALUES: random strings in each provider's format; none is a live credential.
SECRETS = {
    "AWS_KEY": "AKIAZ4T7QW2MRX5BNL3K",
    "GITHUB_TOKEN": "ghp_" + "q7Wm2Rk9Tz4Lx8Vb3Nc6Hd1Jf5Gs0PaYeUiO",
    "GITLAB_TOKEN": "glpat-" + "x8Rk2mQ7vT4bN9cW1zLp",
    "SLACK_TOKEN": "xoxb-" + "1234567890-0987654321-q7Wm2Rk9Tz4Lx8Vb3Nc6Hd1J",
    "STRIPE_KEY": "sk_live_" + "q7Wm2Rk9Tz4Lx8Vb3Nc6Hd1J",
    "ANTHROPIC_KEY": "sk-ant-api03-" + "q7Wm2Rk9Tz4Lx8Vb3Nc6Hd1Jf5Gs0PaYeUiOq7Wm2Rk9Tz4Lx8Vb3Nc6Hd1Jf5Gs0PaYeUiOq7Wm2Rk9Tz4Lx8",
    "OPENAI_KEY": "sk-proj-" + "q7Wm2Rk9Tz4Lx8Vb3Nc6Hd1Jf5Gs0PaYeUiOq7Wm2Rk9",
    "GOOGLE_API_KEY": "AIza" + "Sy9q7Wm2Rk9Tz4Lx8Vb3Nc6Hd1Jf5Gs0PaY",
    "HUGGINGFACE_TOKEN": "hf_" + "q7Wm2Rk9Tz4Lx8Vb3Nc6Hd1Jf5Gs0PaYeU",
    "NPM_TOKEN": "npm_" + "q7Wm2Rk9Tz4Lx8Vb3Nc6Hd1Jf5Gs0PaYeUiO",
    "JWT": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.q7Wm2Rk9Tz4Lx8Vb3Nc6Hd1Jf5Gs0PaY",
}


@pytest.mark.parametrize(("kind", "value"), sorted(SECRETS.items()))
def test_each_token_format(kind: str, value: str) -> None:
    assert found(f'config: "{value}" (rotate it)') == [(kind, value)]


def test_key_material_in_pem_and_in_json_escaped_form() -> None:
    pem = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBcW5q7Wm2Rk9Tz4Lx8Vb3\n-----END EC PRIVATE KEY-----"
    assert found(f"key:\n{pem}\n") == [("PRIVATE_KEY", pem)]
    service_account = '{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADAN\\n' \
                      '-----END PRIVATE KEY-----\\n"}'
    assert [t for t, _ in found(service_account)] == ["PRIVATE_KEY"]
    truncated = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE"
    assert found(truncated) == [("PRIVATE_KEY", truncated)]  # no END line: still the key
    assert found("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----") == []


def test_http_basic_credentials() -> None:
    assert found("Authorization: Basic dXNlcjpwYXNzd29yZA==") == [("GENERIC_SECRET", "dXNlcjpwYXNzd29yZA==")]
    assert found("basic dXNlcjo=") == []  # "user:" has no password
    assert found("a basic question about Python") == []


def test_azure_and_connection_strings() -> None:
    key = ("q7Wm2Rk9Tz4Lx8Vb3Nc6Hd1Jf5Gs0PaYeUiO" * 3)[:86] + "=="
    assert found(f"AccountKey={key}") == [("AZURE_STORAGE_KEY", key)]
    conn = f"DefaultEndpointsProtocol=https;AccountName=acmestore;AccountKey={key};EndpointSuffix=core.windows.net"
    assert found(conn) == [("AZURE_CONNECTION_STRING", conn)]
    assert found("postgres://app:Zr8qLm2x@db.internal:5432/app") == \
        [("URL_CREDENTIALS", "postgres://app:Zr8qLm2x@db.internal")]
    assert found("Server=db;User Id=app;Password=Zr8qLm2xQ;") == [("URL_CREDENTIALS", "Zr8qLm2xQ")]
    assert found("https://hooks.slack.com/services/T000/B000/q7Wm2Rk9Tz4Lx8Vb3Nc6") == \
        [("SLACK_TOKEN", "https://hooks.slack.com/services/T000/B000/q7Wm2Rk9Tz4Lx8Vb3Nc6")]


@pytest.mark.parametrize("text", [
    "password=changeme", "OPENAI_API_KEY=sk-your-key-here", "token=${GITHUB_TOKEN}", 'password: "<redacted>"',
    "export GITHUB_TOKEN=ghp_XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "postgres://app:${DB_PASSWORD}@db/app",
    "the api_key field is required",
])
def test_placeholders_and_documentation_are_not_secrets(text: str) -> None:
    assert found(text) == []


def test_entropy_floor_is_configurable() -> None:
    strict = Scanner(settings_from_config({"secret_min_entropy": 1.0}).scan)
    assert found("password=letmeinnow", strict) == [("GENERIC_SECRET", "letmeinnow")]
    assert found("password=letmeinnow") == []  # 2.9 bits per character: below the default floor of 3
    assert found("password=aaaaaaaaab", strict) == []  # three distinct characters is never a key


# --- settings ---------------------------------------------------------------------------------

def test_type_switches_confidence_and_allow_lists() -> None:
    text = "mail support@acme-corp.io or jane@acme-corp.io from 10.0.0.8"
    only_email = Scanner(settings_from_config({"types": ["EMAIL"]}).scan)
    assert [t for t, _ in found(text, only_email)] == ["EMAIL", "EMAIL"]
    no_ip = Scanner(settings_from_config({"disabled_types": ["IP_ADDRESS"]}).scan)
    assert "IP_ADDRESS" not in {t for t, _ in found(text, no_ip)}
    allowed = Scanner(settings_from_config({"allow": ["support@acme-corp.io"]}).scan)
    assert found(text, allowed) == [("EMAIL", "jane@acme-corp.io"), ("IP_ADDRESS", "10.0.0.8")]
    pattern = Scanner(settings_from_config({"allow_patterns": [r".*@acme-corp\.io"]}).scan)
    assert found(text, pattern) == [("IP_ADDRESS", "10.0.0.8")]
    picky = Scanner(settings_from_config({"min_confidence": {"IP_ADDRESS": 0.95}}).scan)
    assert "IP_ADDRESS" not in {t for t, _ in found(text, picky)}


@pytest.mark.parametrize(("doc", "message"), [
    ({"types": ["EMAIL", "PASSPORT"]}, "pii.types: unknown type(s) PASSPORT"),
    ({"min_confidence": {"EMAIL": 2}}, "pii.min_confidence.EMAIL must be a number from 0 to 1"),
    ({"allow_patterns": ["("]}, "pii.allow_patterns[0] is not a valid regular expression"),
    ({"default_region": "usa"}, "two-letter region code"),
    ({"redaction": "{value}"}, "pii.redaction must be a string"),
    ({"stream_holdback_chars": 0}, "pii.stream_holdback_chars must be a positive integer"),
    ({"colour": 1}, "unknown key(s) pii.colour"),
    ({"inspect_responses": "yes"}, "pii.inspect_responses must be true or false"),
])
def test_settings_errors_are_clear(doc: dict[str, object], message: str) -> None:
    with pytest.raises(PiiConfigError) as err:
        settings_from_config(doc)
    assert message in str(err.value)


# --- properties -------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_any_text_scans_without_error_into_ordered_disjoint_spans(text: str) -> None:
    spans = SCANNER.scan(text)
    for a, b in itertools.pairwise(spans):
        assert a.end <= b.start
    assert all(0 <= s.start < s.end <= len(text) and s.type in ALL_TYPES for s in spans)


_PIECES = ["DOB", "date of birth:", "born on", "March", "Sept", "15", "31", "1987", "2990", "/", "-", ".", "SSN", "ssn",
           "+1", "+44", "202", "555", "0711", "(415)", "@", "ex.com", "AKIA", "Basic", "bearer", "password=", "pwd=",
           "://", ":", ";", "IBAN", "GB82", "WEST", "0x", "bc1q", "1A1zP1", "-----BEGIN PRIVATE KEY-----", "eyJ", "sk-",
           "ghp_", "xoxb-", "AccountKey=", "call", "phone", "4111", "1111", "::", "10.0.0.1", "v", "version"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_PIECES), st.sampled_from(["", " ", "  ", ",", "\n", "=", "'"])),
                max_size=25))
def test_texts_built_from_detector_cues_never_break_a_detector(parts: list[tuple[str, str]]) -> None:
    """Random text rarely reaches a detector's deeper branches; text made of their cues does."""
    text = "".join(piece + sep for piece, sep in parts)
    spans = SCANNER.scan(text)
    assert all(0 <= s.start < s.end <= len(text) for s in spans)


_FILLER = st.text(alphabet=st.sampled_from(list("abcdefgh ,;:()\n\t")), max_size=40)


@settings(max_examples=200, deadline=None)
@given(_FILLER, _FILLER, st.sampled_from(["jane.doe@example.org", "4111 1111 1111 1111", "GB82 WEST 1234 5698 7654 32",
                                         *SECRETS.values()]))
def test_a_value_is_found_exactly_wherever_it_stands(before: str, after: str, value: str) -> None:
    text = f"{before} {value} {after}"
    spans = SCANNER.scan(text)
    assert any(text[s.start:s.end] == value for s in spans), (text, spans)
    redacted = redact_text(text, spans)
    assert value not in redacted


@settings(max_examples=150, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20)
                    | st.just("write to ann.lee@example.org soon"),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=20))
def test_redacting_a_json_document_keeps_it_json_and_removes_the_values(doc: object) -> None:
    redacted, _ = redact_document(doc, SCANNER, ["EMAIL"], "[REDACTED:{type}]")
    text = json.dumps(redacted)
    assert json.loads(text) == redacted
    assert "ann.lee@example.org" not in text


def test_scan_settings_default_to_every_type() -> None:
    assert ScanSettings().types == frozenset(ALL_TYPES)
    assert all(re.fullmatch(r"[A-Z_]+", t) for t in ALL_TYPES)


def test_corpus_files_are_in_the_repository() -> None:
    assert [p.name for p in CORPUS] == ["pii_dev.jsonl", "secrets_dev.jsonl"]
    assert all(isinstance(p, Path) and p.stat().st_size > 0 for p in CORPUS)


def test_network_notation_is_not_a_personal_address() -> None:
    """A CIDR block names a network, not a person's host: `10.0.0.0/8` and `2001:db8::/32` are not PII."""
    assert found("allow 10.0.0.0/8 and 192.168.1.0/24, deny 2001:db8::/32") == []
    assert found("host 10.0.0.8/ path") == [("IP_ADDRESS", "10.0.0.8")]  # a slash alone is not a prefix length
    assert found("from 203.0.113.9, not 198.51.100.0/24") == [("IP_ADDRESS", "203.0.113.9")]


def test_documented_example_credentials_are_reported() -> None:
    """AWS's published example key is what users test with: reported, not skipped as a placeholder,
    while other placeholders still are."""
    assert found("key AKIAIOSFODNN7EXAMPLE") == [("AWS_KEY", "AKIAIOSFODNN7EXAMPLE")]
    assert found("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY") == [
        ("GENERIC_SECRET", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")]  # as a real secret in that place is
    assert found("key AKIAEXAMPLEEXAMPLE22") == []  # a made-up placeholder is still a placeholder
