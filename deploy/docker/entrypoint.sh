#!/bin/bash
# mp-entrypoint — for each secret setting given as a file (NAME_FILE=/path, the
# way docker-compose secrets and mounted Kubernetes Secrets arrive), export NAME
# with the file's content, then run the command. Only the names below: other
# *_FILE settings (SMS_FILE) are real settings of their own.
set -euo pipefail
for name in JWT_SIGNING_KEY SERVICE_KEY TRUSTED_KEYS ADMIN_PASSWORD DATABASE_URL AMQP_URL \
    REDIS_URL STRIPE_SECRET_KEY SMTP_PASSWORD SMS_AUTH_TOKEN; do
    file_var=${name}_FILE
    if [[ -n ${!file_var:-} ]]; then
        [[ -r ${!file_var} ]] || { echo "mp-entrypoint: $file_var=${!file_var} is not readable" >&2; exit 1; }
        export "$name=$(<"${!file_var}")"
        unset "$file_var"
    fi
done
exec "$@"
