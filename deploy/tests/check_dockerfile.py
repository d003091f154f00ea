#!/usr/bin/env python3
"""check_dockerfile.py (a step of scripts/test-deploy.sh): The Dockerfile: multi-stage, a numeric non-root USER in the final stage, every COPY source present."""
import re, pathlib
text = pathlib.Path("Dockerfile").read_text()
stages = re.findall(r"(?m)^FROM\s+\S+(?:\s+AS\s+(\S+))?", text)
assert len(stages) >= 2, "Dockerfile: not multi-stage"
final = text[text.rfind("\nFROM "):]
user = re.search(r"(?m)^USER\s+(\d+)", final)
assert user and int(user.group(1)) != 0, "Dockerfile: the final stage must run as a numeric non-root USER"
for src in re.findall(r"(?m)^COPY\s+(?!--from)(.+)\s+\S+$", text):
    for path in src.split():
        assert pathlib.Path(path).exists(), f"Dockerfile: COPY {path}: no such path"
ignore = pathlib.Path(".dockerignore").read_text()
for path in re.findall(r"(?m)^COPY\s+(?!--from)(.+)\s+\S+$", text):
    for p in path.split():
        top = p.split("/")[0]
        assert f"!{top}" in ignore, f".dockerignore excludes {p}, which the Dockerfile copies"
for svc in ("cart", "customer", "inventory", "notification", "order", "vendor"):
    assert f"-p {svc}" in text, f"Dockerfile: {svc} is not built"
print(f"Dockerfile: {len(stages)} stages, final stage runs as user {user.group(1)}, every COPY source exists")
