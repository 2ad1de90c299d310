#!/bin/sh
# Writes the basic-auth settings (its user store's URI holds a password, so it is not baked into
# the image), then runs the command: `mlflow server ...`.
set -eu
: "${MLFLOW_AUTH_DATABASE_URI:?set MLFLOW_AUTH_DATABASE_URI}"
umask 077
cat > "$HOME/basic_auth.ini" <<INI
[mlflow]
default_permission = EDIT
database_uri = ${MLFLOW_AUTH_DATABASE_URI}
admin_username = ${MLFLOW_AUTH_ADMIN_USER:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = ${MLFLOW_AUTH_CACHE_TTL:-300}
INI
export MLFLOW_AUTH_CONFIG_PATH="$HOME/basic_auth.ini"
exec "$@"
