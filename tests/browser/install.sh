#!/usr/bin/env bash
# Installs what the browser suite (tests/browser.rs) needs, outside the source tree:
#   - Debian's chromium and a font (apt-get, once; the suite runs it headless, --no-sandbox);
#   - playwright-core and axe-core, exactly as tests/browser/package-lock.json pins them (npm ci),
#     into GANTRY_BROWSER_DIR (default: $HOME/.cache/gantry/browser).
#
# Idempotent: a stamp records the lockfile installed; when it matches, npm is not run again.
# The last line printed on stdout is the node_modules directory.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
DIR="${GANTRY_BROWSER_DIR:-$HOME/.cache/gantry/browser}"
STAMP="$DIR/.gantry-browser.stamp"

if ! command -v chromium >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || { echo "install.sh: chromium is missing and there is no apt-get to install it" >&2; exit 1; }
  echo "installing Debian's chromium" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2
fi

command -v npm >/dev/null 2>&1 || { echo "install.sh: npm not found (need Node.js >= 20)" >&2; exit 1; }
WANT="$(sha256sum "$HERE/package-lock.json" | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" && -d "$DIR/node_modules/playwright-core" ]]; then
  echo "$DIR/node_modules"
  exit 0
fi
mkdir -p "$DIR"
rm -f "$STAMP"
cp "$HERE/package.json" "$HERE/package-lock.json" "$DIR/"
echo "installing playwright-core and axe-core into $DIR" >&2
# No browser download: the suite drives Debian's chromium.
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix "$DIR" --no-audit --no-fund --loglevel=error >&2
printf '%s\n' "$WANT" >"$STAMP"
echo "$DIR/node_modules"
