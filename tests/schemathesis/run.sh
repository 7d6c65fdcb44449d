#!/usr/bin/env bash
# Fuzz a running gantry against its own OpenAPI document with schemathesis.
#
#   tests/schemathesis/run.sh BASE_URL API_KEY [EXTRA_SCHEMATHESIS_RUN_ARGS...]
#
# e.g. tests/schemathesis/run.sh http://127.0.0.1:8080 "$KEY" --seed 1
#
# Installs a pinned schemathesis into ${GANTRY_CACHE:-$HOME/.cache/gantry}/schemathesis (once),
# fetches BASE_URL/openapi.json, and tests the clinvk-compatible and system operations
# (/api/v1/backends, /api/v1/sessions..., /api/v1/prompt, /health, /metrics, /openapi.json):
# no 5xx, and every status code, content type and response body as the document declares.
# Exits non-zero on any failure. Needs python3 >= 3.11 (or PYTHON=/path/to/python3.11+) and curl.
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5
# The operations tested (SCHEMATHESIS_INCLUDE, a regex over paths, to choose others).
# /api/v1/parallel, /chain and /compare are left out by default to keep it fast.
INCLUDE=${SCHEMATHESIS_INCLUDE:-'^/(api/v1/(backends|sessions|prompt)|health|metrics|openapi\.json)'}
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-25}

if [[ $# -lt 2 ]]; then
    echo "usage: $0 BASE_URL API_KEY [EXTRA_SCHEMATHESIS_RUN_ARGS...]" >&2
    exit 2
fi
base_url=${1%/}
api_key=$2
shift 2

venv="${GANTRY_CACHE:-$HOME/.cache/gantry}/schemathesis"
python=${PYTHON:-python3}

installed_version() {
    "$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null || true
}

if [[ "$(installed_version)" != "$SCHEMATHESIS_VERSION" ]]; then
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "schemathesis $SCHEMATHESIS_VERSION needs Python >= 3.11; set PYTHON to one" >&2
        exit 2
    fi
    echo "==> installing schemathesis $SCHEMATHESIS_VERSION into $venv"
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv --clear "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "==> fetching $base_url/openapi.json"
status=$(curl -sS -o "$work/openapi.json" -w '%{http_code}' \
    -H "Authorization: Bearer $api_key" "$base_url/openapi.json") || {
    echo "cannot reach $base_url" >&2
    exit 1
}
if [[ $status != 200 ]]; then
    echo "GET $base_url/openapi.json answered $status:" >&2
    head -c 2000 "$work/openapi.json" >&2
    echo >&2
    exit 1
fi

echo "==> schemathesis $SCHEMATHESIS_VERSION against $base_url (up to $MAX_EXAMPLES examples per operation)"
# Run from the scratch directory: nothing (reports, example databases) lands in the caller's tree.
cd "$work"
set +e
"$venv/bin/schemathesis" run "$work/openapi.json" \
    --url "$base_url" \
    --include-path-regex "$INCLUDE" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --header "Authorization: Bearer $api_key" \
    --generation-with-security-parameters false \
    --phases examples,coverage,fuzzing \
    --max-examples "$MAX_EXAMPLES" \
    --no-shrink \
    --generation-database none \
    --request-timeout 60 \
    --workers 1 \
    "$@"
code=$?
set -e
if [[ $code -eq 0 ]]; then
    echo "==> schemathesis: no failures"
else
    echo "==> schemathesis: FAILED (exit $code)" >&2
fi
exit "$code"
