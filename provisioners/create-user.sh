#!/bin/sh
# Create a login user with a home directory and, optionally, one authorized SSH key.
#   USER_NAME (required), USER_SHELL (default /bin/bash), USER_GROUPS (comma list, optional),
#   USER_SSH_KEY (an authorized_keys line, optional). Idempotent.
set -eu
: "${USER_NAME:?USER_NAME is required}"
USER_SHELL="${USER_SHELL:-/bin/bash}"

if ! id "$USER_NAME" >/dev/null 2>&1; then
  useradd --create-home --shell "$USER_SHELL" --user-group "$USER_NAME"
  echo "created user $USER_NAME"
fi
if [ -n "${USER_GROUPS:-}" ]; then
  usermod --append --groups "$USER_GROUPS" "$USER_NAME"
fi
# Locked password: key login only.
usermod --lock "$USER_NAME"
if [ -n "${USER_SSH_KEY:-}" ]; then
  home=$(getent passwd "$USER_NAME" | cut -d: -f6)
  install -d -m 0700 -o "$USER_NAME" -g "$USER_NAME" "$home/.ssh"
  printf '%s\n' "$USER_SSH_KEY" >"$home/.ssh/authorized_keys"
  chown "$USER_NAME:$USER_NAME" "$home/.ssh/authorized_keys"
  chmod 0600 "$home/.ssh/authorized_keys"
fi
