"""ONVIF camera discovery (WS-Discovery) and access (device info, profiles, stream URIs).

`discovery` finds devices on the LAN, `client` asks each one for its profiles and stream URIs,
`configfile` merges the result into the agent config, `command` is `edge-agent discover`.
"""

from edge_agent.onvif.types import OnvifDevice, ProbeMatch, Profile, Scopes, StreamInfo

__all__ = ["OnvifDevice", "ProbeMatch", "Profile", "Scopes", "StreamInfo"]
