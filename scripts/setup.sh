#!/usr/bin/env bash
# Installs what the build and the tests need, only when missing:
#   the wasm32 target, wasm-pack, wasm-bindgen-cli at exactly the pinned wasm-bindgen version,
#   the npm dev dependencies (binaryen's wasm-opt, playwright-core, typescript), and with
#   `--browser` Debian's Chromium for the browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
say() { printf '\033[1msetup:\033[0m %s\n' "$*" >&2; }

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  say "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

if ! command -v wasm-pack >/dev/null 2>&1; then
  say "installing wasm-pack (a few minutes)"
  cargo install --locked wasm-pack
fi

want=$(sed -n 's/^wasm-bindgen = "=\(.*\)"/\1/p' Cargo.toml | head -1)
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" != "$want" ]; then
  say "installing wasm-bindgen-cli $want (a few minutes)"
  # Its lock file may name a crate version the registry mirror lacks: then resolve afresh.
  cargo install --locked --force wasm-bindgen-cli --version "$want" ||
    cargo install --force wasm-bindgen-cli --version "$want"
fi

if [ ! -x node_modules/.bin/wasm-opt ] || [ ! -x node_modules/.bin/tsc ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm dev dependencies"
  npm ci --no-audit --no-fund
fi

if [ "${1:-}" = "--browser" ] && [ ! -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ]; then
  say "installing Debian's chromium for the browser tests"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
