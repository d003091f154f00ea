#!/usr/bin/env python3
"""Per-service Redis users: generate, check and render deploy/redis/acl.json.

    redis_acl.py render BIN_DIR > deploy/redis/acl.json
        the rules of each service's user from `<service> redis-user --json`, and
        Kong's from `customer redis-user --kong --json` (the service binaries are
        the one source of truth; REDIS_PREFIX=mp, the default every deployment
        here uses)
    redis_acl.py check BIN_DIR deploy/redis/acl.json
        fails when the file is not what the binaries give (scripts/test-deploy.sh)
    redis_acl.py acl-file deploy/redis/acl.json [--out FILE] [--chown UID:GID]
        a Redis ACL file (redis-server --aclfile FILE): `user default off`, then
        `user mp-<service> on #<sha256> <rules>` for each service and
        `user kong on #<sha256> <rules>`, the passwords from REDIS_<SERVICE>_PASSWORD
        and REDIS_KONG_PASSWORD (stored hashed: no password in the file). --out
        writes the file (mode 0600, replaced atomically); docker-compose's step
        redis-acl and the dev overlay's Redis init container run this.
    redis_acl.py commands deploy/redis/acl.json
        the same users as `ACL SETUSER` lines for redis-cli, for a Redis whose
        users an operator sets up by hand (a managed Redis that takes ACL
        commands): ... | redis-cli --tls -h HOST -p PORT --user ADMIN --askpass

acl.json: {"<service>": [rules...], ..., "kong": [rules...]}; the user of
service S is mp-S, Kong's is kong. Needs python3 only (no Redis library).
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile

def service_names():
    """From deploy/services.txt (render and check run in the repository; acl-file, in a
    container, takes the users acl.json holds)."""
    sys.dont_write_bytecode = True  # no __pycache__ in deploy/
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import services
    return services.names()
PREFIX = "mp"  # REDIS_PREFIX: the services' default; acl.json is for it


def user_name(name):
    return "kong" if name == "kong" else f"mp-{name}"


def password_var(name):
    return f"REDIS_{name.upper()}_PASSWORD"


def rules_of(binary, *args):
    env = {**os.environ, "REDIS_PREFIX": PREFIX}
    try:
        out = subprocess.run([binary, "redis-user", "--json", *args], check=True, capture_output=True,
                             text=True, env=env).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit(f"redis-acl: {binary} redis-user --json {' '.join(args)} failed "
                 f"(a build without `redis-user`?): {getattr(e, 'stderr', '') or e}")
    rules = json.loads(out)
    if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules) or not rules:
        sys.exit(f"redis-acl: {binary} redis-user printed no list of rules: {out!r}")
    return rules


def render(bin_dir):
    doc = {svc: rules_of(os.path.join(bin_dir, svc)) for svc in service_names()}
    doc["kong"] = rules_of(os.path.join(bin_dir, "customer"), "--kong")
    return doc


def dump(doc):
    # One user per line: reviewable diffs, and still plain JSON.
    lines = [f"  {json.dumps(name)}: {json.dumps(rules)}" for name, rules in doc.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def load(path, want=None):
    """The users of `path`, checked; with `want` (the names expected), exactly those."""
    with open(path) as f:
        doc = json.load(f)
    if want is None:
        want = list(doc)
        if "kong" not in want:
            sys.exit(f"redis-acl: {path} holds no user kong")
    if sorted(doc) != sorted(want):
        sys.exit(f"redis-acl: {path} holds {sorted(doc)}, expected {sorted(want)}")
    for name, rules in doc.items():
        if not isinstance(rules, list) or not all(isinstance(r, str) and r and " " not in r for r in rules):
            sys.exit(f"redis-acl: {path}: {name}: the rules must be a list of single words")
        # A rule list that does not start from nothing could keep rights the
        # user had before (ACL SETUSER adds to a user).
        if rules[:3] != ["resetkeys", "resetchannels", "-@all"]:
            sys.exit(f"redis-acl: {path}: {name}: the rules must start with resetkeys resetchannels -@all")
        bad = [r for r in rules if r in ("nopass", "allkeys", "allchannels", "allcommands", "+@all", "~*", "&*")
               or r.startswith((">", "<", "#", "!"))]
        if bad:
            sys.exit(f"redis-acl: {path}: {name}: rules {bad} do not belong there (passwords come from the "
                     "environment, and no user may reach every key or command)")
    return {name: doc[name] for name in want}


def passwords(names):
    out, missing = {}, []
    for name in names:
        pw = os.environ.get(password_var(name), "")
        if not pw:
            missing.append(password_var(name))
        elif any(c.isspace() for c in pw):
            sys.exit(f"redis-acl: {password_var(name)} holds white space")
        out[name] = pw
    if missing:
        sys.exit(f"redis-acl: {', '.join(missing)} not set (scripts/deploy-secrets.sh adds them to secrets.env)")
    return out


def acl_lines(doc, setuser=False):
    """One line per user: the ACL file's `user NAME on #SHA256 RULES`, or with
    setuser the redis-cli command `ACL SETUSER NAME reset on #SHA256 RULES`."""
    pw = passwords(doc)
    head = "ACL SETUSER {} reset on" if setuser else "user {} on"
    return [f"{head.format(user_name(name))} #{hashlib.sha256(pw[name].encode()).hexdigest()} {' '.join(rules)}"
            for name, rules in doc.items()]


def acl_file(doc):
    # Redis takes no comments in an ACL file. `user default off`: no client gets
    # in without a user and password of its own.
    return "\n".join(["user default off", *acl_lines(doc)]) + "\n"


def write(path, text, owner=None):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".acl.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        if owner:
            uid, _, gid = owner.partition(":")
            os.chown(tmp, int(uid), int(gid or uid))
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv):
    cmd = argv[0] if argv else ""
    if cmd == "render" and len(argv) == 2:
        sys.stdout.write(dump(render(argv[1])))
    elif cmd == "check" and len(argv) == 3:
        want, have = render(argv[1]), load(argv[2], service_names() + ["kong"])
        if want != have:
            diff = [n for n in want if want[n] != have.get(n)]
            sys.exit(f"redis-acl: {argv[2]} is stale for {diff}: run "
                     f"`python3 deploy/redis/redis_acl.py render {argv[1]} > {argv[2]}`")
        print(f"redis-acl: {argv[2]} matches the services' redis-user output ({len(want)} users)")
    elif cmd == "acl-file" and len(argv) >= 2:
        out = owner = None
        rest = argv[2:]
        while rest:
            if rest[0] == "--out" and len(rest) > 1:
                out, rest = rest[1], rest[2:]
            elif rest[0] == "--chown" and len(rest) > 1:
                owner, rest = rest[1], rest[2:]
            else:
                sys.exit(__doc__)
        text = acl_file(load(argv[1]))
        if out:
            write(out, text, owner)
            print(f"redis-acl: {out}: default off, {len(text.splitlines()) - 1} users "
                  f"({', '.join(user_name(n) for n in load(argv[1]))})", file=sys.stderr)
        else:
            sys.stdout.write(text)
    elif cmd == "commands" and len(argv) == 2:
        print("\n".join(acl_lines(load(argv[1]), setuser=True)))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
