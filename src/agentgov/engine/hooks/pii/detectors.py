"""What counts as PII or a secret: one table of detectors, each a pattern plus a validator.

Hand-written on purpose (docs/architecture.md §4): this runs on every prompt and tool call, and regex with real
validators costs well under 0.1 ms per KB where Presidio costs ~10 ms. Each detector yields
candidate spans with a confidence; the scanner resolves overlaps (the more specific detector
wins: a GitHub token inside a URL is a GitHub token) and applies the operator's settings.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Literal

import phonenumbers

from agentgov.engine.hooks.pii import validators as v
from agentgov.engine.hooks.pii.prefilter import Cue, Prefilter

Category = Literal["pii", "secret"]


@dataclass(frozen=True, slots=True)
class Span:
    """One finding in one text: character offsets (end exclusive), never the value itself."""

    start: int
    end: int
    type: str
    category: Category
    confidence: float


class Text:
    """One text being scanned, with what several detectors need computed once (lazily): its lower
    case, its runs of digits, and where every cue is (one Hyperscan pass, see prefilter.py)."""

    __slots__ = ("_cues", "_digit_windows", "_lower", "raw")

    def __init__(self, raw: str) -> None:
        self.raw = raw
        self._lower: str | None = None
        self._digit_windows: list[tuple[int, int]] | None = None
        self._cues: bool | dict[str, list[tuple[int, int]]] | None = False  # False: not looked for yet

    @property
    def lower(self) -> str:
        if self._lower is None:
            self._lower = self.raw.lower()
        return self._lower

    @property
    def cues(self) -> dict[str, list[tuple[int, int]]] | None:
        """Every cue's matches from one pass, or None: this text takes the detectors' own search."""
        if self._cues is False:
            self._cues = _prefilter().scan(self.raw)
        return self._cues  # type: ignore[return-value]

    def digit_windows(self, left: int = 1, right: int = 3) -> list[tuple[int, int]]:
        """Where runs of digits and separators are, so that the number detectors (cards, phones,
        SSNs, IPs) scan a few short windows instead of the whole text, each with its own regex."""
        if self._digit_windows is None:
            cues = self.cues
            if cues is None:
                self._digit_windows = [(m.start(), m.end()) for m in _DIGIT_RUN.finditer(self.raw)]
            else:
                # Hyperscan reports each end of a run with the run's leftmost start: the longest end
                # per start is the run `finditer` finds (greedy, and runs never overlap).
                runs: dict[int, int] = {}
                for start, end in cues.get("digits", ()):
                    if end > runs.get(start, -1):
                        runs[start] = end
                self._digit_windows = sorted(runs.items())
        n = len(self.raw)
        return [(max(0, s - left), min(n, e + right)) for s, e in self._digit_windows]

    def find_all(self, needle: str, *, lower: bool = False) -> list[int]:
        """Every index of `needle` (a list, not a generator: most needles are absent, and an empty
        list costs less than a generator that finds nothing)."""
        cues = self.cues
        if cues is not None:
            key = _needle_key(needle, lower)
            if key in _CUE_KEYS:
                return sorted({start for start, _ in cues.get(key, ())})
        haystack = self.lower if lower else self.raw
        at = haystack.find(needle)
        if at == -1:
            return []
        out = []
        while at != -1:
            out.append(at)
            at = haystack.find(needle, at + 1)
        return out

    def matches(self, pattern: re.Pattern[str]) -> Iterator[re.Match[str]]:
        """`pattern.finditer(raw)`, started only where its cue (a fixed-length prefix of it) is."""
        cues = self.cues
        if cues is None or pattern.pattern not in _CUE_KEYS:
            yield from pattern.finditer(self.raw)
            return
        at = 0
        for start in sorted({start for start, _ in cues.get(pattern.pattern, ())}):
            if start < at:
                continue  # inside the previous match: finditer would not look here either
            m = pattern.match(self.raw, start)
            if m is not None:
                yield m
                at = max(m.end(), start + 1)


_DIGIT_RUN = re.compile(r"\d[\d .()/+-]{5,}\d")


@dataclass(frozen=True)
class Detector:
    type: str
    category: Category
    # Candidate spans (start, end, confidence); `ctx` carries the settings a detector reads.
    find: Callable[[Text, DetectContext], Iterator[tuple[int, int, float]]]
    priority: int  # higher wins an overlap
    # The cues (prefilter keys) it starts from: when the prefilter saw none of them in a text, it is
    # not run there. Empty: it always runs.
    cues: tuple[str, ...] = ()


@dataclass(frozen=True)
class DetectContext:
    default_region: str = "US"
    secret_min_entropy: float = 3.0


def _windowed(pattern: re.Pattern[str], text: Text, left: int = 1, right: int = 3) -> Iterator[re.Match[str]]:
    for start, end in text.digit_windows(left, right):
        yield from pattern.finditer(text.raw, start, end)


# --- PII ---------------------------------------------------------------------------------------

_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9._%+-]")
_EMAIL_DOMAIN = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,24})(?![\w-])")
# Names like `icon@2x.png` and `pkg@1.2.3` have the shape of an address but a file or version after the @.
_FILE_SUFFIXES = {"png", "jpg", "jpeg", "gif", "webp", "svg", "ico", "bmp", "tif", "tiff", "pdf", "js", "mjs", "ts",
                  "css", "map", "json", "html", "py", "rb", "go", "rs", "java", "txt", "md", "yaml", "yml", "zip",
                  "gz", "tgz", "tar", "whl", "wasm", "woff", "woff2", "mp3", "mp4", "mov", "lock", "toml", "ini"}


def _emails(text: Text, _: DetectContext) -> Iterator[tuple[int, int, float]]:
    raw = text.raw
    for at in text.find_all("@"):
        start = at
        while start > 0 and at - start < 64 and _EMAIL_LOCAL.match(raw, start - 1):
            start -= 1
        while start < at and not raw[start].isalnum():  # a local part starts with a letter or digit
            start += 1
        local = raw[start:at]
        if not local or local.endswith(".") or ".." in local:
            continue
        m = _EMAIL_DOMAIN.match(raw, at + 1)
        if m is None or m.group(1).lower() in _FILE_SUFFIXES:
            continue
        yield start, m.end(), 0.95


_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")


def _cards(text: Text, _: DetectContext) -> Iterator[tuple[int, int, float]]:
    for m in _windowed(_CARD, text):
        raw = m.group(0)
        separators = {c for c in raw if not c.isdigit()}
        if len(separators) > 1:  # "4111 1111-1111 1111" is not how anyone writes a card
            continue
        digits = raw.replace(" ", "").replace("-", "")
        if v.card_ok(digits):
            yield m.start(), m.end(), 0.95


_IBAN = re.compile(r"(?<![\w])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![\w])", re.IGNORECASE)


def _ibans(text: Text, _: DetectContext) -> Iterator[tuple[int, int, float]]:
    seen: set[int] = set()
    # The country code and the letters of a bank code come before the first long run of digits.
    for m in _windowed(_IBAN, text, left=24, right=12):
        if m.start() in seen:
            continue
        end = _iban_end(m.group(0))
        if end and v.iban_ok(m.group(0)[:end].replace(" ", "").upper()):
            seen.add(m.start())
            yield m.start(), m.start() + end, 0.98


def _iban_end(candidate: str) -> int:
    """Where an IBAN starting `candidate` ends: its country fixes its length, so a word that follows
    ("… 3000 please") is not read as more of it. 0 when the candidate is shorter or runs on."""
    length = v.IBAN_LENGTHS.get(candidate[:2].upper())
    if length is None:
        return 0
    count = 0
    for i, ch in enumerate(candidate):
        if ch != " ":
            count += 1
        if count == length:
            rest = candidate[i + 1:i + 2]
            return 0 if rest.isalnum() else i + 1
    return 0


_SSN = re.compile(r"(?<![\w-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\w-])")
_SSN_BARE = re.compile(r"(?<![\w-])\d{9}(?![\w-])")
_SSN_CUE = re.compile(r"(?i)\b(?:ssn|social security(?: number| no\.?| #)?|taxpayer id)\b")


def _ssns(text: Text, _: DetectContext) -> Iterator[tuple[int, int, float]]:
    raw = text.raw
    for m in _windowed(_SSN, text):
        if v.ssn_ok(m.group(1) + m.group(3) + m.group(4)):
            cue = _SSN_CUE.search(raw, max(0, m.start() - 40), m.start()) is not None
            yield m.start(), m.end(), 0.95 if cue else 0.8
    if "ssn" in text.lower or "social security" in text.lower or "taxpayer" in text.lower:
        for m in _windowed(_SSN_BARE, text):
            if v.ssn_ok(m.group(0)) and _SSN_CUE.search(raw, max(0, m.start() - 30), m.start()):
                yield m.start(), m.end(), 0.85


# International numbers (+CC …), North American numbers with separators, and bare digit runs only
# next to a word that says "phone": a bare 10-digit run is far more often an id or an epoch time.
_PHONE_INTL = re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,5}\)?){1,5}(?![\w-])")
_PHONE_NANP = re.compile(r"(?<![\w.+-])(?:1[ .-])?(?:\(\d{3}\) ?|\d{3}([ .-]))\d{3}(?(1)\1|[ .-])\d{4}(?![\w-]|\.\d)")
_PHONE_BARE = re.compile(r"(?<![\w.-])\d{10,11}(?![\w.-])")
_PHONE_CUE = re.compile(r"(?i)\b(?:phone|tel|telephone|call|text me|text|mobile|cell|whatsapp|sms|fax|reach me|ring)\b")


@functools.lru_cache(maxsize=8192)
def _phone_ok(raw: str, region: str) -> float:
    """Validated against libphonenumber's metadata (~70 µs for a number not seen before; cached,
    because conversations resend their history and the same numbers recur call after call)."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return 0.0
    if phonenumbers.is_valid_number(number):
        return 0.9
    # Reserved fiction ranges (UK 07700 900xxx) are still phone numbers in a prompt.
    return 0.6 if raw.startswith("+") and phonenumbers.is_possible_number(number) else 0.0


