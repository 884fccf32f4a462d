"""Checksums and structural rules that turn a pattern match into a finding.

Pure functions on candidate strings. A regex alone flags every 16-digit order number as a card;
these validators are what keeps precision up (docs/architecture.md §4: regex + real validators beat Presidio
here on precision and by two orders of magnitude on cost).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter

# --- payment cards -----------------------------------------------------------------------------

def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def card_brand(digits: str) -> str | None:
    """The network an IIN belongs to, for the lengths that network issues; None for anything else."""
    n = len(digits)
    two, four, six = int(digits[:2]), int(digits[:4]), int(digits[:6])
    if digits[0] == "4" and n in (13, 16, 19):
        return "visa"
    if (51 <= two <= 55 or 2221 <= four <= 2720) and n == 16:
        return "mastercard"
    if two in (34, 37) and n == 15:
        return "amex"
    if (four == 6011 or 644 <= int(digits[:3]) <= 649 or two == 65 or 622126 <= six <= 622925) and n in (16, 19):
        return "discover"
    if 3528 <= four <= 3589 and 16 <= n <= 19:
        return "jcb"
    if (300 <= int(digits[:3]) <= 305 or two in (36, 38, 39) or four == 3095) and n in (14, 16, 19):
        return "diners"
    return None


def card_ok(digits: str) -> bool:
    return card_brand(digits) is not None and luhn_ok(digits)


# --- IBAN (ISO 13616): per-country length, then mod-97 -----------------------------------------

IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}


def iban_ok(compact: str) -> bool:
    """`compact` is upper-case with spaces removed."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    try:
        number = int("".join(str(int(c, 36)) for c in rearranged))
    except ValueError:
        return False
    return number % 97 == 1


# --- US SSN: area 001-899 except 666, group 01-99, serial 0001-9999 ---------------------------

def ssn_ok(digits: str) -> bool:
    if len(digits) != 9:
        return False
    area, group, serial = int(digits[:3]), int(digits[3:5]), int(digits[5:])
    if area == 0 or area == 666 or area >= 900 or group == 0 or serial == 0:
        return False
    # Numbers the SSA has published as examples or that advertising made famous.
    return digits not in {"078051120", "219099999", "123456789"}


# --- IP addresses --------------------------------------------------------------------------------

def ipv4_ok(text: str) -> bool:
    parts = text.split(".")
    if len(parts) != 4:
        return False
    return all(not (not p.isdigit() or len(p) > 3 or (len(p) > 1 and p[0] == "0") or int(p) > 255) for p in parts)


def ipv6_ok(text: str) -> bool:
    import ipaddress  # stdlib parser: IPv6's compressed forms are easy to get wrong by hand

    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return text.count(":") >= 2


# --- crypto wallets ------------------------------------------------------------------------------

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}


