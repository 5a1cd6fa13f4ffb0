"""Errors of the peer protocol. Pure.

* :class:`FrameError` - bytes from the peer that are not a frame of this protocol (a
  :class:`~x0tta.common.errors.DecodeError`: the frame decoder raises nothing else on any input);
* :class:`RemoteProtocolError` - well-formed frames in an order or number the state machine does
  not allow (a response to nothing, a second hello, more requests than we advertised);
* :class:`LocalProtocolError` - this node tried something the state machine does not allow (a
  request before the hello, a frame above the peer's maximum): a bug in the caller;
* :class:`Backpressure` - the outgoing buffer or the in-flight window is full; wait for the peer.

Every error carries a stable ``code`` (a log field and a metric label).
"""

from __future__ import annotations

from x0tta.common.errors import DecodeError, PermanentError, TemporaryError


class ProtocolError(PermanentError):
    """The session cannot continue: the peer (or we) broke the protocol."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow at this point."""


class FrameError(RemoteProtocolError, DecodeError):
    """Bytes that do not decode as a frame."""


class LocalProtocolError(ProtocolError):
    """This node tried something the protocol does not allow at this point."""


class Backpressure(TemporaryError):
    """Outgoing buffer or in-flight window full; ``code`` says which."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