def _phones(text: Text, ctx: DetectContext) -> Iterator[tuple[int, int, float]]:
    raw = text.raw
    if "+" in raw:
        for m in _windowed(_PHONE_INTL, text, left=2):
            digits = sum(c.isdigit() for c in m.group(0))
            if 8 <= digits <= 15 and (conf := _phone_ok(m.group(0), ctx.default_region)):
                yield m.start(), m.end(), conf
    for m in _windowed(_PHONE_NANP, text, left=3):
        if conf := _phone_ok(m.group(0), "US"):
            yield m.start(), m.end(), conf
    for m in _windowed(_PHONE_BARE, text):
        if _PHONE_CUE.search(raw, max(0, m.start() - 30), m.start()) and (
                conf := _phone_ok(m.group(0), ctx.default_region)):
            yield m.start(), m.end(), min(conf, 0.8)


_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_VERSION_CUE = re.compile(r"(?i)(?:\bv|version|ver\.?|build|release|previously|chrome|firefox|python|node|oid|"
                          r"firmware|kernel)\s*$")
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")
_PREFIX_LENGTH = re.compile(r"/\d{1,3}(?!\d)")  # `10.0.0.0/8`: a network, not one host's address


def _ips(text: Text, _: DetectContext) -> Iterator[tuple[int, int, float]]:
    raw = text.raw
    if "." in raw:
        for m in _windowed(_IPV4, text):
            if v.ipv4_ok(m.group(0)) and not _PREFIX_LENGTH.match(raw, m.end()):
                before = raw[max(0, m.start() - 12):m.start()]
                yield m.start(), m.end(), 0.4 if _VERSION_CUE.search(before) else 0.9
    if "::" in raw or raw.count(":") >= 7:
        for m in _IPV6.finditer(raw):
            candidate = m.group(0)
            if sum(c != ":" for c in candidate) >= 4 and v.ipv6_ok(candidate) \
                    and not _PREFIX_LENGTH.match(raw, m.end()):
                yield m.start(), m.end(), 0.9


