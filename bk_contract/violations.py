"""Violation type codes (the contract's `type`) and their Chinese names, as pushed and shown to people."""

from __future__ import annotations

VIOLATION_NAMES: dict[str, str] = {
    "phone_use": "玩手机",
    "intrusion_off_hours": "非工作时间闯入",
    "animal": "动物/鼠患",
    "station_unattended": "动火离人/离岗",
    "crowding": "人员聚集",
    "no_chef_hat": "未戴厨师帽",
    "no_mask": "未戴口罩",
    "no_uniform": "未穿工作服",
    "smoking": "吸烟",
    "bin_open": "垃圾桶未盖",
    "fire": "明火",
    "camera_offline": "摄像头离线",
    "camera_tampered": "摄像头遮挡",
}


def type_name(code: str) -> str:
    """Chinese name of a violation type code (the code itself if unknown)."""
    return VIOLATION_NAMES.get(code, code)
