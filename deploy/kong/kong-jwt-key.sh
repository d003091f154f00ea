#!/usr/bin/env bash
# kong-jwt-key.sh — put the customer service's public user keys into Kong's
# declarative config, so Kong's jwt plugin verifies tokens at the edge.
#
#   deploy/kong/kong-jwt-key.sh [--jwks-url URL | --jwks-file FILE] [--in kong.yml] [--out FILE]
#   (scripts/kong-jwt-key.sh runs this file; it lives beside kong.yml so that the
#   Kubernetes base ships both from one kustomization root, deploy/kong/)
#
# Reads the JWKS (default: $JWKS_URL, else http://127.0.0.1:5000/.well-known/jwks.json),
# turns every ES256 key into a PEM public key, and replaces the block between
# "# BEGIN jwt_secrets" and "# END jwt_secrets" of the input (default
# kong.yml beside this script, which holds a placeholder key) with one jwt_secret per key:
# `key` = the key id (`kid`, which Kong's jwt plugin reads from the token header
# because key_claim_name is kid), algorithm ES256, rsa_public_key = the PEM.
# Writes to --out (default: stdout). Waits up to KONG_JWKS_WAIT seconds (default
# 60) for the JWKS to answer, so it can run as an init step beside the service.
#
# KONG_REDIS_URL (redis://HOST:PORT or rediss://HOST:PORT, e.g. the services'
# REDIS_URL), when set, rewrites the rate-limiting plugins' Redis (host redis,
# port 6379 in the file): host and port from the URL, and for rediss:// TLS with
# certificate verification and the host as SNI server_name, e.g. for a managed
# Redis in production. KONG_REDIS_HOST, KONG_REDIS_PORT and KONG_REDIS_SSL=true
# set the parts one by one (they win over the URL). A user and password in the
# URL are ignored: kong.yml logs in as Kong's own Redis user kong with the
# password Kong reads from its environment (REDIS_KONG_PASSWORD, through the
# env vault reference {vault://env/redis_kong_password}), so no password is
# ever written into the rendered file.
#
# KONG_HTTPS_REDIRECT=308 (prod, where Kong terminates TLS): every route takes
# HTTPS only (protocols: [https]) and Kong answers a plain-HTTP request with
# that redirect status and a Location on https:// (301, 302, 307 or 308; 308
# keeps the method and body).
#
# Key rotation: Kong knows the keys of the JWKS it read when this ran (Kong's
# start), nothing later. The customer service publishes every user key it
# trusts, so publish a new key (TRUSTED_KEYS) and run this again (restart the
# Kong pods / the kong-config compose step) BEFORE the customer service signs
# with it: scripts/rotate-user-key.sh, deploy/README.md "Key rotation". The
# last line on stderr names the key ids written.
# Needs bash, curl or python3 only (no YAML or crypto libraries).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
jwks_url=${JWKS_URL:-http://127.0.0.1:5000/.well-known/jwks.json}
jwks_file=
in=$here/kong.yml
out=
while (($#)); do
    case $1 in
    --jwks-url) jwks_url=$2; shift 2 ;;
    --jwks-file) jwks_file=$2; shift 2 ;;
    --in) in=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h | --help) sed -n '2,20p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "kong-jwt-key: unknown argument $1" >&2; exit 2 ;;
    esac
done

exec python3 - "$in" "${out:--}" "$jwks_url" "$jwks_file" "${KONG_JWKS_WAIT:-60}" <<'PY'
import base64, json, sys, time, urllib.request

src, out, url, jwks_file, wait = sys.argv[1:6]

def b64url(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))

def load_jwks():
    if jwks_file:
        with open(jwks_file) as f:
            return json.load(f)
    deadline = time.monotonic() + float(wait)
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.load(r)
        except Exception as e:  # not up yet
            if time.monotonic() > deadline:
                sys.exit(f"kong-jwt-key: could not fetch {url}: {e}")
            time.sleep(2)

