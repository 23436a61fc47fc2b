#!/usr/bin/env bash
# Install what BrightKitchen needs on a fresh Debian/Ubuntu machine: system packages (when missing)
# and the Python package with its test extra, in the project's own venv (.venv/; never the system
# Python: Debian 12 and Ubuntu 24.04 refuse `pip install` there, PEP 668). Idempotent.
#   PYTHON   the interpreter that creates the venv (default: python3)
#   BK_VENV  where the venv goes (default: .venv in the checkout)
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
VENV="${BK_VENV:-$PWD/.venv}"

APT_PACKAGES=(
  ffmpeg mosquitto mosquitto-clients ejabberd sip-tester iproute2 openssl
  gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav
  # web console tests: Debian's Chromium (never `playwright install`), CJK fonts for Chinese text, zbarimg
  chromium fonts-noto-cjk zbar-tools
)
# Debian's python3 has no ensurepip (so no venv) until python3-venv is installed
if [ ! -x "$VENV/bin/python" ] && ! "$PY" -c "import ensurepip, venv" >/dev/null 2>&1; then
  APT_PACKAGES+=(python3-venv)
fi
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: 正在安装系统软件包 (installing system packages): ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  # the tests run their own ejabberd on free ports; Debian's package would start a system one on 1883 and 5222…
  if [[ " ${missing[*]} " == *" ejabberd "* ]] && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now ejabberd >/dev/null 2>&1 || true
  fi
fi

# the storage tests use the PostgreSQL on 127.0.0.1:5432 that every machine here runs: start it if it stopped
if command -v pg_ctlcluster >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
  for v in $(ls /etc/postgresql 2>/dev/null); do
    echo "setup: 正在启动 PostgreSQL $v (starting the local cluster)" >&2
    pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
  done
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: 正在创建虚拟环境 (creating the venv) $VENV with $("$PY" --version 2>&1)" >&2
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.bk-setup-stamp"
if ! "$VENV/bin/python" -c "import edge_agent.app.cli, cloud_receiver.app.cli, pytest, skvideo, playwright" >/dev/null 2>&1 \
   || [ pyproject.toml -nt "$STAMP" ]; then
  echo "setup: 正在安装 Python 包 (pip install -e .[test] into $VENV)" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]"
  touch "$STAMP"
fi
