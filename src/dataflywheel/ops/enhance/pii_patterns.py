"""PII and secret recognizers: compiled patterns, each confirmed by a validator (checksum, IP address parser,
provider format, entropy) and by its context (an order number is not a phone number, a version is not an IP).

``find_pii(text)`` returns non-overlapping ``Span``s; ``redact(text)`` replaces them with typed placeholders.
Types: EMAIL, PHONE, IP_ADDRESS, CREDIT_CARD, IBAN, SECRET. Street addresses are not detected: no well-kept
offline recognizer exists (Presidio finds them only through a spaCy NER model; pyap is unmaintained since 2020).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable

TYPES = ("EMAIL", "PHONE", "IP_ADDRESS", "CREDIT_CARD", "IBAN", "SECRET")
PRIORITY = {"SECRET": 0, "EMAIL": 1, "IBAN": 2, "CREDIT_CARD": 3, "IP_ADDRESS": 4, "PHONE": 5}
"""Which type wins when two spans overlap and are equally long (lower wins)."""


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    type: str


# ---- validators -----------------------------------------------------------------------------------


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# ISO 13616 IBAN lengths by country (the registry's countries; a code not listed is not an IBAN)
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20,
    "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25,
    "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27,
    "SO": 23, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}


def iban_ok(compact: str) -> bool:
    """Registered country, its length, and the ISO 7064 mod-97 check."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def card_ok(digits: str) -> bool:
    """A known card network's prefix and length, and the Luhn check."""
    n = len(digits)
    if not 13 <= n <= 19 or not luhn_ok(digits):
        return False
    two, four = int(digits[:2]), int(digits[:4])
    if digits[0] == "4":  # Visa
        return n in (13, 16, 19)
    if 51 <= two <= 55 or 2221 <= four <= 2720:  # Mastercard
        return n == 16
    if two in (34, 37):  # American Express
        return n == 15
    if four == 6011 or two == 65 or 644 <= int(digits[:3]) <= 649 or 622126 <= int(digits[:6]) <= 622925:  # Discover
        return 16 <= n <= 19
    if 3528 <= four <= 3589:  # JCB
        return 16 <= n <= 19
    if two in (36, 38, 39) or 300 <= int(digits[:3]) <= 305:  # Diners Club
        return 14 <= n <= 19
    if two == 62:  # UnionPay
        return 16 <= n <= 19
    return False


def entropy(text: str) -> float:
    """Shannon entropy in bits per character."""
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


# ---- context ---------------------------------------------------------------------------------------

NOT_PHONE_BEFORE = re.compile(
    r"(?:#|\bno\.?|\bnumber|\border|\binvoice|\bref(?:erence)?|\bticket|\bcase|\btracking|\bid|\bisbn(?:-1[03])?|"
    r"\baccount|\bacct|\bsku|\bserial|\bpo|\bpart|\bmodel|\bversion|\bv|\bbuild|\bpatent|\bconfirmation|"
    r"\bbooking|\bshipment|\bparcel|\bbatch|\blot|\breceipt|\btransaction|\bcustomer)\W{0,3}$", re.I)
PHONE_WORDS = re.compile(r"\b(?:phone|tel|telephone|call|mobile|cell|fax|whatsapp|text|sms|contact|reach|dial|"
                         r"hotline|number)\b", re.I)
VERSION_BEFORE = re.compile(r"(?:\bv|\bversion|\bver|\brelease|\bbuild|\bsection|\bchapter|\bstep|§|\bpython|\bnode|"
                            r"==|>=|<=|~=)\W{0,2}$", re.I)
PLACEHOLDER = re.compile(r"^(?:x+|\*+|\.+|<[^>]*>|\{[^}]*\}|\$\{?\w+\}?|your[_-].*|.*[_-]here|example.*|changeme|"
                         r"password|secret|token|test|dummy|placeholder|none|null|true|false|redacted)$", re.I)


def _before(text: str, start: int, width: int = 24) -> str:
    return text[max(0, start - width):start]


# ---- recognizers -----------------------------------------------------------------------------------

Recognizer = Callable[[str], Iterable[Span]]

EMAIL = re.compile(r"(?<![\w.%+-])[^\W_][\w.%+-]{0,63}@"  # letters of any script: bäckerei-müller.de
                   r"(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+"
                   r"[^\W\d_]{2,24}(?![\w-])")

URL_USERINFO = re.compile(r"://[^\s/@]*$")


