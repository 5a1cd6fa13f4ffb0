"""The peer protocol without I/O: frames (:mod:`.frames`) and the session state machine (:mod:`.protocol`).

Pure: no sockets, clocks, threads or asyncio; time is the ``now`` the caller passes.
"""

from x0tta.peer.core.errors import (
    Backpressure,
    FrameError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from x0tta.peer.core.frames import GoAway, Hello, Ping, Pong, Request, Response
from x0tta.peer.core.protocol import (
    NEED_DATA,
    Established,
    Limits,
    PeerConnection,
    RemoteGoAway,
    RequestTimedOut,
    State,
    TimedOut,
)

__all__ = [
    "NEED_DATA",
    "Backpressure",
    "Established",
    "FrameError",
    "GoAway",
    "Hello",
    "Limits",
    "LocalProtocolError",
    "PeerConnection",
    "Ping",
    "Pong",
    "ProtocolError",
    "RemoteGoAway",
    "RemoteProtocolError",
    "Request",
    "RequestTimedOut",
    "Response",
    "State",
    "TimedOut",
]
