"""Mosquitto dynamic-security administration over MQTT (`$CONTROL/dynamic-security/v1`).

Why dynsec and not an ACL file: Mosquitto's plain ACL file does not check subscriptions, so a
device could subscribe to `$share/receivers/...` and take part of the receivers' messages. With
dynsec the default access for publish and subscribe is deny (as `mosquitto_ctrl dynsec init`
writes it) and every device gets a role allowing only its own prefix.

The command lists are pure functions; `DynsecAdmin` sends them and waits for the answers.
"""

from __future__ import annotations

import json
import secrets
import ssl
import threading
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion

from cloud_receiver.errors import ProvisioningError
from cloud_receiver.ingest.subscriber import subscriptions

log = structlog.get_logger(__name__)

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = CONTROL_TOPIC + "/response"
RECEIVER_ROLE = "bk-receiver"


def device_role(device_id: str) -> str:
    return f"bk-device-{device_id}"


def device_commands(device_id: str, password: str) -> list[dict[str, Any]]:
    """Role + client of one device: publish under its own prefix (but not its own commands: only receivers
    may, which is a command's proof of origin), subscribe to its own cmd topic only."""
    role = device_role(device_id)
    return [
        {"command": "createRole", "rolename": role, "textname": f"device {device_id}", "acls": [
            {"acltype": "publishClientSend", "topic": f"bk/v1/{device_id}/cmd", "priority": 1, "allow": False},
            {"acltype": "publishClientSend", "topic": f"bk/v1/{device_id}/#", "priority": 0, "allow": True},
            {"acltype": "subscribeLiteral", "topic": f"bk/v1/{device_id}/cmd", "priority": 0, "allow": True},
        ]},
        {"command": "createClient", "username": device_id, "password": password, "textname": "BrightKitchen box",
         "roles": [{"rolename": role, "priority": 0}]},
    ]


def receiver_commands(username: str, password: str, group: str = "receivers") -> list[dict[str, Any]]:
    """The receivers' role: their subscriptions (exact strings, shared in `group` and plain) and publishing commands."""
    topics = subscriptions(group, shared=True) + subscriptions(group, shared=False)
    acls = [{"acltype": "subscribeLiteral", "topic": t, "priority": 0, "allow": True} for t in topics]
    acls += [{"acltype": "unsubscribeLiteral", "topic": t, "priority": 0, "allow": True} for t in topics]
    acls.append({"acltype": "publishClientSend", "topic": "bk/v1/+/cmd", "priority": 0, "allow": True})
    acls.append({"acltype": "subscribeLiteral", "topic": "bk/v1/+/live/+", "priority": 0, "allow": True})  # not shared
    return [
        {"command": "createRole", "rolename": RECEIVER_ROLE, "textname": "cloud receivers", "acls": acls},
        {"command": "createClient", "username": username, "password": password, "textname": "cloud receiver",
         "roles": [{"rolename": RECEIVER_ROLE, "priority": 0}]},
    ]


def remove_device_commands(device_id: str) -> list[dict[str, Any]]:
    return [{"command": "deleteClient", "username": device_id}, {"command": "deleteRole", "rolename": device_role(device_id)}]


class DynsecAdmin:
    """A short-lived admin connection: `with DynsecAdmin(...) as admin: admin.run(commands)`."""

    def __init__(self, host: str, port: int, username: str, password: str, *, tls: bool = False,
                 timeout_s: float = 5.0) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bk-admin-{secrets.token_hex(4)}",
                                   protocol=mqtt.MQTTv5)
        self._client.username_pw_set(username, password)
        if tls:
            self._client.tls_set(tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._connect_reason: str | None = None
        self._responses: dict[str, list[dict[str, Any]]] = {}
        self._arrived = threading.Condition()
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_a: self._subscribed.set()
        self._client.on_message = self._on_message

    def __enter__(self) -> DynsecAdmin:
        try:
            self._client.connect(self.host, self.port, keepalive=30)
        except OSError as err:
            raise ProvisioningError(f"cannot reach the broker at {self.host}:{self.port}: {err}") from err
        self._client.loop_start()
        if not self._connected.wait(self.timeout_s) or self._connect_reason:
            self.close()
            raise ProvisioningError(f"broker refused the admin login: {self._connect_reason or 'no answer'}")
        self._client.subscribe(RESPONSE_TOPIC, qos=1)
        if not self._subscribed.wait(self.timeout_s):
            self.close()
            raise ProvisioningError("broker did not confirm the admin subscription")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._connect_reason = str(reason) if reason.is_failure else None
        self._connected.set()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            answers = json.loads(msg.payload)["responses"]
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable dynsec response", payload=msg.payload[:200])
            return
        with self._arrived:
            for answer in answers:
                key = answer.get("correlationData")
                if key:
                    self._responses.setdefault(key, []).append(answer)
            self._arrived.notify_all()

    def run(self, commands: list[dict[str, Any]], *, allow: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Send commands in one message; raise ProvisioningError for any error not in `allow`."""
        key = secrets.token_hex(8)
        tagged = [{**c, "correlationData": f"{key}-{i}"} for i, c in enumerate(commands)]
        self._client.publish(CONTROL_TOPIC, json.dumps({"commands": tagged}), qos=1)
        wanted = [f"{key}-{i}" for i in range(len(commands))]
        with self._arrived:
            if not self._arrived.wait_for(lambda: all(w in self._responses for w in wanted), self.timeout_s):
                raise ProvisioningError(f"broker did not answer dynsec commands within {self.timeout_s} s")
            answers = [self._responses.pop(w)[0] for w in wanted]
        errors = [f"{a.get('command')}: {a['error']}" for a in answers
                  if a.get("error") and not any(ok in a["error"] for ok in allow)]
        if errors:
            raise ProvisioningError("broker refused: " + "; ".join(errors))
        return answers

    def add_device(self, device_id: str, password: str) -> None:
        self.run(device_commands(device_id, password))
        log.info("device provisioned on broker", device_id=device_id)

    def remove_device(self, device_id: str) -> None:
        self.run(remove_device_commands(device_id), allow=("not found",))

    def add_receiver(self, username: str, password: str, group: str = "receivers") -> None:
        """Create the receivers' role (once) and one receiver client."""
        role, client = receiver_commands(username, password, group)
        self.run([role], allow=("already exists",))
        self.run([client])
        log.info("receiver provisioned on broker", username=username, group=group)

    def list_clients(self) -> list[str]:
        answer = self.run([{"command": "listClients", "verbose": False}])[0]
        return list(answer.get("data", {}).get("clients", []))
