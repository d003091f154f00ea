#!/usr/bin/env bash
# install-deploy-tools.sh — the offline validators the deploy checks use
# (scripts/test-deploy.sh). Idempotent and non-interactive: installs only what
# is missing, with pinned versions where the registry allows it.
#
#   promtool, prometheus   Debian package prometheus (check config/rules, unit
#                          tests, and the live scrape of the running fleet)
#   docker-compose         Debian package docker-compose (`config` validation)
#   yamllint               Debian package yamllint
#   kubectl                Debian package kubernetes-client when no kubectl is
#                          installed (`kubectl kustomize` renders the overlays)
#   kubernetes-validate    PyPI, pinned (strict validation against the schemas)
set -euo pipefail

KUBERNETES_VALIDATE_VERSION=1.37.0

say() { printf 'install-deploy-tools: %s\n' "$*"; }
# shellcheck source-path=SCRIPTDIR source=infra.sh
. "$(dirname "${BASH_SOURCE[0]}")/infra.sh"

apt_pkgs=()
command -v promtool >/dev/null 2>&1 || apt_pkgs+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || apt_pkgs+=(docker-compose)
command -v yamllint >/dev/null 2>&1 || apt_pkgs+=(yamllint)
command -v kubectl >/dev/null 2>&1 || apt_pkgs+=(kubernetes-client)
if ((${#apt_pkgs[@]} > 0)); then
    # infra_apt_install: update once, non-interactive, no recommends (the prometheus
    # package must not pull in and start exporters), sudo -n without a terminal.
    infra_apt_install "${apt_pkgs[@]}"
    if [[ " ${apt_pkgs[*]} " == *" prometheus "* ]]; then
        # We run our own Prometheus on a free port with a temp config; the
        # packaged daemon (port 9090) is not wanted.
        (command -v systemctl >/dev/null && infra_as_root systemctl disable --now prometheus) >/dev/null 2>&1 || true
        (command -v service >/dev/null && infra_as_root service prometheus stop) >/dev/null 2>&1 || true
    fi
fi

PY=${PYTHON:-python3}
if ! "$PY" -c 'import kubernetes_validate' >/dev/null 2>&1 ||
    [[ $("$PY" -m pip show kubernetes-validate 2>/dev/null | sed -n 's/^Version: //p') != "$KUBERNETES_VALIDATE_VERSION" ]]; then
    say "pip install kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
    "$PY" -m pip install --quiet --disable-pip-version-check --no-input \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" ||
        "$PY" -m pip install --quiet --disable-pip-version-check --no-input --break-system-packages \
            "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
command -v kubernetes-validate >/dev/null 2>&1 || "$PY" -m kubernetes_validate --help >/dev/null 2>&1 ||
    { echo "install-deploy-tools: kubernetes-validate not runnable" >&2; exit 1; }
say "ok"
