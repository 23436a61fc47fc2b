"""Ask one ONVIF device for its identity, profiles and stream URIs (onvif-zeep-async).

Replies are turned into dataclasses by pure functions; library errors are translated here, once,
into `RetryLater` (unreachable, timeout) or `AuthFailed` (credentials refused).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import structlog
import zeep.exceptions
from onvif import ONVIFCamera
from onvif.exceptions import ONVIFAuthError, ONVIFError, ONVIFTimeoutError

from edge_agent.errors import AuthFailed, EdgeError, NeedsHuman, RetryLater
from edge_agent.onvif.types import DeviceInformation, OnvifDevice, Profile, StreamInfo

log = structlog.get_logger(__name__)

MIN_SUB_WIDTH = 320
AUTH_MARKERS = ("notauthorized", "not authorized", "unauthorized", "authority failure", "sender not authorized")


# ---- pure parsing -------------------------------------------------------------------------


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if obj is None:
            return None
        obj = obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)
    return obj


def parse_device_information(raw: Mapping[str, Any] | None) -> DeviceInformation:
    """GetDeviceInformation reply (as a dict) -> DeviceInformation."""
    raw = raw or {}
    return DeviceInformation(
        manufacturer=str(raw.get("Manufacturer") or ""),
        model=str(raw.get("Model") or ""),
        firmware=str(raw.get("FirmwareVersion") or ""),
        serial=str(raw.get("SerialNumber") or ""),
        hardware_id=str(raw.get("HardwareId") or ""),
    )


def parse_profiles(raw: Iterable[Mapping[str, Any]] | None) -> tuple[Profile, ...]:
    """GetProfiles reply (list of dicts) -> video profiles; profiles without a video encoder are skipped."""
    out = []
    for item in raw or ():
        enc = _get(item, "VideoEncoderConfiguration")
        width, height = _get(enc, "Resolution", "Width"), _get(enc, "Resolution", "Height")
        token = _get(item, "token")
        if not token or not width or not height:
            continue
        fps = _get(enc, "RateControl", "FrameRateLimit")
        out.append(
            Profile(
                token=str(token),
                name=str(_get(item, "Name") or token),
                encoding=str(_get(enc, "Encoding") or ""),
                width=int(width),
                height=int(height),
                fps=float(fps) if fps else None,
            )
        )
    return tuple(out)


def choose_main(profiles: Iterable[Profile]) -> Profile | None:
    """Highest resolution: used for snapshots and clips."""
    return max(profiles, key=lambda p: (p.width * p.height, p.fps or 0), default=None)


def choose_sub(profiles: Iterable[Profile], min_width: int = MIN_SUB_WIDTH) -> Profile | None:
    """Lowest resolution that is still at least `min_width` wide: used for detection."""
    usable = [p for p in profiles if p.width >= min_width]
    return min(usable, key=lambda p: (p.width * p.height, -(p.fps or 0)), default=None)


def strip_credentials(uri: str) -> str:
    """Remove user:password@ from a URI; credentials never go into the config file."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def service_address(xaddr: str) -> tuple[str, int]:
    """Device-service XAddr -> (host, port) for the ONVIF client."""
    parts = urlsplit(xaddr)
    if not parts.hostname:
        raise ValueError(f"XAddr {xaddr!r} has no host")
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def _chain(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = err
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def _is_auth(err: BaseException) -> bool:
    if isinstance(err, ONVIFAuthError):
        return True
    if isinstance(err, zeep.exceptions.TransportError) and err.status_code in (401, 403):
        return True
    if isinstance(err, aiohttp.ClientResponseError) and err.status in (401, 403):
        return True
    if isinstance(err, zeep.exceptions.Fault):
        words = " ".join(str(x) for x in (err.message, err.code, *(err.subcodes or []))).lower()
        return any(marker in words for marker in AUTH_MARKERS)
    return False


def translate_error(err: BaseException, target: str) -> EdgeError:
    """Map a library exception to AuthFailed / RetryLater / NeedsHuman with a message naming the camera."""
    chain = _chain(err)
    if any(_is_auth(e) for e in chain):
        return AuthFailed(f"ONVIF {target}: auth failed (用户名或密码错误): {err}")
    retry_types = (TimeoutError, ONVIFTimeoutError, aiohttp.ClientError, OSError)
    if any(isinstance(e, retry_types) for e in chain):
        return RetryLater(f"ONVIF {target}: unreachable or timed out (无法连接): {str(err) or type(err).__name__}")
    if any(isinstance(e, zeep.exceptions.TransportError) for e in chain):
        return RetryLater(f"ONVIF {target}: HTTP error from camera: {err}")
    if any(isinstance(e, zeep.exceptions.Fault) for e in chain):
        return NeedsHuman(f"ONVIF {target}: camera refused the request: {err}")
    if any(isinstance(e, ONVIFError | zeep.exceptions.Error) for e in chain):
        return RetryLater(f"ONVIF {target}: {err}")
    return NeedsHuman(f"ONVIF {target}: unexpected error {type(err).__name__}: {err}")


# ---- I/O ----------------------------------------------------------------------------------


async def _stream_info(cam: ONVIFCamera, media: Any, profile: Profile) -> StreamInfo:
    req = media.create_type("GetStreamUri")
    req.ProfileToken = profile.token
    req.StreamSetup = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}
    reply = cam.to_dict(await media.GetStreamUri(req))
    uri = _get(reply, "Uri")
    if not uri:
        raise NeedsHuman(f"ONVIF {cam.host}:{cam.port}: GetStreamUri for profile {profile.token} returned no URI")
    snapshot = await cam.get_snapshot_uri(profile.token)
    return StreamInfo(profile=profile, uri=strip_credentials(str(uri)), snapshot_uri=strip_credentials(snapshot) if snapshot else None)