def emails(text: str) -> Iterable[Span]:
    if "@" not in text:
        return
    for m in EMAIL.finditer(text):
        if URL_USERINFO.search(text, max(0, m.start() - 200), m.start()):
            continue  # scheme://user:password@host is a URL's credentials (a SECRET), not an email
        yield Span(m.start(), m.end(), "EMAIL")


IPV4 = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
                  r"(?![\w]|\.\d)(?:/\d{1,2}\b)?")
IPV4_HINT = re.compile(r"\d\.\d{1,3}\.\d")
IPV6_HINT = re.compile(r"[0-9A-Fa-f]:[0-9A-Fa-f]{0,4}:|::[0-9A-Fa-f]")
"""Cheap scans that spare the full patterns' pass over texts with no address shape."""
IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{0,4}|(?:\d{1,3}\.){3}\d{1,3})(?![\w:])"
                  r"(?:/\d{1,3}\b)?")


def _ip_personal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Loopback, unspecified, multicast and netmask-like addresses identify no one (and fill code samples)."""
    if address.is_loopback or address.is_unspecified or address.is_multicast:
        return False
    return not (address.version == 4 and str(address).startswith("255."))


def ips(text: str) -> Iterable[Span]:
    if IPV4_HINT.search(text):
        for m in IPV4.finditer(text):
            if VERSION_BEFORE.search(_before(text, m.start(), 12)):
                continue
            if _ip_personal(ipaddress.IPv4Address(m.group().split("/")[0])):
                yield Span(m.start(), m.end(), "IP_ADDRESS")
    if IPV6_HINT.search(text):
        for m in IPV6.finditer(text):
            body = m.group().split("/")[0]
            groups = [g for g in body.split(":") if g]
            if len(groups) < 2 or not any(ch.isdigit() for ch in body):
                continue  # 'a::b' in C++ or Rust paths
            try:
                address = ipaddress.IPv6Address(body)
            except ValueError:
                continue  # MAC addresses, times
            if _ip_personal(address):
                yield Span(m.start(), m.end(), "IP_ADDRESS")


CARD = re.compile(r"(?<![\w.,-])\d(?:[ -]?\d){12,18}(?![\w]|[.,-]\d)")


def cards(text: str) -> Iterable[Span]:
    for m in CARD.finditer(text):
        raw = m.group()
        seps = {ch for ch in raw if not ch.isdigit()}
        if len(seps) > 1:
            continue  # '1234 5678-...' mixes separators: not how a card number is written
        if seps and min(len(g) for g in re.split(r"[ -]", raw)) < 4:
            continue  # a card is grouped in 4s (or 4-6-5): '978-3-16-148410-0' is an ISBN
        if card_ok(re.sub(r"\D", "", raw)):
            yield Span(m.start(), m.end(), "CREDIT_CARD")


IBAN_HINT = re.compile(r"[A-Z]{2}\d\d")
IBAN = re.compile(r"(?<![\w])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![\w])")


def ibans(text: str) -> Iterable[Span]:
    if not IBAN_HINT.search(text):
        return
    for m in IBAN.finditer(text):
        if iban_ok(m.group().replace(" ", "")):
            yield Span(m.start(), m.end(), "IBAN")


PHONE = re.compile(
    r"(?<![\w+/.-])(?<!\d )(?:"
    r"\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"  # international: +44 20 7946 0958
    r"|(?:1[ .-])?\(\d{3}\) ?\d{3}[ .-]\d{4}"  # (415) 555-0132
    r"|(?:1[ .-])?\d{3}([.-])\d{3}\1\d{4}"  # 415-555-0132, 1-800-555-0199
    r"|(?:1 )?\d{3} \d{3} \d{4}"  # 415 555 0132
    r"|0\d{1,4}[ /-]\d{3,4}[ -]?\d{3,4}"  # 020 7946 0958, 030/1234567
    r"|0\d{3,4} \d{5,6}"  # 01632 960123
    r"|\(0\d{1,4}\) ?\d{3,4}[ -]?\d{3,4}"  # (02) 9374 4000
    r"|0\d(?:[ .]\d{2}){4}"  # 06 12 34 56 78
    r")(?![\w]|[.,]\d|-\w| \d)")
NUMBERISH = re.compile(r"[+(]?\d[\d ()./+-]{5,}\d")
BARE_DIGITS = re.compile(r"(?<![\w+.-])\+?\d{7,15}(?![\w]|[.,-]\d)")


def _digit_count(text: str) -> int:
    return sum(ch.isdigit() for ch in text)


def phones(text: str) -> Iterable[Span]:
    for run in NUMBERISH.finditer(text):  # the patterns run only where digits cluster (a phone is such a run)
        end = min(len(text), run.end() + 2)  # two characters more: the patterns look ahead that far
        for m in PHONE.finditer(text, run.start(), end):
            if not 7 <= _digit_count(m.group()) <= 15 or NOT_PHONE_BEFORE.search(_before(text, m.start())):
                continue
            yield Span(m.start(), m.end(), "PHONE")
        for m in BARE_DIGITS.finditer(text, run.start(), end):  # 4155550132: a phone where the text says so
            before = _before(text, m.start(), 32)
            if PHONE_WORDS.search(before) and not NOT_PHONE_BEFORE.search(_before(text, m.start())):
                yield Span(m.start(), m.end(), "PHONE")


PROVIDER_SECRETS = [(hints, re.compile(pattern)) for hints, pattern in (
    (("PRIVATE KEY",), r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY"
                       r"(?: BLOCK)?-----"),
    (("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA"),
     r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b"),  # AWS key ids
    (("gh",), r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36}\b|\bgithub_pat_[A-Za-z0-9_]{60,}\b"),  # GitHub tokens
    (("glpat-",), r"\bglpat-[A-Za-z0-9_-]{20,}\b"),  # GitLab
    (("sk-",), r"\bsk-(?:proj-|svcacct-|admin-|ant-(?:api|admin)\d\d-)?[A-Za-z0-9_-]{20,}\b"),  # OpenAI, Anthropic
    (("xox",), r"\bxox[abposre]-[A-Za-z0-9-]{10,}\b"),  # Slack tokens
    (("hooks.slack.com",), r"https://hooks\.slack\.com/services/[A-Za-z0-9/]+"),
    (("AIza",), r"\bAIza[0-9A-Za-z_-]{35}\b"),  # Google API keys
    (("_live_", "_test_"), r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}\b"),  # Stripe secret and restricted keys
    (("SG.",), r"\bSG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}\b"),  # SendGrid
    (("hf_",), r"\bhf_[A-Za-z]{34}\b"),  # Hugging Face
    (("npm_",), r"\bnpm_[A-Za-z0-9]{36}\b"),
    (("pypi-",), r"\bpypi-AgE[A-Za-z0-9_-]{50,}\b"),
    (("eyJ",), r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\b"),  # JSON Web Tokens
)]
"""Secrets by their provider's format, each with the literal hints one of which the text must contain (a fast
substring test spares the pattern's pass over most texts)."""
URL_PASSWORD = re.compile(r"(?<=://)[^\s:/@]+:([^\s:/@]+)@")
SECRET_KEY = r"""(?:secret|token|passw(?:or)?d|pwd|api[_-]?key|apikey|access[_-]?key|credential|auth[_-]?key)"""
SECRET_WORD = re.compile(SECRET_KEY)
"""Found in the lower-cased text (much faster than a case-insensitive scan); the value is matched after it."""
ASSIGNED = re.compile(r"""[\w.-]*["']?\]?\s*(?:[:=]|=>|:=)\s*(["'])([^"'\s]{6,})\1""")
"""password = "hunter22", "api_key": "...", config['secret'] = '...'"""
ENV_ASSIGNED = re.compile(r"""[\w.-]*=([A-Za-z0-9+/_=!@#$%^*~-]{8,})(?=[\s,;&]|$)""")
"""AWS_SECRET_ACCESS_KEY=... (a shell or .env line: no spaces around '=', no quotes), ?api_key=...&"""
TOKEN = re.compile(r"(?<![\w/+.-])[A-Za-z0-9+/_-]{24,}={0,2}(?![\w/+=-])")
HEX = re.compile(r"^[0-9a-fA-F-]+$")
WORDLIKE = re.compile(r"[A-Z]?[a-z]{3,}")
DIGIT_RUN = re.compile(r"\d+")
PATH_WORD = re.compile(r"^[a-z]{3,}$|^$")


