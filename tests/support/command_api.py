"""Commands through the receiver's API, as a console or an upper platform sends them: send one (retrying
while the box is not connected yet) and wait for the box's answer.

    box = CommandApi(client, token, DEV)
    view = await box.run({"name": "status"})            # accepted, then answered
    status, body = await box.send({...}, until_delivered=False)  # one try: e.g. a 403
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import TestClient

from support.waiting import async_wait_until


def answered(view: dict[str, Any]) -> bool:
    """The box has answered (or the command expired): no longer pending."""
    return view["state"] != "pending"


@dataclass
class CommandApi:
    """`POST /api/v1/devices/{device_id}/commands` and its `GET …/{id}`, with one bearer token."""

    client: TestClient
    token: str
    device_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def send(self, body: dict[str, Any], *, until_delivered: bool = True, timeout: float = 20,
                   step: float = 0.3) -> tuple[int, dict[str, Any]]:
        """POST a command; (status, body). While the box is still subscribing the broker has nobody to give it
        to (503): retry for up to `timeout` s, unless `until_delivered` is False."""
        answers: list[tuple[int, dict[str, Any]]] = []

        async def sent() -> bool:
            r = await self.client.post(f"/api/v1/devices/{self.device_id}/commands", json=body, headers=self.headers)
            answers.append((r.status, await r.json()))
            return r.status != 503 or not until_delivered
        assert await async_wait_until(sent, timeout, step=step), f"never delivered: {answers[-1]}"
        return answers[-1]

    async def answer(self, command_id: str, *, done: Callable[[dict[str, Any]], bool] = answered,
                     timeout: float = 20, step: float = 0.2) -> dict[str, Any]:
        """The command's view once `done(view)` holds (default: answered); fails after `timeout` s."""
        views: list[dict[str, Any]] = []

        async def finished() -> bool:
            r = await self.client.get(f"/api/v1/devices/{self.device_id}/commands/{command_id}", headers=self.headers)
            views.append(await r.json())
            return done(views[-1])
        assert await async_wait_until(finished, timeout, step=step), f"no answer: {views[-1]}"
        return views[-1]

    async def run(self, body: dict[str, Any], *, done: Callable[[dict[str, Any]], bool] = answered,
                  timeout: float = 20) -> dict[str, Any]:
        """Send a command (it must be accepted: 200) and wait for `done`; the command's last view."""
        status, sent = await self.send(body, timeout=timeout)
        assert status == 200, (status, sent)
        return await self.answer(sent["id"], done=done, timeout=timeout)
