#!/usr/bin/env bash
# Install BrightKitchen from this checkout (or a wheel) as a systemd service: the edge agent on a
# canteen box (default) or the cloud receiver (--receiver). Debian/Ubuntu family, x86_64 and aarch64.
#
#   sudo bash scripts/install.sh [--receiver] [--wheel FILE]     install, or upgrade in place
#   sudo bash scripts/install.sh [--receiver] --uninstall         remove what it installed; keep config and data
#   sudo bash scripts/install.sh [--receiver] --uninstall --purge also remove config, credentials and data
#   bash scripts/install.sh --root DIR ...                        the same into a directory tree (tests)
#
# What goes where: a venv with the package and its models under /opt/brightkitchen (shared by both
# roles), config in /etc/brightkitchen (an edited file is never overwritten: new defaults go beside
# it as *.new), secrets in /etc/brightkitchen/credentials (systemd LoadCredential=), data in
# /var/lib/brightkitchen[-receiver], the unit in /etc/systemd/system, the system user brightkitchen.
set -euo pipefail

SRC="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
ROOT="/"
ROLE="agent"
ACTION="install"
PURGE=0
WHEEL=""

say() { printf '%s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --receiver) ROLE="receiver" ;;
    --agent) ROLE="agent" ;;
    --root) [ $# -ge 2 ] || die "--root 需要一个目录 (needs a directory)"; ROOT="$2"; shift ;;
    --root=*) ROOT="${1#--root=}" ;;
    --wheel) [ $# -ge 2 ] || die "--wheel 需要一个文件 (needs a file)"; WHEEL="$2"; shift ;;
    --uninstall) ACTION="uninstall" ;;
    --purge) PURGE=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) die "未知参数 (unknown argument): $1; see --help" ;;
  esac
  shift
done
[ "$PURGE" -eq 0 ] || [ "$ACTION" = "uninstall" ] || die "--purge 只能与 --uninstall 一起用 (only with --uninstall)"

R="${ROOT%/}"
LIVE=0  # the real system: users, apt, systemctl
if [ -z "$R" ]; then
  LIVE=1
  [ "$(id -u)" -eq 0 ] || die "需要 root 权限 (run as root, or use --root DIR)"
else
  mkdir -p "$R"
  R="$(cd "$R" && pwd)"
fi

OPT="$R/opt/brightkitchen"
ETC="$R/etc/brightkitchen"
UNITDIR="$R/etc/systemd/system"
if [ "$ROLE" = "agent" ]; then
  UNIT="brightkitchen-agent.service"; CONF="agent.yaml"; DATA="$R/var/lib/brightkitchen"; PROG="edge-agent"
else
  UNIT="brightkitchen-receiver.service"; CONF="receiver.yaml"; DATA="$R/var/lib/brightkitchen-receiver"; PROG="cloud-receiver"
fi
STATE="$OPT/installed"  # per role: the files installed outside $OPT and the default config's sha256

systemd_live() { [ "$LIVE" -eq 1 ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }

uninstall() {
  if systemd_live; then systemctl disable --now "$UNIT" >/dev/null 2>&1 || true; fi
  rm -f "$UNITDIR/$UNIT"
  if systemd_live; then systemctl daemon-reload; fi
  rm -f "$STATE/$ROLE".*
  if [ -z "$(ls -A "$STATE" 2>/dev/null)" ]; then
    rm -rf "$OPT"  # no role left: the venv goes too
  fi
  if [ "$PURGE" -eq 1 ]; then
    rm -f "$ETC/$CONF" "$ETC/$CONF.new"
    rm -rf "$DATA"
    [ -n "$(ls -A "$ETC" 2>/dev/null | grep -v '^credentials$')" ] || rm -rf "$ETC"
    say "已卸载并清除配置和数据 (uninstalled and purged): $ROLE"
  else
    say "已卸载 (uninstalled): $ROLE; 保留配置 $ETC 和数据 $DATA (kept config and data; --purge removes them)"
  fi
}

install_config() {
  # the shipped example as the default; an edited file stays, a new default goes beside it
  local new target="$ETC/$CONF" recorded=""
  new="$(mktemp)"
  "$OPT/venv/bin/$PROG" config example >"$new"
  local new_sha; new_sha="$(sha256sum "$new" | cut -d' ' -f1)"
  [ -f "$STATE/$ROLE.config-sha256" ] && recorded="$(cat "$STATE/$ROLE.config-sha256")"
  if [ ! -e "$target" ]; then
    install -m 0640 "$new" "$target"
    say "配置已写入 (config written): $target"
  else
    local cur_sha; cur_sha="$(sha256sum "$target" | cut -d' ' -f1)"
    if [ "$cur_sha" = "$new_sha" ]; then
      :  # already the newest default
    elif [ "$cur_sha" = "$recorded" ]; then
      install -m 0640 "$new" "$target"  # unedited old default: take the new one
      say "配置已更新为新默认值 (unedited config updated): $target"
    elif [ "$new_sha" = "$recorded" ]; then
      :  # edited, and the defaults did not change since: nothing new to offer
    elif ! cmp -s "$new" "$target.new" 2>/dev/null; then
      install -m 0640 "$new" "$target.new"
      say "保留已修改的配置 $target; 新默认值见 $target.new (edited config kept, new defaults beside it)"
    fi
  fi
  rm -f "$new"
  printf '%s\n' "$new_sha" >"$STATE/$ROLE.config-sha256"
}

install_all() {
  if [ "$LIVE" -eq 1 ]; then
    if ! "$PY" -c "import ensurepip, venv" >/dev/null 2>&1; then
      say "正在安装 python3-venv (installing python3-venv)"
      apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
    fi
    getent passwd brightkitchen >/dev/null || useradd --system --user-group --home-dir /var/lib/brightkitchen \
      --shell /usr/sbin/nologin brightkitchen
  fi
  mkdir -p "$OPT" "$STATE" "$ETC" "$UNITDIR" "$DATA"
  install -d -m 0700 "$ETC/credentials"
  if [ ! -x "$OPT/venv/bin/python" ]; then
    say "正在创建虚拟环境 (creating the venv) $OPT/venv"
    "$PY" -m venv "$OPT/venv"
  fi
  say "正在安装软件包 (installing the package) from ${WHEEL:-$SRC}"
  "$OPT/venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade "${WHEEL:-$SRC}"
  install_config
  install -m 0644 "$SRC/systemd/$UNIT" "$UNITDIR/$UNIT"
  if [ "$LIVE" -eq 1 ]; then
    chown -R brightkitchen:brightkitchen "$DATA"
    chgrp brightkitchen "$ETC/$CONF" && chmod 0640 "$ETC/$CONF"
  fi
  touch "$STATE/$ROLE.installed"
  if systemd_live; then
    systemctl daemon-reload
    systemctl enable "$UNIT" >/dev/null
  fi
  say "安装完成 (installed): $ROLE"
  say "下一步 (next): 编辑 $ETC/$CONF; 把密码放入 $ETC/credentials/ (见单元文件 LoadCredential=);"
  if [ "$ROLE" = "agent" ]; then
    say "  然后运行 $OPT/venv/bin/edge-agent doctor -c $ETC/$CONF 检查, 再 systemctl start $UNIT"
  else
    say "  然后运行 $OPT/venv/bin/cloud-receiver -c $ETC/$CONF config check, 再 systemctl start $UNIT"
  fi
}

if [ "$ACTION" = "uninstall" ]; then uninstall; else install_all; fi
