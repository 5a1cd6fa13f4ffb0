"""SPIFFE IDs, parsed strictly, and the authorization policy over them. Pure: no I/O.

The SPIFFE specification (SPIFFE-ID.md, section 2) defines a SPIFFE ID as a URI
``spiffe://<trust domain>/<path>`` and narrows RFC 3986 hard, so that two implementations never
disagree about whether two IDs are the same. Paraphrased, with what this module does:

* the scheme is ``spiffe`` followed by ``://`` (only the lowercase form is accepted, as go-spiffe
  does); no userinfo, no port (section 2.1), no query, no fragment;
* trust domain names contain only lowercase letters, digits, dots, dashes and underscores, and
  are not empty;
* path segments contain only letters, digits, dots, dashes and underscores, so percent-encoding
  is impossible (``%`` is refused); no empty segments (``//``), no ``.`` or ``..`` segments, no
  trailing ``/``;
* implementations must support IDs up to 2048 bytes and should not generate longer ones; the
  trust domain is a URI host, so at most 255 bytes (section 2.3). Longer IDs are refused here:
  a peer's certificate is not the place to be generous.

Every rejection is a :class:`SpiffeIdError` (a :class:`~x0tta.common.errors.DecodeError`) with a
stable ``code``: IDs come from peers' certificates, so the parser is a decoder and holds the
decoder promise (bad input raises this error and nothing else).

The :class:`AuthorizationPolicy` says which authenticated peers may talk to us: exact IDs, or
patterns where a ``*`` segment matches any one segment and a final ``**`` matches one or more.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from x0tta.common.errors import DecodeError

SCHEME_PREFIX = "spiffe://"
MAX_ID_LENGTH = 2048
MAX_TRUST_DOMAIN_LENGTH = 255

_TD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_")
_SEGMENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")


class SpiffeIdError(DecodeError):
    """A string that is not a valid SPIFFE ID; ``code`` names the rule it breaks."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def validate_trust_domain(name: str) -> str:
    """Return ``name`` if it is a valid trust domain name, else raise :class:`SpiffeIdError`."""
    if not isinstance(name, str):
        raise SpiffeIdError("not_a_string", "trust domain must be a string")
    if not name:
        raise SpiffeIdError("missing_trust_domain", "trust domain is missing")
    if len(name) > MAX_TRUST_DOMAIN_LENGTH:
        raise SpiffeIdError(
            "trust_domain_too_long", f"trust domain is longer than {MAX_TRUST_DOMAIN_LENGTH} bytes"
        )
    bad = next((c for c in name if c not in _TD_CHARS), None)
    if bad is not None:
        raise SpiffeIdError(
            "bad_trust_domain_char",
            f"trust domain characters are limited to lowercase letters, numbers, dots, dashes, and "
            f"underscores; got {bad!r}",
        )
    return name


def validate_path(path: str) -> str:
    """Return ``path`` ("" or "/seg/seg") if valid per the spec, else raise :class:`SpiffeIdError`."""
    if not isinstance(path, str):
        raise SpiffeIdError("not_a_string", "path must be a string")
    if path == "":
        return path
    if not path.startswith("/"):
        raise SpiffeIdError("bad_path", "path must start with '/'")
    if path.endswith("/"):
        raise SpiffeIdError("trailing_slash", "path cannot have a trailing slash")
    for segment in path[1:].split("/"):
        if segment == "":
            raise SpiffeIdError("empty_segment", "path cannot contain empty segments")
        if segment in (".", ".."):
            raise SpiffeIdError("dot_segment", "path cannot contain dot segments")
        bad = next((c for c in segment if c not in _SEGMENT_CHARS), None)
        if bad is not None:
            code = "percent_encoded" if bad == "%" else "bad_path_char"
            raise SpiffeIdError(
                code,
                f"path segment characters are limited to letters, numbers, dots, dashes, and "
                f"underscores; got {bad!r}",
            )
    return path