_BTC = re.compile(r"[13][1-9A-HJ-NP-Za-km-z]{25,34}")  # boundaries checked by hand: `\b` first is 3x slower
_BECH32 = re.compile(r"(?:bc|tb)1[02-9ac-hj-np-z]{6,87}(?![\w])", re.IGNORECASE)
_ETH = re.compile(r"0x[0-9a-fA-F]{40}(?![\w])")


def _wallets(text: Text, _: DetectContext) -> Iterator[tuple[int, int, float]]:
    raw = text.raw
    for m in text.matches(_BTC):
        if (m.start() and raw[m.start() - 1].isalnum()) or (m.end() < len(raw) and raw[m.end()].isalnum()):
            continue
        if v.base58check_ok(m.group(0)):
            yield m.start(), m.end(), 0.95
    for prefix in ("bc1", "tb1"):
        for at in text.find_all(prefix, lower=True):
            bech = _BECH32.match(raw, at)
            if bech and (at == 0 or not raw[at - 1].isalnum()) and v.bech32_ok(bech.group(0)):
                yield bech.start(), bech.end(), 0.95
    for at in text.find_all("0x"):
        eth = _ETH.match(raw, at)
        if eth and (at == 0 or not raw[at - 1].isalnum()) and v.eth_ok(eth.group(0)):
            yield eth.start(), eth.end(), 0.8


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sept?|oct|nov|dec)[a-z]*\.?"
_DOB_CUE = re.compile(r"(?i)\b(?:dob|d\.o\.b\.?|date of birth|birth ?date|born(?: on)?)\b[\s:=#-]{0,4}"
                      r"(\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[/.-]\d{1,2}[/.-]\d{4}|" + _MONTH + r" \d{1,2},? \d{4}|"
                      r"\d{1,2} " + _MONTH + r",? \d{4})")