# SubjectPublicKeyInfo prefix of an uncompressed P-256 point (id-ecPublicKey, prime256v1).
P256_SPKI = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200")

def pem_of(jwk):
    x, y = b64url(jwk["x"]), b64url(jwk["y"])
    if len(x) != 32 or len(y) != 32:
        raise ValueError(f"key {jwk.get('kid')}: not a P-256 point")
    der = P256_SPKI + b"\x04" + x + y
    body = base64.b64encode(der).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN PUBLIC KEY-----\n" + "\n".join(lines) + "\n-----END PUBLIC KEY-----"

keys = [k for k in load_jwks().get("keys", [])
        if k.get("kty") == "EC" and k.get("crv") == "P-256" and k.get("kid")]
if not keys:
    sys.exit("kong-jwt-key: the JWKS holds no ES256 key with a kid")

with open(src) as f:
    text = f.read()
begin, end = text.find("# BEGIN jwt_secrets"), text.find("# END jwt_secrets")
if begin < 0 or end < begin:
    sys.exit(f"kong-jwt-key: {src} has no '# BEGIN jwt_secrets' ... '# END jwt_secrets' block")
line_start = text.rfind("\n", 0, begin) + 1
indent = text[line_start:begin]
block = [f"# BEGIN jwt_secrets (rendered by scripts/kong-jwt-key.sh from {jwks_file or url})"]
for k in keys:
    block.append(f"- key: {k['kid']}")
    block.append("  algorithm: ES256")
    block.append("  rsa_public_key: |")
    block.extend("    " + l for l in pem_of(k).splitlines())
rendered = text[:line_start] + "\n".join(indent + l for l in block) + "\n" + indent + text[end:]

import os, re
from urllib.parse import urlsplit
host = port = ssl = ""
if os.environ.get("KONG_REDIS_URL"):
    u = urlsplit(os.environ["KONG_REDIS_URL"])
    if u.scheme not in ("redis", "rediss") or not u.hostname:
        sys.exit(f"kong-jwt-key: KONG_REDIS_URL must be redis://HOST[:PORT] or rediss://HOST[:PORT]")
    host, port = u.hostname, str(u.port or 6379)
    ssl = "true" if u.scheme == "rediss" else ""
host = os.environ.get("KONG_REDIS_HOST") or host
port = os.environ.get("KONG_REDIS_PORT") or port
ssl = os.environ.get("KONG_REDIS_SSL") or ssl
if host:
    rendered = re.sub(r"(?m)^(\s+)host: redis$", lambda m: f"{m.group(1)}host: {host}", rendered)
if port or ssl == "true":
    def redis_port(m):
        line = f"{m.group(1)}port: {port or m.group(2)}"
        if ssl == "true":  # verify the certificate, and send the host name (SNI)
            line += f"\n{m.group(1)}ssl: true\n{m.group(1)}ssl_verify: true\n{m.group(1)}server_name: {host or 'redis'}"
        return line
    rendered = re.sub(r"(?m)^(\s+)port: (6379)$", redis_port, rendered)

redirect = os.environ.get("KONG_HTTPS_REDIRECT", "")
if redirect:
    if redirect not in ("301", "302", "307", "308"):
        sys.exit("kong-jwt-key: KONG_HTTPS_REDIRECT must be 301, 302, 307 or 308 (Kong sets Location for those)")
    rendered, n = re.subn(r"(?m)^(\s+)protocols: \[http, https\]$",
                          lambda m: f"{m.group(1)}protocols: [https]\n{m.group(1)}https_redirect_status_code: {redirect}",
                          rendered)
    if n == 0:
        sys.exit("kong-jwt-key: KONG_HTTPS_REDIRECT: no route with 'protocols: [http, https]' in " + src)

if out == "-":
    sys.stdout.write(rendered)
else:
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write(rendered)
    import os
    os.replace(tmp, out)
    print(f"kong-jwt-key: {len(keys)} key(s) written to {out}: {', '.join(k['kid'] for k in keys)}", file=sys.stderr)
PY
