#!/usr/bin/env python3
"""Kong's config as deploy/kong/kong-jwt-key.sh renders it (offline: no Kong, no
services needed).

    check_kong_render.py RENDERED.yml [--kids KID,KID...] [--https-redirect CODE]
                         [--redis HOST:PORT[:tls]] [--redis-user USER]

--kids            the consumer's jwt_secrets are exactly these key ids (ES256, a
                  PEM public key each): every key of the JWKS reached Kong
--https-redirect  every route takes HTTPS only and answers plain HTTP with this
                  redirect status (prod); without it every route takes http too
--redis           every rate-limiting plugin (global and per route) counts in this
                  Redis; with :tls over TLS with certificate verification and SNI
--redis-user      every rate-limiting plugin logs in to Redis as this user, with
                  the password from Kong's environment (a vault reference
                  {vault://env/redis_<user>_password}, never a password in the file)
"""
import argparse
import sys

import yaml

failures = []


def fail(msg):
    failures.append(msg)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rendered")
    ap.add_argument("--kids")
    ap.add_argument("--https-redirect", type=int)
    ap.add_argument("--redis")
    ap.add_argument("--redis-user")
    a = ap.parse_args()
    conf = yaml.safe_load(open(a.rendered))

    secrets = [s for c in conf.get("consumers", []) for s in c.get("jwt_secrets", [])]
    for s in secrets:
        if s.get("algorithm") != "ES256" or "BEGIN PUBLIC KEY" not in s.get("rsa_public_key", ""):
            fail(f"jwt_secret {s.get('key')}: not an ES256 PEM public key")
    if a.kids is not None:
        want, got = sorted(a.kids.split(",")), sorted(s.get("key") for s in secrets)
        if want != got:
            fail(f"jwt_secrets hold the key ids {got}, expected {want}")

    routes = [r for s in conf.get("services", []) for r in s.get("routes", [])]
    if not routes:
        fail("no routes")
    for r in routes:
        protocols = r.get("protocols", ["http", "https"])
        if a.https_redirect:
            if protocols != ["https"] or r.get("https_redirect_status_code") != a.https_redirect:
                fail(f"route {r['name']}: protocols {protocols}, redirect {r.get('https_redirect_status_code')}; "
                     f"expected [https] with a {a.https_redirect} redirect for plain HTTP")
        elif "http" not in protocols:
            fail(f"route {r['name']}: protocols {protocols} take no plain HTTP (dev, compose)")

    if a.redis:
        host, port, *tls = a.redis.split(":")
        limits = [p for p in conf.get("plugins", []) if p["name"] == "rate-limiting"]
        limits += [p for r in routes for p in r.get("plugins", []) if p["name"] == "rate-limiting"]
        for p in limits:
            r = p["config"].get("redis", {})
            got = (r.get("host"), r.get("port"), bool(r.get("ssl")), bool(r.get("ssl_verify")), r.get("server_name"))
            want = (host, int(port), bool(tls), bool(tls), host if tls else None)
            if got != want:
                fail(f"a rate-limiting plugin counts in Redis {got} (host, port, ssl, ssl_verify, server_name), "
                     f"expected {want}")
        if not limits:
            fail("no rate-limiting plugin")
    if a.redis_user:
        limits = [p for p in conf.get("plugins", []) if p["name"] == "rate-limiting"]
        limits += [p for r in routes for p in r.get("plugins", []) if p["name"] == "rate-limiting"]
        ref = f"{{vault://env/redis_{a.redis_user}_password}}"
        for p in limits:
            r = p["config"].get("redis", {})
            # The Kong 3.x field names (redis.username / redis.password; the
            # redis_username / redis_password shorthands are deprecated).
            if r.get("username") != a.redis_user or r.get("password") != ref:
                fail(f"a rate-limiting plugin logs in to Redis as {r.get('username')!r} with password "
                     f"{'(none)' if not r.get('password') else 'a literal' if not str(r['password']).startswith('{vault://') else r['password']}, "
                     f"expected user {a.redis_user!r} with the password {ref} (env REDIS_{a.redis_user.upper()}_PASSWORD)")
            if any(k.startswith("redis_") for k in p["config"]):
                fail("a rate-limiting plugin sets deprecated redis_* fields; use config.redis")
        if not limits:
            fail("no rate-limiting plugin")

    print(f"kong render: {len(secrets)} user key(s), {len(routes)} routes"
          + (f", HTTPS only with {a.https_redirect}" if a.https_redirect else ", http and https")
          + (f", Redis {a.redis}" if a.redis else "")
          + (f" as {a.redis_user}" if a.redis_user else ""))
    if failures:
        print("\n".join("kong render: FAIL: " + f for f in failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