_DOB_WORDS = ("dob", "d.o.b", "birth", "born")


def _dates_of_birth(text: Text, _: DetectContext) -> Iterator[tuple[int, int, float]]:
    lowered = text.lower
    if not any(cue in lowered for cue in _DOB_WORDS):
        return
    for m in _DOB_CUE.finditer(text.raw):
        if _plausible_birth_date(m.group(1)):
            yield m.start(1), m.end(1), 0.9


def _plausible_birth_date(raw: str) -> bool:
    words = re.findall(r"[A-Za-z]+", raw)
    if words:  # "March 15, 1987" or "15 Mar 1987"
        month = _MONTHS.index(words[0][:3].lower()) + 1
        day, year = (int(n) for n in re.findall(r"\d+", raw))
        return _real_past_date(year, month, day)
    parts = [int(p) for p in re.split(r"[/.-]", raw)]
    if parts[0] > 31:
        candidates = [(parts[0], parts[1], parts[2])]
    else:
        a, b, year = parts
        candidates = [(year, a, b), (year, b, a)]  # US and European order: either real date will do
    return any(_real_past_date(y, mo, d) for y, mo, d in candidates)


def _real_past_date(year: int, month: int, day: int) -> bool:
    try:
        when = date(year, month, day)
    except ValueError:
        return False
    return when.year >= 1900 and when <= date.today()


# --- secrets -----------------------------------------------------------------------------------

