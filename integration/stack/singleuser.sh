#!/usr/bin/env bash
# Single-user server for the demo and tests: records the environment the hub
# gave the server (mode 0600, so tests can check the pre-spawn hook's token),
# then runs the real jupyterhub-singleuser.
set -euo pipefail
umask 077
env > "$TK_STATE_DIR/env-$JUPYTERHUB_USER"
extra=()
[[ $(id -u) == 0 ]] && extra+=(--allow-root)  # CI machines run as root
exec "$TK_VENV/bin/jupyterhub-singleuser" "${extra[@]}" "$@"
