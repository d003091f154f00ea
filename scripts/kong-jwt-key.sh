#!/usr/bin/env bash
# kong-jwt-key.sh — renders the customer service's public user keys into Kong's
# declarative config. The script lives beside the config it renders, in
# deploy/kong/kong-jwt-key.sh (one copy: the Kubernetes base ships both files from
# that kustomization root); this entry point only runs it. See its header for the
# arguments:
#
#   scripts/kong-jwt-key.sh [--jwks-url URL | --jwks-file FILE] [--in kong.yml] [--out FILE]
set -euo pipefail
exec bash "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/deploy/kong/kong-jwt-key.sh" "$@"
