"""GB/T 28181 support: the box as SIP server for legacy cameras and NVRs.

Pure parsers (sip, sdp, manscdp, digest, rtp, framing, ps), the asyncio `GbSipServer`, and
`GbChannelSource`, a `FrameSource` for one channel. See docs/gb28181.md.
"""

from edge_agent.capture.gb28181.registry import ChannelInfo, GbEvent
from edge_agent.capture.gb28181.server import GbSipServer
from edge_agent.capture.gb28181.source import GbChannelSource

__all__ = ["ChannelInfo", "GbChannelSource", "GbEvent", "GbSipServer"]