_TOKEN_END = r"(?![A-Za-z0-9_-])"  # noqa: S105 - a regex, not a password
# type → (triggers: regexes that each begin with a literal, so Python's regex engine can skip ahead
# to candidates instead of trying every position; the full pattern, matched where a trigger hits).
_TOKENS: dict[str, tuple[tuple[re.Pattern[str], ...], re.Pattern[str]]] = {
    "AWS_KEY": ((re.compile(r"A(?:KIA|SIA|BIA|CCA|GPA|IDA|IPA|NPA|NVA|PKA|ROA|SCA)"),),
                re.compile(r"[A-Z]{4}[A-Z2-7]{16}(?![A-Z0-9])")),
    "GITHUB_TOKEN": ((re.compile(r"g(?:h[pousr]_|ithub_pat_)"),),
                     re.compile(r"(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})" + _TOKEN_END)),
    "GITLAB_TOKEN": ((re.compile("glpat-"),), re.compile(r"glpat-[A-Za-z0-9_-]{20,64}" + _TOKEN_END)),
    "SLACK_TOKEN": ((re.compile("xox[abprse]-"), re.compile(r"https://hooks\.slack\.com/")),
                    re.compile(r"(?:xox[abprse]-[A-Za-z0-9-]{10,250}" + _TOKEN_END +
                               r"|https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/-]{20,200})")),
    "STRIPE_KEY": ((re.compile("sk_live_"), re.compile("rk_live_")),
                   re.compile(r"[sr]k_live_[A-Za-z0-9]{16,247}" + _TOKEN_END)),
    "ANTHROPIC_KEY": ((re.compile("sk-ant-"),), re.compile(r"sk-ant-(?:api|admin)\d{2}-[A-Za-z0-9_-]{80,120}" + _TOKEN_END)),
    "OPENAI_KEY": ((re.compile("sk-"),), re.compile(r"sk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,250}|"
                                                     r"[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}|[A-Za-z0-9]{40,60})"
                                                     + _TOKEN_END)),
    "GOOGLE_API_KEY": ((re.compile("AIza"),), re.compile(r"AIza[0-9A-Za-z_-]{35}" + _TOKEN_END)),
    "HUGGINGFACE_TOKEN": ((re.compile("hf_"),), re.compile(r"hf_[A-Za-z0-9]{34,40}" + _TOKEN_END)),
    "NPM_TOKEN": ((re.compile("npm_"),), re.compile(r"npm_[A-Za-z0-9]{36}" + _TOKEN_END)),
    "JWT": ((re.compile("eyJ"),), re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*" + _TOKEN_END)),
}
# Credentials that vendors publish as examples (AWS's documentation, SDKs and tutorials use these two).
# They carry placeholder words ("EXAMPLE") the heuristic below would skip, but they are exactly what a
# user tests with and what nobody needs to send to a model: reported like any other credential.
KNOWN_EXAMPLE_CREDENTIALS = frozenset({"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"})
_PREFIX_BODY = re.compile(r"^(?:[A-Z]{4}|gh[pousr]_|github_pat_|glpat-|xox[abprse]-|[sr]k_live_|sk-ant-|sk-|AIza|hf_|npm_)")


def _tokens(kind: str) -> Callable[[Text, DetectContext], Iterator[tuple[int, int, float]]]:
    triggers, pattern = _TOKENS[kind]

    def find(text: Text, ctx: DetectContext) -> Iterator[tuple[int, int, float]]:
        raw = text.raw
        for trigger in triggers:
            for hit in text.matches(trigger):
                at = hit.start()
                if at and (raw[at - 1].isalnum() or raw[at - 1] in "_-"):
                    continue
                m = pattern.match(raw, at)
                if m is None:
                    continue
                # Placeholders (ghp_XXXX…, sk-your-key-here) have the prefix but not the randomness.
                body = m.group(0) if kind == "JWT" else _PREFIX_BODY.sub("", m.group(0))
                if m.group(0) in KNOWN_EXAMPLE_CREDENTIALS or v.looks_random(body, min(ctx.secret_min_entropy, 3.0)):
                    yield m.start(), m.end(), 0.99
    return find


# PEM blocks, with real newlines or JSON's escaped `\n` (a service-account key file pasted as text).
# Without its END line (a truncated paste, a stream cut short) everything up to the block's end counts.
_PEM = re.compile(r"-----BEGIN ((?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?)-----"
                  r"(?:(?:(?!-----).)*?-----END \1-----|[A-Za-z0-9+/=\s\\:-]*)", re.DOTALL)


def _private_keys(text: Text, _: DetectContext) -> Iterator[tuple[int, int, float]]:
    raw = text.raw
    for at in text.find_all("-----BEGIN "):
        m = _PEM.match(raw, at)
        if m is None:
            continue
        end = m.end()
        while end > m.start() and raw[end - 1] in " \t\r\n\\":
            end -= 1
        yield m.start(), end, 0.99


_AZURE_CONN = re.compile(r"DefaultEndpointsProtocol=https?;AccountName=[A-Za-z0-9]{3,24};AccountKey=[A-Za-z0-9+/]{86}=="
                         r"(?:;[A-Za-z]+=[^;\s\"']+)*;?")
_AZURE_KEY = re.compile(r"(?i)(?:accountkey|azure[_-]?storage[_-]?key|sharedaccesskey)\s*[=:]\s*[\"']?"
                        r"([A-Za-z0-9+/]{43,86}={0,2})(?![A-Za-z0-9+/=])")


def _azure_connection_strings(text: Text, _: DetectContext) -> Iterator[tuple[int, int, float]]:
    for at in text.find_all("DefaultEndpointsProtocol="):
        m = _AZURE_CONN.match(text.raw, at)
        if m:
            yield m.start(), m.end(), 0.99


def _azure_keys(text: Text, _: DetectContext) -> Iterator[tuple[int, int, float]]:
    for cue in ("accountkey", "azure", "sharedaccesskey"):
        for at in text.find_all(cue, lower=True):
            m = _AZURE_KEY.match(text.raw, at)
            if m:
                yield m.start(1), m.end(1), 0.95


# scheme://user:password@host — databases, brokers, HTTP. The password must not be a ${VAR} reference.
_URL_CREDS = re.compile(r"[^\s:/@\"'<>]{1,128}:([^\s@/\"'<>]{3,256})@[\w.-]+")
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]{1,20}$", re.IGNORECASE)
_CONN_PASSWORD = re.compile(r"(?:password|pwd)=([^;\s\"']{4,256})(?=;|$|[\s\"'])", re.IGNORECASE)


