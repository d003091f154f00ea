#!/usr/bin/env python3
"""check_rotation_calls.py (a step of scripts/test-deploy.sh): CALLS: the stand-in kubectl's log of a key rotation's publish, in the order that keeps tokens verifiable."""
import sys
calls = open(sys.argv[1]).read().splitlines()
at = lambda s: next(i for i, c in enumerate(calls) if s in c)
assert at("apply -k") < at("rollout status deployment/customer") < at("rollout restart deployment/kong") \
    < at("rollout status deployment/kong") < at("logs"), calls
