"""Tests reach the local Mosquitto launcher under its old name; it lives in cloud_receiver.localbroker."""

from cloud_receiver.localbroker import Broker, running_broker, start_broker

__all__ = ["Broker", "running_broker", "start_broker"]
