"""Every private pyOpenSSL / cffi call of the peer transport, in one place.

Why: pyOpenSSL (26.4 as pinned by ``constraints.txt``, 2026-12) has no public API for a few things
the PQ mutual TLS transport needs, so they go through its private ``OpenSSL._util`` bindings
(``lib``: cryptography's cffi binding of the OpenSSL 4 it bundles, ``ffi``: its cffi handle) and
the private ``_context`` / ``_ssl`` pointers of its objects. Each function below says what it
does, which OpenSSL call it makes and why pyOpenSSL offers no way to do it; nothing else in x0tta
touches ``OpenSSL._util`` or those pointers. When a pyOpenSSL release adds one of these, the
function here is the one caller to change, and ``tests/unit/peer/test_tlserrors.py`` exercises
every one of them against the library actually installed.

Error codes: OpenSSL packs an error as ``ERR_PACK(lib, 0, reason)`` (``include/openssl/err.h``,
OpenSSL 3 and later): the library in bits 23-30, the reason in bits 0-22, bit 31 set for a system
error (whose library is then ``ERR_LIB_SYS`` and whose reason is the errno).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

from OpenSSL import SSL
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib

# ssl.h: SSL_MODE_NO_AUTO_CHAIN - send only the certificates we add, never a chain OpenSSL builds
# from the store (which would include the ~5.5 KB ML-DSA root). A constant pyOpenSSL does not export.
SSL_MODE_NO_AUTO_CHAIN = 0x00000008

ERR_LIB_SYS = 2  # err.h
_ERR_SYSTEM_FLAG = 1 << 31  # err.h: ERR_SYSTEM_FLAG (INT_MAX + 1)
_ERR_LIB_OFFSET = 23
_ERR_LIB_MASK = 0xFF
_ERR_REASON_MASK = 0x7FFFFF
_ERR_SYSTEM_MASK = 0x7FFFFFFF

Code = tuple[int, int]  # (library, reason) of one entry of OpenSSL's error queue


def set_groups(ctx: SSL.Context, groups: Iterable[str]) -> bool:
    """``SSL_CTX_set1_groups_list`` (bound by cryptography under its older name
    ``SSL_CTX_set1_curves_list``): the key exchange groups a context offers and accepts, here
    X25519MLKEM768. pyOpenSSL can only set one classical curve (``set_tmp_ecdh``). False: OpenSSL
    refuses the list (a group it does not know)."""
    return bool(_lib.SSL_CTX_set1_curves_list(ctx._context, ":".join(groups).encode()) == 1)


def verify_error_string(code: int) -> str:
    """``X509_verify_cert_error_string``: OpenSSL's text for a certificate verification error.
    pyOpenSSL's verify callback hands over only the number (``X509_V_ERR_*``)."""
    return str(_ffi.string(_lib.X509_verify_cert_error_string(code)).decode())


def session_reused(conn: SSL.Connection) -> bool:
    """``SSL_session_reused``: did this handshake resume a session? pyOpenSSL has no accessor."""
    return bool(_lib.SSL_session_reused(conn._ssl))


class OpensslError(SSL.Error):
    """A failure OpenSSL reported in its error queue, with the queue's codes (``codes``, oldest
    first). Its ``args`` and text are what pyOpenSSL's own :class:`SSL.Error` would carry, a list
    of (library, function, reason) strings, so anything that prints it reads the same."""

    def __init__(self, codes: Sequence[Code]) -> None:
        entries = []
        for code in codes:
            lib, reason = error_text(code)
            entries.append((lib, "", reason))  # OpenSSL 3 and later name no function
        super().__init__(entries)
        self.codes: tuple[Code, ...] = tuple(codes)


def error_code(packed: int) -> Code:
    """``ERR_GET_LIB`` / ``ERR_GET_REASON`` of a packed error (macros cffi does not all bind)."""
    if packed & _ERR_SYSTEM_FLAG:
        return ERR_LIB_SYS, packed & _ERR_SYSTEM_MASK
    return (packed >> _ERR_LIB_OFFSET) & _ERR_LIB_MASK, packed & _ERR_REASON_MASK


