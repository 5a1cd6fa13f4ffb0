"""The MQTT 5 connection to the fleet's broker: TLS with a client certificate, a Last Will, and
publishes that return the broker's PUBACK reason code.

Built on aiomqtt (asyncio over paho-mqtt). Two things it does not do are done by the fleet
subsystem around it: reconnection (one :class:`Connection` per session; the schedule is
:mod:`x0tta.fleet.core.backoff`) and an offline queue (:mod:`x0tta.fleet.outbox`).

The PUBACK reason code. aiomqtt 2.5 waits for the PUBACK of a QoS 1 publish but drops its reason
code, and an MQTT 5 broker says there that it refused the message (0x87 "not authorized": the ACL
does not let this node write that topic; OASIS MQTT 5.0, 3.4.2.1). :class:`_Client` keeps it: it
publishes through paho's ``publish`` (which returns the packet id) and takes the code in
aiomqtt's ``_on_publish`` hook, the callback paho calls with it. Both are internals of the pinned
aiomqtt (constraints.txt); ``tests/integration/fleet`` checks the code against a real mosquitto.
paho reads the socket from the event loop's reader callback, so a PUBACK cannot arrive between
``publish`` returning the id and the future being registered.

The received side's acknowledgement. In a kept session (the command topic, docs/fleet.md) a
message is acknowledged once it is handled, not when paho reads it: paho's ``manual_ack`` and
``ack(mid, qos)``, reached through aiomqtt's ``_client`` (aiomqtt has no switch of its own).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from x0tta.common.errors import CapabilityMissing, TemporaryError
from x0tta.config.fleet import FleetPaths, FleetSettings
from x0tta.fleet.conditions import FLEET_CERTIFICATE_MISSING, FLEET_CERTIFICATE_UNUSABLE

QOS = 1  # at least once: the outbox removes a message on its PUBACK and recognises duplicates by id


class BrokerError(TemporaryError):
    """The broker is out of reach, refused the connection, or stopped answering."""


def tls_context(paths: FleetPaths) -> ssl.SSLContext:
    """A client context for the broker: its certificate chains to ``paths.ca`` and names the host,
    TLS 1.3 only (as the peer sessions). Reads files: call it off the event loop."""
    missing = [p for p in (paths.cert, paths.key, paths.ca) if not Path(p).is_file()]
    if missing:
        raise CapabilityMissing(
            FLEET_CERTIFICATE_MISSING,
            f"no client certificate for the fleet broker: {', '.join(missing)} missing; enrol the node "
            "(x0tta identity) or set [fleet] cert_file, key_file and ca_file",
        )
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=paths.ca)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(paths.cert, paths.key)
    except (ssl.SSLError, ValueError, OSError) as exc:
        raise CapabilityMissing(
            FLEET_CERTIFICATE_UNUSABLE,
            f"cannot use {paths.cert} / {paths.key} / {paths.ca} for the fleet broker: {exc}; an ML-DSA-65 "
            "SVID needs OpenSSL 3.5 in Python and the broker: give [fleet] an ECDSA certificate instead",
        ) from None
    return ctx


def status_signer(paths: FleetPaths) -> tuple[Any, bytes] | None:
    """The client certificate's key and PEM, to sign birth and death (core/signing.py); None if the
    key cannot sign them. Reads files: call it off the event loop."""
    from cryptography.hazmat.primitives import serialization

    from x0tta.fleet.core.signing import StatusSignatureError, signing_alg

    try:
        key = serialization.load_pem_private_key(Path(paths.key).read_bytes(), None)
        signing_alg(key)
        return key, Path(paths.cert).read_bytes()
    except (OSError, ValueError, TypeError, StatusSignatureError):
        return None


class _Client(aiomqtt.Client):
    """aiomqtt's client, with publishes that return their PUBACK reason code (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acks: dict[int, asyncio.Future[int]] = {}

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        fut = self._acks.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(int(getattr(reason_code, "value", 0)))
        super()._on_publish(client, userdata, mid, reason_code, properties)

    async def publish_acked(self, topic: str, payload: bytes, retain: bool, timeout: float,
                            expiry: int | None = None) -> int:
        props = None
        if expiry is not None:  # MQTT 5 Message Expiry Interval (3.3.2.3.3): the broker drops it after
            props = Properties(PacketTypes.PUBLISH)
            props.MessageExpiryInterval = max(1, int(expiry))
        info = self._client.publish(topic, payload, QOS, retain, props)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise BrokerError(f"cannot publish to {topic}: {paho.error_string(info.rc)}")
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._acks[info.mid] = fut
        lost = self._disconnected
        try:
            done, _ = await asyncio.wait({fut, lost}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._acks.pop(info.mid, None)
        if fut in done:
            return fut.result()
        if lost in done:
            raise BrokerError("the connection was lost before the PUBACK")
        raise BrokerError(f"no PUBACK within {timeout:g} s")


class Connection:
    """One MQTT 5 session: ``async with Connection(...) as conn: await conn.publish(...)``."""

    def __init__(self, settings: FleetSettings, client_id: str, tls: ssl.SSLContext,
                 will_topic: str | None = None, will_payload: bytes = b"", session_expiry: int = 0) -> None:
        """``session_expiry`` (s) above 0 resumes the broker's session of ``client_id`` and asks it
        to keep that session so long after the connection is lost (MQTT 5 Session Expiry Interval,
        3.1.2.11.2): its subscriptions stay, and QoS 1 messages published for them meanwhile are
        queued for the next connection (each until its own Message Expiry Interval). 0: a clean
        session that ends with the connection."""
        self.settings = settings
        connect = None
        if session_expiry > 0:
            connect = Properties(PacketTypes.CONNECT)
            connect.SessionExpiryInterval = int(session_expiry)
        self._client = _Client(
            settings.broker,
            settings.port,
            identifier=client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            tls_context=tls,
            will=aiomqtt.Will(will_topic, will_payload, qos=QOS, retain=True) if will_topic else None,
            keepalive=settings.keepalive,
            timeout=settings.publish_timeout,
            # What this node sends waits in the outbox, not in a session; a session is kept only
            # for what it receives (the command topic), and only when asked to.
            clean_start=session_expiry <= 0,
            properties=connect,
            max_inflight_messages=settings.window,
        )
        # In a kept session a message is acknowledged once handled (``ack`` of :meth:`messages`),
        # not as it arrives: one the process did not finish with is delivered again on the next
        # connection. paho's switch; aiomqtt has none of its own (pinned, see the module doc).
        self.manual_ack = session_expiry > 0
        self._client._client.manual_ack_set(self.manual_ack)

    async def __aenter__(self) -> Connection:
        try:
            await self._client.__aenter__()
        except aiomqtt.MqttError as exc:
            raise BrokerError(f"cannot connect to {self.settings.broker}:{self.settings.port}: {exc}") from None
        return self

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            await self._client.__aexit__(et, exc, tb)
        except aiomqtt.MqttError:
            pass  # the connection is gone already: nothing left to close

    @property
    def lost(self) -> asyncio.Future[None]:
        """Done once the connection is gone (aiomqtt's own marker of it)."""
        return self._client._disconnected

    async def publish(self, topic: str, payload: bytes, retain: bool = False, expiry: int | None = None) -> int:
        """Publish at QoS 1; the PUBACK's reason code once it comes (below 0x80: taken). ``expiry``
        (s) becomes the message's MQTT 5 expiry interval: the broker forgets it after that."""
        try:
            return await self._client.publish_acked(topic, payload, retain, self.settings.publish_timeout, expiry)
        except aiomqtt.MqttError as exc:
            raise BrokerError(f"publish to {topic} failed: {exc}") from None

    async def subscribe(self, topic: str) -> None:
        """Subscribe at QoS 1; :class:`BrokerError` if the broker refuses it (SUBACK reason >= 0x80)."""
        try:
            granted = await self._client.subscribe(topic, qos=QOS)
        except aiomqtt.MqttError as exc:
            raise BrokerError(f"subscribe to {topic} failed: {exc}") from None
        codes = [int(getattr(g, "value", g)) for g in granted]
        if any(c >= 0x80 for c in codes):
            raise BrokerError(f"the broker refused the subscription to {topic} (SUBACK reason 0x{max(codes):02x})")

    async def messages(self) -> AsyncIterator[tuple[str, bytes, Callable[[], None]]]:
        """(topic, payload, ack) of every message of the subscriptions, until the connection is
        lost. In a kept session (``manual_ack``) call ``ack()`` once the message is handled: the
        broker delivers an unacknowledged one again on the next connection (MQTT 5, 4.4). Without
        one it was acknowledged on arrival and ``ack`` does nothing."""
        try:
            async for m in self._client.messages:
                payload = m.payload if isinstance(m.payload, bytes) else str(m.payload or "").encode()
                yield m.topic.value, payload, self._ack_of(m)
        except aiomqtt.MqttError as exc:
            raise BrokerError(f"the connection was lost: {exc}") from None

    def _ack_of(self, m: aiomqtt.Message) -> Callable[[], None]:
        if not self.manual_ack or m.qos == 0:
            return lambda: None
        return lambda: self._client._client.ack(m.mid, m.qos)  # type: ignore[no-any-return]