def high_entropy_token(token: str, entropy_ratio: float) -> bool:
    """A long random-looking token: letters of both cases and digits, no run of words (camelCase or
    snake_case names), and an entropy of at least ``entropy_ratio`` x log2(length) bits a character (random
    base62 tokens have about 0.88; identifiers about 0.8). Hex strings are left alone: hashes, UUIDs and git
    SHAs are hex and are not secrets."""
    if "/" in token and any(PATH_WORD.match(part) for part in token.split("/")):
        return False  # a URL or file path: playlist/2kqX4JgQid8xlr5H6I
    if HEX.match(token) or not (any(c.isdigit() for c in token) and any(c.isupper() for c in token)
                                and any(c.islower() for c in token)):
        return False
    if len(WORDLIKE.findall(token)) > 2 or (len(token) < 32 and len(DIGIT_RUN.findall(token)) < 2):
        return False
    return entropy(token) >= entropy_ratio * math.log2(min(len(token), 64))


def secrets(text: str, entropy_ratio: float = 0.82) -> Iterable[Span]:
    for hints, pattern in PROVIDER_SECRETS:
        if any(hint in text for hint in hints):
            for m in pattern.finditer(text):
                yield Span(m.start(), m.end(), "SECRET")
    if "://" in text:
        for m in URL_PASSWORD.finditer(text):
            if not PLACEHOLDER.match(m.group(1)):
                yield Span(m.start(1), m.end(1), "SECRET")
    if "=" in text or ":" in text:
        lower = text.lower()
        if len(lower) != len(text):  # a character whose lower case is longer ('İ'): positions would shift
            lower = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
        for key in SECRET_WORD.finditer(lower):
            quoted, bare = ASSIGNED.match(text, key.end()), ENV_ASSIGNED.match(text, key.end())
            if quoted and not PLACEHOLDER.match(quoted.group(2)):
                yield Span(quoted.start(2), quoted.end(2), "SECRET")
            elif bare and not PLACEHOLDER.match(bare.group(1)):
                yield Span(bare.start(1), bare.end(1), "SECRET")
    if entropy_ratio <= 1.0:
        for m in TOKEN.finditer(text):
            if high_entropy_token(m.group(), entropy_ratio) and not text.endswith("base64,", 0, m.start()):
                yield Span(m.start(), m.end(), "SECRET")


