"""Typed application state (web.AppKey) shared by the app factory, the API and the console.

The factory (`cloud_receiver.app.factory`) sets CONFIG and ALERT_HUB when it builds the app;
STORAGE (the event loop's own connection, for the API) and SUBSCRIBER during startup, in its
cleanup contexts. Kept apart from the factory so that the API reads them without importing it.
"""

from __future__ import annotations

from aiohttp import web

from cloud_receiver.config import ReceiverConfig
from cloud_receiver.control.publisher import CommandPublisher
from cloud_receiver.ingest.hub import AlertHub
from cloud_receiver.ingest.subscriber import Subscriber
from cloud_receiver.live.relay import LiveRelay
from cloud_receiver.storage.sqlite import Storage

CONFIG = web.AppKey("config", ReceiverConfig)
STORAGE = web.AppKey("storage", Storage)
ALERT_HUB = web.AppKey("alert_hub", AlertHub)
SUBSCRIBER = web.AppKey("subscriber", Subscriber)
COMMAND_PUBLISHER = web.AppKey("command_publisher", CommandPublisher)  # set with the subscriber
LIVE_RELAY = web.AppKey("live_relay", LiveRelay)  # set with the subscriber
