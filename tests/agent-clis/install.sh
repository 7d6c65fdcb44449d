#!/usr/bin/env bash
# Installs the pinned coding-agent CLIs (Claude Code, Codex, Gemini CLI) from the npm registry
# into a cache directory outside the source tree, for tests that run the real binaries.
#
#   GANTRY_AGENT_CLI_DIR   where to install (default: $HOME/.cache/gantry/agent-clis)
#
# Idempotent: a stamp file records the installed versions; when it matches, nothing is done.
# The last line printed on stdout is the bin directory (DIR/node_modules/.bin).
set -euo pipefail

PACKAGES=(
  "@anthropic-ai/claude-code@2.1.330"
  "@openai/codex@0.169.0"
  "@google/gemini-cli@0.61.0"
)

DIR="${GANTRY_AGENT_CLI_DIR:-$HOME/.cache/gantry/agent-clis}"
BIN="$DIR/node_modules/.bin"
STAMP="$DIR/.gantry-agent-clis.stamp"
WANT="$(printf '%s\n' "${PACKAGES[@]}")"

have_all_bins() {
  [[ -x "$BIN/claude" && -x "$BIN/codex" && -x "$BIN/gemini" ]]
}

if [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$WANT" ]] && have_all_bins; then
  echo "$BIN"
  exit 0
fi

command -v npm >/dev/null 2>&1 || { echo "install.sh: npm not found (need Node.js >= 20)" >&2; exit 1; }

mkdir -p "$DIR"
rm -f "$STAMP"
echo "installing ${PACKAGES[*]} into $DIR" >&2
# npm's progress and notices go to stderr so the last stdout line stays the bin directory.
npm install --prefix "$DIR" --no-audit --no-fund --save-exact --loglevel=error "${PACKAGES[@]}" >&2

have_all_bins || { echo "install.sh: expected claude, codex and gemini in $BIN" >&2; exit 1; }
printf '%s\n' "$WANT" >"$STAMP"
echo "$BIN"
