"""The services, their default ports and schemas, in start order, as
deploy/services.txt lists them (generated from the event catalog's Service)."""
from pathlib import Path

FILE = Path(__file__).resolve().parent / "services.txt"


def ports():
    """{name: default port}, in start order."""
    out = {}
    for line in FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, port, _schema = line.split()
            out[name] = int(port)
    return out


def names():
    return list(ports())
