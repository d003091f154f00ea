#!/bin/bash
# healthcheck PORT [PATH] — exit 0 when GET http://127.0.0.1:PORT/PATH answers
# 200. For container health checks in an image without curl (bash /dev/tcp).
# Usage: healthcheck PORT [PATH]; PATH defaults to /health/ready.
set -euo pipefail
port=${1:?usage: healthcheck PORT [PATH]}
path=${2:-/health/ready}
exec 3<>"/dev/tcp/127.0.0.1/${port}"
printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$path" >&3
IFS= read -r -t 5 status <&3
[[ $status == "HTTP/1."[01]" 200"* ]]
