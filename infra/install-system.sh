#!/usr/bin/env bash
# Installs the system packages AIOS needs on a fresh Debian/Ubuntu machine, and nothing that is
# already there: Python 3.11+ with venv, Java 17+ and Maven (Kafka's jars come from Maven
# Central), Redis (redis-server) and promtool (prometheus). Run as root or with sudo available.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v mvn >/dev/null 2>&1 || need+=(maven)
# promtool (checks /metrics, the scrape config and the alert rules in tests) ships in `prometheus`.
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
java_major() { java -version 2>&1 | sed -nE 's/.*version "([0-9]+).*/\1/p' | head -n1; }
if ! command -v java >/dev/null 2>&1 || [ "$(java_major)" -lt 17 ]; then need+=(openjdk-17-jre-headless); fi
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || need+=(python3 python3-venv)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
# The dashboard's browser test drives Debian's Chromium through Playwright (never a downloaded browser).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# `aios top` is tested in a real terminal: tmux runs it and captures the pane.
command -v tmux >/dev/null 2>&1 || need+=(tmux)

if [ ${#need[@]} -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root (or sudo) to apt-get install: ${need[*]}" >&2; exit 1; }
  SUDO=sudo
fi
command -v apt-get >/dev/null 2>&1 || { echo "no apt-get here: install ${need[*]} yourself" >&2; exit 1; }
echo "apt-get install: ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