async def _fetch(cam: ONVIFCamera, name: str, min_sub_width: int) -> OnvifDevice:
    await cam.update_xaddrs()  # GetSystemDateAndTime first (adjust_time), then GetServices
    offset = cam.dt_diff.total_seconds() if cam.dt_diff is not None else 0.0
    devicemgmt = await cam.create_devicemgmt_service()
    info = parse_device_information(cam.to_dict(await devicemgmt.GetDeviceInformation()))
    media = await cam.create_media_service()
    profiles = parse_profiles(cam.to_dict(await media.GetProfiles()))
    main_p, sub_p = choose_main(profiles), choose_sub(profiles, min_sub_width)
    main = await _stream_info(cam, media, main_p) if main_p else None
    sub = await _stream_info(cam, media, sub_p) if sub_p and sub_p != main_p else None
    return OnvifDevice(
        host=cam.host, port=cam.port, info=info, profiles=profiles, main=main, sub=sub,
        name=name, clock_offset_s=offset,
    )


async def fetch_device(
    host: str,
    port: int,
    username: str | None,
    password: str | None,
    timeout: float = 10.0,
    name: str = "",
    min_sub_width: int = MIN_SUB_WIDTH,
) -> OnvifDevice:
    """Read identity, profiles and the main/sub stream URIs of one device.

    The camera's clock is read first (GetSystemDateAndTime) and the WS-UsernameToken digest is
    stamped with the camera's time, so a camera with a wrong clock still accepts us.
    """
    target = f"{host}:{port}"
    cam = ONVIFCamera(host, port, username, password, adjust_time=True, no_cache=True)
    try:
        device = await asyncio.wait_for(_fetch(cam, name, min_sub_width), timeout)
    except EdgeError:
        raise
    except Exception as err:
        raise translate_error(err, target) from err
    finally:
        try:
            await cam.close()
        except Exception as err:  # closing must not hide the real outcome
            log.debug("onvif.close_failed", target=target, error=str(err))
    log.info(
        "onvif.device", target=target, model=device.info.model, profiles=len(device.profiles),
        clock_offset_s=round(device.clock_offset_s, 1),
    )
    return device
