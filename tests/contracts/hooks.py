"""Authentication for the contract tests: each operation gets the role it is meant for.

scripts/contracts.sh loads this file (SCHEMATHESIS_HOOKS) and sets:

  MP_CUSTOMER_URL     the customer service, where accounts are made and logins happen
  MP_VENDOR_URL       the vendor service, where the vendor member's vendor is made
  MP_ADMIN_EMAIL      the admin the fleet bootstrapped (.local/admin.env)
  MP_ADMIN_PASSWORD
  MP_SERVICE_BIN      the cart binary, whose `service-token --to <service>` command prints a token
  MP_SERVICE_TARGET   the service under test (the audience of those tokens)
  MP_SERVICE_KEY_FILE the cart service's SERVICE_KEY

Roles by path:

  /api/internal/..., /api/reservations...    a service token (cart)
  /api/admin/...                             the admin
  /api/vendors..., /api/products...,
  /api/inventory..., /api/orders/{id}/ship,
  /api/orders/{id}/deliver                   a member of a vendor made for this run
  /api/auth/logout                           a session of its own, opened for each call,
                                             so logging out never ends the others
  everything else                            a customer made for this run

The identities are made once per run with random emails. Their logins send an
X-Forwarded-For address of their own: the failed logins Schemathesis itself sends
from 127.0.0.1 are throttled per address and must not lock the run out.
"""

import base64
import json
import os
import secrets
import subprocess
import threading
import time

import requests
import schemathesis

CUSTOMER_URL = os.environ["MP_CUSTOMER_URL"]
VENDOR_URL = os.environ["MP_VENDOR_URL"]
TIMEOUT = 30
# TEST-NET-2 (RFC 5737): never a real client.
CLIENT_ADDRESS = "198.51.100.7"
RUN = secrets.token_hex(4)

_lock = threading.Lock()
_accounts: dict[str, tuple[str, str]] = {}


def _post(url: str, body: dict, token: str | None = None) -> requests.Response:
    headers = {"X-Forwarded-For": CLIENT_ADDRESS}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.post(url, json=body, headers=headers, timeout=TIMEOUT)


def _login(email: str, password: str) -> str:
    response = _post(f"{CUSTOMER_URL}/api/auth/login", {"email": email, "password": password})
    response.raise_for_status()
    return response.json()["access_token"]


def _account(role: str) -> tuple[str, str]:
    """An account made for this run (registered once, then reused)."""
    with _lock:
        if role not in _accounts:
            email = f"contracts-{role}-{RUN}@example.org"
            password = f"contract run {RUN} {role} secret"
            response = _post(
                f"{CUSTOMER_URL}/api/customers",
                {"email": email, "password": password, "name": f"Contracts {role}"},
            )
            response.raise_for_status()
            _accounts[role] = (email, password)
        return _accounts[role]


def _claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _vendor_member_token() -> str:
    email, password = _account("vendor")
    token = _login(email, password)
    if not _claims(token).get("vendors"):
        response = _post(
            f"{VENDOR_URL}/api/vendors",
            {"name": f"Contracts {RUN}", "email": f"contracts-shop-{RUN}@example.org"},
            token,
        )
        response.raise_for_status()
        # The membership reaches the customer service as an event; a login after that
        # carries it.
        deadline = time.monotonic() + 60
        while not _claims(token).get("vendors"):
            if time.monotonic() > deadline:
                raise RuntimeError("the vendor membership never reached the customer service")
            time.sleep(0.5)
            token = _login(email, password)
    return token


def _bearer(case, token: str) -> None:
    case.headers = case.headers or {}
    case.headers["Authorization"] = f"Bearer {token}"


# Tokens live 15 minutes; refreshing every 5 keeps them valid for any run.
@schemathesis.auth(refresh_interval=300).apply_to(path_regex=r"^/api/(internal|reservations)(/|$)")
class ServiceAuth:
    def get(self, case, context):
        with open(os.environ["MP_SERVICE_KEY_FILE"]) as key:
            env = {**os.environ, "SERVICE_KEY": key.read()}
        # A service token names the one service it is for: the one under test.
        command = [os.environ["MP_SERVICE_BIN"], "service-token", "--to", os.environ["MP_SERVICE_TARGET"]]
        return subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout.strip()

    def set(self, case, data, context):
        _bearer(case, data)


@schemathesis.auth(refresh_interval=300).apply_to(path_regex=r"^/api/admin(/|$)")
class AdminAuth:
    def get(self, case, context):
        return _login(os.environ["MP_ADMIN_EMAIL"], os.environ["MP_ADMIN_PASSWORD"])

    def set(self, case, data, context):
        _bearer(case, data)


@schemathesis.auth(refresh_interval=300).apply_to(
    path_regex=r"^/api/(vendors|products|inventory)(/|$)|^/api/orders/\{[^}]+\}/(ship|deliver)$"
)
class VendorMemberAuth:
    def get(self, case, context):
        return _vendor_member_token()

    def set(self, case, data, context):
        _bearer(case, data)


# No caching: every logout ends a session opened for it alone.
@schemathesis.auth(refresh_interval=None).apply_to(path="/api/auth/logout")
class LogoutAuth:
    def get(self, case, context):
        return _login(*_account("customer"))

    def set(self, case, data, context):
        _bearer(case, data)


# Registered last, so it gets every operation the providers above did not take.
@schemathesis.auth(refresh_interval=300)
class CustomerAuth:
    def get(self, case, context):
        return _login(*_account("customer"))

    def set(self, case, data, context):
        _bearer(case, data)


@schemathesis.hook
def map_case(context, case):
    """A page cursor is opaque: only a value the API returned is valid, which no schema
    can say. Generated "valid" cursors are dropped (the first page is asked for); the
    negative cases keep theirs and must be refused."""
    meta = case.meta
    if meta is not None and meta.generation.mode.is_positive and case.query and "cursor" in case.query:
        del case.query["cursor"]
    return case
