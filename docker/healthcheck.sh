#!/usr/bin/env bash
# Container health probe: exits 0 only when GET /health/ready answers 200.
# The slim base image has no curl or wget, so this speaks HTTP/1.1 over bash's /dev/tcp.
set -euo pipefail

port=${TANDEM_PORT:-8080}
path=${1:-/health/ready}

exec 3<>"/dev/tcp/127.0.0.1/${port}"
printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&3
# The status line is "HTTP/1.1 200 OK"; bound the wait in case the server accepts but stalls.
read -r -t 2 _version status _reason <&3
exec 3<&-
[[ $status == 200 ]]