def base58check_ok(text: str) -> bool:
    """A Bitcoin P2PKH/P2SH address: base58, 25 bytes, version 0x00 or 0x05, double-SHA256 checksum."""
    num = 0
    for c in text:
        v = _B58_INDEX.get(c)
        if v is None:
            return False
        num = num * 58 + v
    pad = len(text) - len(text.lstrip("1"))
    try:
        raw = b"\0" * pad + num.to_bytes((num.bit_length() + 7) // 8, "big")
    except OverflowError:
        return False
    if len(raw) != 25 or raw[0] not in (0x00, 0x05):
        return False
    check = hashlib.sha256(hashlib.sha256(raw[:21]).digest()).digest()[:4]
    return check == raw[21:]


_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _polymod(values: list[int]) -> int:
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= _BECH32_GEN[i] if (top >> i) & 1 else 0
    return chk


def bech32_ok(text: str) -> bool:
    """A segwit address (bc1…): bech32 (v0, constant 1) or bech32m (v1+, constant 0x2bc830a3)."""
    if text.lower() != text and text.upper() != text:
        return False
    text = text.lower()
    hrp, sep, data = text.rpartition("1")
    if not sep or hrp not in ("bc", "tb") or len(data) < 7:
        return False
    try:
        values = [_BECH32.index(c) for c in data]
    except ValueError:
        return False
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    const = _polymod(expanded + values)
    version = values[0]
    return (version == 0 and const == 1) or (1 <= version <= 16 and const == 0x2BC830A3)


def eth_ok(text: str) -> bool:
    """0x + 40 hex: all one case (no checksum to test), or mixed case that passes EIP-55."""
    body = text[2:]
    if body.lower() == body or body.upper() == body:
        return len(set(body.lower())) > 4  # not 0x000…0 or a repeated placeholder
    digest = keccak256(body.lower().encode()).hex()
    return all((c.upper() if int(digest[i], 16) >= 8 else c.lower()) == c for i, c in enumerate(body))


# Keccak-256 as Ethereum uses it (the pre-standard padding 0x01, not SHA3's 0x06): hashlib has only
# SHA3, and EIP-55 needs Keccak. Hand-written because it runs only on 0x-addresses with mixed case.
_RC = [0x0000000000000001, 0x0000000000008082, 0x800000000000808A, 0x8000000080008000, 0x000000000000808B,
       0x0000000080000001, 0x8000000080008081, 0x8000000000008009, 0x000000000000008A, 0x0000000000000088,
       0x0000000080008009, 0x000000008000000A, 0x000000008000808B, 0x800000000000008B, 0x8000000000008089,
       0x8000000000008003, 0x8000000000008002, 0x8000000000000080, 0x000000000000800A, 0x800000008000000A,
       0x8000000080008081, 0x8000000000008080, 0x0000000080000001, 0x8000000080008008]
_ROT = [[0, 36, 3, 41, 18], [1, 44, 10, 45, 2], [62, 6, 43, 15, 61], [28, 55, 25, 21, 56], [27, 20, 39, 8, 14]]
_MASK = (1 << 64) - 1


def _rotl(v: int, n: int) -> int:
    return ((v << n) | (v >> (64 - n))) & _MASK if n else v


def _keccak_f(a: list[list[int]]) -> None:
    for rc in _RC:
        c = [a[x][0] ^ a[x][1] ^ a[x][2] ^ a[x][3] ^ a[x][4] for x in range(5)]
        d = [c[(x - 1) % 5] ^ _rotl(c[(x + 1) % 5], 1) for x in range(5)]
        for x in range(5):
            for y in range(5):
                a[x][y] ^= d[x]
        b = [[0] * 5 for _ in range(5)]
        for x in range(5):
            for y in range(5):
                b[y][(2 * x + 3 * y) % 5] = _rotl(a[x][y], _ROT[x][y])
        for x in range(5):
            for y in range(5):
                a[x][y] = b[x][y] ^ ((~b[(x + 1) % 5][y]) & b[(x + 2) % 5][y])
        a[0][0] ^= rc


def keccak256(data: bytes) -> bytes:
    rate = 136
    padded = bytearray(data) + b"\x01" + b"\0" * ((-len(data) - 1) % rate)
    padded[-1] |= 0x80
    state = [[0] * 5 for _ in range(5)]
    for off in range(0, len(padded), rate):
        block = padded[off:off + rate]
        for i in range(rate // 8):
            state[i % 5][i // 5] ^= int.from_bytes(block[8 * i:8 * i + 8], "little")
        _keccak_f(state)
    out = b"".join(state[i % 5][i // 5].to_bytes(8, "little") for i in range(4))
    return out


# --- secrets -------------------------------------------------------------------------------------

def shannon_entropy(text: str) -> float:
    """Bits per character: random keys score ~4-6, words and placeholders far less."""
    if not text:
        return 0.0
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def looks_random(text: str, min_entropy: float) -> bool:
    """A credential value rather than a word, a placeholder or a variable reference."""
    if shannon_entropy(text) < min_entropy:
        return False
    if len(set(text)) <= 3:
        return False
    lowered = text.lower()
    placeholders = ("your", "xxxx", "****", "redacted", "example", "changeme", "placeholder", "dummy", "<", "${",
                    "{{", "%(")
    return not any(p in lowered for p in placeholders)
