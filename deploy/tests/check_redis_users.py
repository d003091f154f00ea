#!/usr/bin/env python3
"""check_redis_users.py (a step of scripts/test-deploy.sh): PORT ACL_JSON: against a redis-server started with the rendered ACL file, each service's user may run only what its rules allow."""
import json, socket, sys, time
port, acl = int(sys.argv[1]), json.load(open(sys.argv[2]))
def call(*cmds, user=None):
    """Sends the commands on one connection (after AUTH user), returns the replies' first lines."""
    for _ in range(50):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            break
        except OSError:
            time.sleep(0.1)
    if user:
        cmds = (("AUTH", user, f"test-{user.removeprefix('mp-')}-pw"),) + cmds
    s.sendall(b"".join(b"*%d\r\n" % len(c) + b"".join(b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in c)
                       for c in cmds))
    f, out = s.makefile("rb"), []
    for _ in cmds:
        line = f.readline().decode().rstrip()
        if line[:1] == "$" and line != "$-1":
            f.readline()
        out.append(line)
    s.close()
    return out[1:] if user else out
fails = []
def expect(got, want, what):
    if not got.startswith(want):
        fails.append(f"{what}: {got!r}, expected {want}")
expect(call(("PING",))[0], "-NOAUTH", "no user (default is off): PING")
expect(call(("AUTH", "default", ""))[0], "-WRONGPASS", "AUTH as default")
expect(call(("PING",), user="mp-order")[0], "+PONG", "mp-order: PING")
for cmd in (("SET", "mp:auth:session:x", "forged"), ("DEL", "mp:auth:revoked:x"), ("GET", "mp:inv:x"), ("FLUSHALL",),
            ("KEYS", "*"), ("CONFIG", "GET", "*"), ("ACL", "LIST")):
    expect(call(cmd, user="mp-order")[0], "-NOPERM", f"mp-order: {' '.join(cmd)}")
expect(call(("GET", "mp:auth:session:x"), user="mp-order")[0], "$", "mp-order: GET a session")
expect(call(("SET", "mp:auth:session:x", "1"), user="mp-customer")[0], "+OK", "mp-customer: SET a session")
expect(call(("SET", "mp:inv:x", "1"), user="mp-inventory")[0], "+OK", "mp-inventory: SET its key")
expect(call(("PUBLISH", "mp:vendor:x", "1"), user="mp-vendor")[0], ":", "mp-vendor: PUBLISH on its channel")
expect(call(("INCR", "ratelimit:x"), user="kong")[0], ":", "kong: INCR its counter")
expect(call(("GET", "mp:auth:session:x"), user="kong")[0], "-NOPERM", "kong: GET a session")
if fails:
    sys.exit("redis-acl: FAIL: " + "; ".join(fails))
print(f"redis-acl: redis-server {port} loads the ACL file: default off, {len(acl)} users, each to its own keys")