RECOGNIZERS: dict[str, Recognizer] = {"SECRET": secrets, "EMAIL": emails, "IBAN": ibans, "CREDIT_CARD": cards,
                                      "IP_ADDRESS": ips, "PHONE": phones}


EXAMPLE_DOMAINS = ("example.com", "example.net", "example.org")
RESERVED_TLDS = ("example", "test", "invalid", "localhost")


def reserved(text: str, kind: str) -> bool:
    """Whether an email or IP address is one reserved for examples and private use, never a person's: the RFC 2606
    domains (example.com/.net/.org, .example, .test, .invalid, .localhost) and private, documentation and
    link-local addresses (10/8, 172.16/12, 192.168/16, 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32,
    fc00::/7, fe80::/10 ...)."""
    if kind == "EMAIL":
        domain = text.rsplit("@", 1)[-1].lower()
        return domain.rsplit(".", 1)[-1] in RESERVED_TLDS or any(domain == d or domain.endswith("." + d)
                                                                    for d in EXAMPLE_DOMAINS)
    if kind == "IP_ADDRESS":
        address = ipaddress.ip_address(text.split("/")[0])
        return address.is_private or address.is_link_local
    return False


def find_pii(text: str, types: Iterable[str] = TYPES, entropy_ratio: float = 0.82,
             keep_reserved: bool = False) -> list[Span]:
    """Non-overlapping spans of the wanted types, in text order (the longer span wins an overlap, then the
    type earlier in ``PRIORITY``); ``keep_reserved`` leaves example and private emails and addresses alone."""
    found: list[Span] = []
    for kind in types:
        if kind == "SECRET":
            found.extend(secrets(text, entropy_ratio))
        elif kind != "PHONE" or any(ch.isdigit() for ch in text):
            found.extend(RECOGNIZERS[kind](text))
    if keep_reserved:
        found = [s for s in found if not reserved(text[s.start:s.end], s.type)]
    found.sort(key=lambda s: (-(s.end - s.start), PRIORITY[s.type], s.start))
    kept: list[Span] = []
    for span in found:
        if all(span.end <= k.start or span.start >= k.end for k in kept):
            kept.append(span)
    return sorted(kept, key=lambda s: s.start)


def redact(text: str, spans: list[Span], placeholder: str = "<{type}>") -> str:
    """``text`` with each span replaced by its typed placeholder."""
    parts, last = [], 0
    for span in spans:
        parts.append(text[last:span.start])
        parts.append(placeholder.format(type=span.type))
        last = span.end
    parts.append(text[last:])
    return "".join(parts)
