#!/usr/bin/env python3
"""user_jwks.py (a step of scripts/test-deploy.sh): TRUSTED_JWKS: the user keys of a JWKS (what the customer service serves), printed as a JWKS."""
import json, sys  # the customer service's JWKS holds the user keys only
print(json.dumps({"keys": [k for k in json.load(open(sys.argv[1]))["keys"] if k["kid"].startswith("user-")]}))