@dataclass(frozen=True, order=True)
class SpiffeId:
    """A valid SPIFFE ID. Build it with :meth:`parse` or :meth:`from_parts`, which validate."""

    trust_domain: str
    path: str = ""

    def __post_init__(self) -> None:
        validate_trust_domain(self.trust_domain)
        validate_path(self.path)
        if len(SCHEME_PREFIX) + len(self.trust_domain) + len(self.path) > MAX_ID_LENGTH:
            raise SpiffeIdError("too_long", f"SPIFFE ID is longer than {MAX_ID_LENGTH} bytes")

    @classmethod
    def parse(cls, text: str) -> SpiffeId:
        if not isinstance(text, str):
            raise SpiffeIdError("not_a_string", "SPIFFE ID must be a string")
        if text == "":
            raise SpiffeIdError("empty", "SPIFFE ID is empty")
        if len(text) > MAX_ID_LENGTH:
            raise SpiffeIdError("too_long", f"SPIFFE ID is longer than {MAX_ID_LENGTH} bytes")
        if not text.startswith(SCHEME_PREFIX):
            raise SpiffeIdError("bad_scheme", "scheme is missing or invalid (must be 'spiffe://')")
        rest = text[len(SCHEME_PREFIX) :]
        slash = rest.find("/")
        td, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
        for mark, code, what in (("?", "has_query", "query"), ("#", "has_fragment", "fragment")):
            if mark in text:
                raise SpiffeIdError(code, f"SPIFFE ID cannot contain a {what}")
        if "@" in td:
            raise SpiffeIdError("has_userinfo", "trust domain cannot contain userinfo")
        if ":" in td:
            raise SpiffeIdError("has_port", "trust domain cannot contain a port")
        return cls(td, path)

    @classmethod
    def from_parts(cls, trust_domain: str, *segments: str) -> SpiffeId:
        path = "".join("/" + s for s in segments)
        return cls(trust_domain, path)

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path[1:].split("/")) if self.path else ()

    def member_of(self, trust_domain: str) -> bool:
        return self.trust_domain == trust_domain

    def __str__(self) -> str:
        return f"{SCHEME_PREFIX}{self.trust_domain}{self.path}"


def parse_pattern(text: str, trust_domain: str) -> tuple[str, tuple[str, ...]]:
    """A policy pattern: ``spiffe://td/a/*/c``, ``spiffe://td/node/**``, or ``/node/*`` (local domain).

    ``*`` as a whole segment matches any one segment; ``**`` as the last segment matches one or more.
    Other segments must be valid SPIFFE path segments; they match themselves.
    """
    if not isinstance(text, str):
        raise SpiffeIdError("not_a_string", "pattern must be a string")
    if text.startswith("/"):
        text = SCHEME_PREFIX + trust_domain + text
    if not text.startswith(SCHEME_PREFIX):
        raise SpiffeIdError("bad_scheme", f"pattern {text!r} is neither 'spiffe://...' nor '/path'")
    rest = text[len(SCHEME_PREFIX) :]
    slash = rest.find("/")
    td, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    validate_trust_domain(td)
    segs = tuple(path[1:].split("/")) if path else ()
    for i, seg in enumerate(segs):
        if seg == "**" and i != len(segs) - 1:
            raise SpiffeIdError("bad_pattern", "'**' may only be the last segment of a pattern")
        if seg not in ("*", "**"):
            validate_path("/" + seg)
    return td, segs


def _segments_match(pattern: tuple[str, ...], segments: tuple[str, ...]) -> bool:
    if pattern and pattern[-1] == "**":
        head = pattern[:-1]
        if len(segments) <= len(head):
            return False
        segments = segments[: len(head)]
        pattern = head
    if len(pattern) != len(segments):
        return False
    return all(p == "*" or p == s for p, s in zip(pattern, segments, strict=True))


@dataclass(frozen=True)
class AuthorizationPolicy:
    """Which authenticated SPIFFE IDs may hold a session with this node.

    ``trust_domain`` is our own. A peer is allowed when its ID is in ``allowed_ids`` or matches one
    of ``allowed_patterns``. With both empty, every ID of our own trust domain is allowed (the
    trust domain's CA is then the only gate), and IDs of other trust domains never are.
    """

    trust_domain: str
    allowed_ids: frozenset[SpiffeId] = field(default_factory=frozenset)
    allowed_patterns: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def build(
        cls, trust_domain: str, allowed_ids: tuple[str, ...] = (), allowed_patterns: tuple[str, ...] = ()
    ) -> AuthorizationPolicy:
        """From config strings; raises :class:`SpiffeIdError` on the first bad one."""
        validate_trust_domain(trust_domain)
        ids = frozenset(SpiffeId.parse(s) for s in allowed_ids)
        pats = tuple(parse_pattern(p, trust_domain) for p in allowed_patterns)
        return cls(trust_domain, ids, pats)

    @property
    def open_to_domain(self) -> bool:
        return not self.allowed_ids and not self.allowed_patterns

    def allows(self, spiffe_id: SpiffeId) -> bool:
        if self.open_to_domain:
            return spiffe_id.trust_domain == self.trust_domain
        if spiffe_id in self.allowed_ids:
            return True
        return any(
            td == spiffe_id.trust_domain and _segments_match(segs, spiffe_id.segments)
            for td, segs in self.allowed_patterns
        )