def _url_credentials(text: Text, _: DetectContext) -> Iterator[tuple[int, int, float]]:
    raw = text.raw
    for at in text.find_all("://"):
        scheme = _SCHEME.search(raw, max(0, at - 21), at)
        m = _URL_CREDS.match(raw, at + 3)
        if scheme and m and v.looks_random(m.group(1), 0.0):
            yield scheme.start(), m.end(), 0.95
    for cue in ("password=", "pwd="):
        for at in text.find_all(cue, lower=True):
            m = _CONN_PASSWORD.match(raw, at)
            # Only in a `Key=Value;` connection string; plain `password=` assignments are GENERIC_SECRET.
            if m and ";" in raw[max(0, at - 2):at] + raw[m.end(1):m.end(1) + 1] and v.looks_random(m.group(1), 0.0):
                yield m.start(1), m.end(1), 0.9


_AWS_SECRET = re.compile(r"aws.{0,20}?secret.{0,20}?[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])",
                         re.IGNORECASE)
# `password=…`, `"client_secret": "…"`, `api_key: …`: a credential-looking name, then a value that is
# random enough (the entropy floor keeps `password=changeme` in documentation out, and is configurable).
# Stems: `pass` covers password/passwd/passphrase, `key` api_key/apikey/access_key/private_key, `token`
# auth_token/access_token; the assignment pattern then reads the rest of the name.
_SECRET_WORDS = ("pass", "pwd", "secret", "key", "token", "credential")
_ASSIGNMENT = re.compile(r"[A-Za-z0-9_-]{0,20}[\"']?\s*(?::=|=|:)\s*([\"']?)([^\s\"',;`]{8,256})\1")
_BEARER = re.compile(r"bearer\s+([A-Za-z0-9._~+/=-]{16,512})", re.IGNORECASE)
_BASIC = re.compile(r"basic\s+([A-Za-z0-9+/]{6,512}={0,2})(?![A-Za-z0-9+/=])", re.IGNORECASE)


def _is_user_password(encoded: str) -> bool:
    """HTTP Basic credentials: base64 of `user:password` with a non-empty password."""
    try:
        decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return False
    _user, sep, password = decoded.partition(":")
    return bool(sep and password and decoded.isprintable())


def _generic_secrets(text: Text, ctx: DetectContext) -> Iterator[tuple[int, int, float]]:
    raw = text.raw
    for at in text.find_all("aws", lower=True):
        m = _AWS_SECRET.match(raw, at)
        if m and (m.group(1) in KNOWN_EXAMPLE_CREDENTIALS or v.looks_random(m.group(1), ctx.secret_min_entropy)):
            yield m.start(1), m.end(1), 0.9
    starts: set[int] = set()
    for word in _SECRET_WORDS:
        for at in text.find_all(word, lower=True):
            if at in starts:
                continue
            starts.add(at)
            m = _ASSIGNMENT.match(raw, at + len(word))
            if m is None:
                continue
            value = m.group(2)
            if v.looks_random(value, ctx.secret_min_entropy) and not value.startswith(("http://", "https://")):
                yield m.start(2), m.end(2), 0.8
    for at in text.find_all("bearer", lower=True):
        m = _BEARER.match(raw, at)
        if m and v.looks_random(m.group(1), ctx.secret_min_entropy):
            yield m.start(1), m.end(1), 0.85
    for at in text.find_all("basic", lower=True):
        m = _BASIC.match(raw, at)
        if m and _is_user_password(m.group(1)):
            yield m.start(1), m.end(1), 0.9


