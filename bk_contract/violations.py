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


# alerts the receiver raises from the canteens' own ledgers (cloud_receiver/ledgers/rules.py), not sent by boxes
LEDGER_ALERT_NAMES: dict[str, str] = {
    "health_cert_expired": "健康证过期",
    "health_cert_expiring": "健康证即将过期",
    "morning_check_missing": "未晨检",
    "supplier_licence_expired": "供货商许可证过期",
    "sample_missing": "未留样",
    "sample_too_short": "留样时间不足",
}
# alerts the receiver raises from the public page's 投诉/举报 form (cloud_receiver/web/public_report.py)
PUBLIC_ALERT_NAMES: dict[str, str] = {"public_report": "公众举报"}
ALERT_TYPE_NAMES: dict[str, str] = {**VIOLATION_NAMES, **LEDGER_ALERT_NAMES, **PUBLIC_ALERT_NAMES}  # every type an alert row may have


def type_name(code: str) -> str:
    """Chinese name of an alert type code (the code itself if unknown)."""
    return ALERT_TYPE_NAMES.get(code, code)
