#!/usr/bin/env bash
# Credentials for a TLS + SuperNode-authenticated federation (what docker/with-tls.yml mounts):
# a private CA, the SuperLink's and every SuperNode's server certificate, one EC P-384
# authentication key pair per SuperNode (OpenSSH format) and the SuperExec shared secret.
#
#   docker/generate_certs.sh [OUT_DIR] [--supernodes N] [--superlink-host HOST_OR_IP ...] [--overwrite]
#
# OUT_DIR defaults to docker/credentials. --superlink-host adds a name or address boards use to
# reach the SuperLink (repeat it for several). Existing files are kept, so registered keys stay
# valid. Implementation: python -m amp_fl.deployment.credentials (the `cryptography` package, a
# Flower dependency); the project's .venv is used when present, else $PYTHON or python3.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
if [[ -n "${PYTHON:-}" ]]; then
    py="$PYTHON"
elif [[ -x "$root/.venv/bin/python" ]]; then
    py="$root/.venv/bin/python"
else
    py=python3
fi
out="$here/credentials"
if [[ $# -gt 0 && "$1" != -* ]]; then
    out="$1"
    shift
fi
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "$py" -m amp_fl.deployment.credentials "$out" "$@"