def _pack(code: Code) -> int:
    lib, reason = code
    if lib == ERR_LIB_SYS:
        return _ERR_SYSTEM_FLAG | (reason & _ERR_SYSTEM_MASK)
    return ((lib & _ERR_LIB_MASK) << _ERR_LIB_OFFSET) | (reason & _ERR_REASON_MASK)


@functools.cache
def _strings_loaded() -> bool:
    # OpenSSL loads libssl's error strings when libssl is first initialised, which a context does
    # (OPENSSL_init_ssl is not bound); before that an SSL reason has no text.
    SSL.Context(SSL.TLS_METHOD)
    return True


def error_text(code: Code) -> tuple[str, str]:
    """(library, reason) text OpenSSL gives a code: ``ERR_lib_error_string``,
    ``ERR_reason_error_string``; "" where it has none."""
    _strings_loaded()
    packed = _pack(code)
    lib, reason = _lib.ERR_lib_error_string(packed), _lib.ERR_reason_error_string(packed)
    return (_ffi.string(lib).decode() if lib != _ffi.NULL else "",
            _ffi.string(reason).decode() if reason != _ffi.NULL else "")


def _drain() -> list[Code]:
    codes = []
    while (packed := _lib.ERR_get_error()) != 0:
        codes.append(error_code(packed))
    return codes


def do_handshake(conn: SSL.Connection) -> None:
    """One ``SSL_do_handshake`` step, as ``conn.do_handshake()`` does it, except that a failure
    OpenSSL put in its error queue raises :class:`OpensslError` with the queue's codes: pyOpenSSL
    reads the queue into text only, and the transport classifies refusals by code
    (:mod:`x0tta.peer.tlserrors`). Every other outcome (want read, end of input, a system error)
    goes through pyOpenSSL's own ``Connection._raise_ssl_error``, unchanged.

    Like pyOpenSSL, first re-raise what a Python callback of the context (the verify callback; the
    transport sets no ALPN or OCSP callback) raised inside OpenSSL - ours refuses with a reason
    instead of raising, so this is a safety net - and leave an "unexpected EOF" to pyOpenSSL, which
    turns it into a ``SysCallError``.
    """
    ssl = conn._ssl
    result = _lib.SSL_do_handshake(ssl)
    if result == 1:
        return
    helper = conn._context._verify_helper
    if helper is not None:
        helper.raise_if_problem()
    if _lib.SSL_get_error(ssl, result) == _lib.SSL_ERROR_SSL:
        first = _lib.ERR_peek_error()
        eof = bool(_lib.Cryptography_HAS_UNEXPECTED_EOF_WHILE_READING) and (
            _lib.ERR_GET_REASON(first) == _lib.SSL_R_UNEXPECTED_EOF_WHILE_READING)
        if first != 0 and not eof:
            raise OpensslError(_drain())
    conn._raise_ssl_error(ssl, result)


def codes_of(exc: Exception, known: frozenset[Code]) -> tuple[Code, ...]:
    """The OpenSSL codes behind a pyOpenSSL error.

    An :class:`OpensslError` carries them. An :class:`SSL.Error` pyOpenSSL raised itself carries
    only OpenSSL's text for each code, so the codes in ``known`` are found again by that text -
    exact strings from this same library, never a guess at a message - and any other entry is
    dropped. A ``SysCallError`` (end of input, an errno) has no OpenSSL code at all: ().
    """
    if isinstance(exc, OpensslError):
        return exc.codes
    if isinstance(exc, SSL.SysCallError) or not exc.args or not isinstance(exc.args[0], list):
        return ()
    by_text = _by_text(known)
    found = []
    for entry in exc.args[0]:
        if isinstance(entry, tuple) and len(entry) == 3:
            code = by_text.get((str(entry[0]), str(entry[2])))
            if code is not None:
                found.append(code)
    return tuple(found)


@functools.lru_cache(maxsize=4)
def _by_text(known: frozenset[Code]) -> dict[tuple[str, str], Code]:
    return {error_text(code): code for code in sorted(known)}


__all__ = [
    "ERR_LIB_SYS", "SSL_MODE_NO_AUTO_CHAIN", "Code", "OpensslError", "codes_of", "do_handshake",
    "error_code", "error_text", "session_reused", "set_groups", "verify_error_string",
]
