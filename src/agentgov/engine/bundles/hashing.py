"""OPA's bundle file digests, byte for byte.

OPA (`bundle/hash.go`, `bundle/verify.go`) hashes a *structured* file (`data.json`, `data.yaml`,
`.manifest`) over a canonical text of its parsed value, so that whitespace and key order do not
change the digest: objects as `{` + `"key":value` pairs in byte order of the key + `}`, arrays as
`[` + items + `]`, joined by `,`, and every primitive as Go's `encoding/json` writes it with HTML
escaping off. Numbers are kept as their literal text (OPA parses with `UseNumber`). Every other
file is hashed over its bytes. Written by hand because no library reproduces Go's string escaping,
and a digest that differs by one escape would make every OPA-signed bundle fail to verify.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from agentgov.engine.yamldoc import load_yaml

STRUCTURED_NAMES = frozenset({"data.json", "data.yaml", ".manifest", ".signatures.json"})

# Go's encoding/json (1.22+): \b \f \n \r \t short forms, other controls as lowercase \u00XX,
# U+2028/U+2029 always escaped, <, > and & left alone when HTML escaping is off.
_SHORT = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


class JsonNumber(str):
    """A JSON number kept as its literal text, as Go's `json.Number` keeps it."""


def is_structured(name: str) -> bool:
    return name.rsplit("/", 1)[-1] in STRUCTURED_NAMES


def go_string(text: str) -> str:
    out = ['"']
    for char in text:
        if char in _SHORT:
            out.append(_SHORT[char])
        elif ord(char) < 0x20 or char in "\u2028\u2029":
            out.append(f"\\u{ord(char):04x}")
        elif 0xD800 <= ord(char) <= 0xDFFF:
            out.append("\ufffd")  # Go replaces invalid UTF-8 (a lone surrogate has no encoding)
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def canonical(value: Any) -> str:
    """The text OPA's hasher writes for a parsed JSON value."""
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k.encode("utf-8", "surrogatepass"))
        return "{" + ",".join(f"{go_string(k)}:{canonical(value[k])}" for k in keys) + "}"
    if isinstance(value, list):
        return "[" + ",".join(canonical(item) for item in value) + "]"
    if isinstance(value, JsonNumber):
        return str.__str__(value)
    if isinstance(value, str):
        return go_string(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return json.dumps(value)
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def parse_structured(name: str, content: bytes) -> Any:
    """Parse a structured bundle file keeping number literals; YAML is read as its JSON value."""
    if name.endswith((".yaml", ".yml")):
        return load_yaml(content.decode("utf-8"))
    return json.loads(content.decode("utf-8"), parse_int=JsonNumber, parse_float=JsonNumber,
                      parse_constant=refuse_constant)


def refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# OPA also accepts MD5 and SHA-1; a signature over a broken hash proves nothing, so they are refused.
HASH_ALGORITHMS = {"SHA-224": "sha224", "SHA-256": "sha256", "SHA-384": "sha384", "SHA-512": "sha512",
                   "SHA-512-224": "sha512_224", "SHA-512-256": "sha512_256"}


def file_digest(name: str, content: bytes, algorithm: str = "SHA-256") -> str:
    """The hex digest OPA records for `name` in `.signatures.json`."""
    if algorithm not in HASH_ALGORITHMS:
        raise ValueError(f"hashing algorithm {algorithm!r} is not accepted (use one of {', '.join(HASH_ALGORITHMS)})")
    hasher = hashlib.new(HASH_ALGORITHMS[algorithm])
    hasher.update(canonical(parse_structured(name, content)).encode("utf-8") if is_structured(name) else content)
    return hasher.hexdigest()