_S, _I = "s:", "i:"  # cue keys of needles searched as written, and in lower case
DETECTORS: tuple[Detector, ...] = (
    Detector("PRIVATE_KEY", "secret", _private_keys, 100, (_S + "-----BEGIN ",)),
    Detector("AZURE_CONNECTION_STRING", "secret", _azure_connection_strings, 95, (_S + "DefaultEndpointsProtocol=",)),
    *(Detector(kind, "secret", _tokens(kind), 90 if kind != "JWT" else 85, tuple(t.pattern for t in triggers))
      for kind, (triggers, _) in _TOKENS.items()),
    Detector("AZURE_STORAGE_KEY", "secret", _azure_keys, 80, (_I + "accountkey", _I + "azure", _I + "sharedaccesskey")),
    Detector("URL_CREDENTIALS", "secret", _url_credentials, 70, (_S + "://", _I + "password=", _I + "pwd=")),
    Detector("GENERIC_SECRET", "secret", _generic_secrets, 60,
             (_I + "aws", _I + "bearer", _I + "basic", *(_I + w for w in _SECRET_WORDS))),
    Detector("EMAIL", "pii", _emails, 50, (_S + "@",)),
    Detector("IBAN", "pii", _ibans, 48, ("digits",)),
    Detector("CREDIT_CARD", "pii", _cards, 47, ("digits",)),
    Detector("CRYPTO", "pii", _wallets, 46, (_BTC.pattern, _I + "bc1", _I + "tb1", _S + "0x")),
    Detector("US_SSN", "pii", _ssns, 45, ("digits",)),
    Detector("DATE_OF_BIRTH", "pii", _dates_of_birth, 44, tuple(_I + cue for cue in _DOB_WORDS)),
    Detector("PHONE", "pii", _phones, 40, ("digits",)),
    Detector("IP_ADDRESS", "pii", _ips, 30, ("digits", _S + ":")),  # IPv4 is a digit run; IPv6 has colons
)

ALL_TYPES: tuple[str, ...] = tuple(dict.fromkeys(d.type for d in DETECTORS))
CATEGORY_OF: dict[str, Category] = {d.type: d.category for d in DETECTORS}


# --- cues: what the detectors start from, found in one pass (prefilter.py) ---------------------------

def _needle_key(needle: str, lower: bool) -> str:
    return (_I if lower else _S) + needle


_NEEDLES = (("@", False), ("bc1", True), ("tb1", True), ("0x", False), ("-----BEGIN ", False),
            ("DefaultEndpointsProtocol=", False), ("accountkey", True), ("azure", True), ("sharedaccesskey", True),
            ("://", False), ("password=", True), ("pwd=", True), ("aws", True), ("bearer", True), ("basic", True),
            (":", False), *((word, True) for word in (*_SECRET_WORDS, *_DOB_WORDS)))
# Each cue must have a fixed length (or be the digit runs, merged in Text.digit_windows): Hyperscan
# gives each match end its leftmost start only, which is every start only when lengths are fixed.
_CUES: tuple[Cue, ...] = (
    *(Cue(_needle_key(n, lower), re.escape(n), caseless=lower) for n, lower in _NEEDLES),
    *(Cue(t.pattern, t.pattern) for triggers, _ in _TOKENS.values() for t in triggers),
    Cue(_BTC.pattern, r"[13][1-9A-HJ-NP-Za-km-z]{25}"),  # the shortest address: every start of a longer one
    Cue("digits", _DIGIT_RUN.pattern),
)
_CUE_KEYS = frozenset(c.key for c in _CUES)


@functools.cache
def _prefilter() -> Prefilter:
    """Compiled on first use (a few ms), not at import: the CLI's start-up never pays for it."""
    return Prefilter(_CUES)


def _check_cues() -> None:
    """A detector whose cue the prefilter does not look for would never run on ASCII text: refuse."""
    unknown = {key for d in DETECTORS for key in d.cues} - _CUE_KEYS
    if unknown:
        raise RuntimeError(f"detector cues with no prefilter pattern: {sorted(unknown)}")


_check_cues()
