"""Find a token in anything the tests can read back, without ever printing the token.

What counts as a leak (DESIGN.md §7): the whole JWT, its signature segment
alone, or a base64 copy (standard or urlsafe alphabet) of either, anywhere.

A base64 copy embedded in a larger encoded blob does not start on a group
boundary of its own, so for each of the three possible alignments the needle
is the run of base64 characters that depends on the secret bytes alone; any
base64 text that contains the secret contains one of them.

Results are descriptions ("token 1 (sha256 3f2a9c…): signature segment, base64
urlsafe, offset 2"), never the token or a piece of it, so an assertion
message can be printed safely.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

Encoder = Callable[[bytes], bytes]

_ENCODERS: dict[str, Encoder] = {
    "base64 standard": base64.b64encode,
    "base64 urlsafe": base64.urlsafe_b64encode,
}


@dataclass(frozen=True)
class _Needle:
    text: str
    what: str


def leak_needles(token: str) -> list[str]:
    """Every string whose presence means `token` leaked (deduplicated, longest first)."""
    return sorted({needle.text for needle in _needles(token)}, key=len, reverse=True)


def find_leaks(haystack: str | bytes, tokens: str | Iterable[str]) -> list[str]:
    """Descriptions of every form of every token found in `haystack`; empty when clean."""
    if isinstance(tokens, str):
        tokens = [tokens]
    found: list[str] = []
    for index, token in enumerate(tokens, start=1):
        label = f"token {index} (sha256 {fingerprint(token)})"
        for needle in _needles(token):
            hit = (
                needle.text.encode("ascii") in haystack
                if isinstance(haystack, bytes)
                else needle.text in haystack
            )
            if hit:
                found.append(f"{label}: {needle.what}")
    return found


def fingerprint(token: str) -> str:
    """A short sha256 fingerprint: identifies a token in a message without revealing it."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def _needles(token: str) -> list[_Needle]:
    token = token.strip()
    signature = token.rsplit(".", 1)[-1]
    needles = [_Needle(token, "the whole JWT"), _Needle(signature, "signature segment")]
    for secret, name in ((token, "the whole JWT"), (signature, "signature segment")):
        raw = secret.encode("ascii")
        for alphabet, encode in _ENCODERS.items():
            needles.append(_Needle(encode(raw).decode(), f"{name}, {alphabet}"))
            for offset in range(3):
                core = _aligned_core(raw, offset, encode)
                needles.append(_Needle(core, f"{name}, {alphabet}, offset {offset}"))
                if "/" in core:  # as JSON encoders that escape slashes write it
                    needles.append(_Needle(core.replace("/", "\\/"),
                                           f"{name}, {alphabet}, offset {offset}, JSON-escaped"))
    seen: set[str] = set()
    unique = []
    for needle in needles:
        if needle.text and needle.text not in seen:
            seen.add(needle.text)
            unique.append(needle)
    return unique


def _aligned_core(raw: bytes, offset: int, encode: Encoder) -> str:
    """The base64 characters that encode only `raw`'s bytes when `offset` bytes precede it.

    Only whole 3-byte groups lying inside `raw` are kept: their 4 characters
    are the same whatever surrounds the secret.
    """
    skip = (3 - offset) % 3  # bytes of raw that share a group with the preceding bytes
    whole = (len(raw) - skip) // 3 * 3
    return encode(raw[skip : skip + whole]).decode() if whole > 0 else ""
