#!/usr/bin/env bash
# Builds pkg/: the npm package `fleetgate` — the wasm engine built by wasm-pack for Node
# (pkg/node) and for browsers/workers (pkg/web), joined by the JS wrapper and the types in js/.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$HOME/.cargo/bin:$PATH"

rm -rf pkg
for target in nodejs web; do
  out=$([ "$target" = nodejs ] && echo node || echo web)
  # Size matters more than speed for the .wasm download; the native build keeps opt-level 3.
  wasm-pack build --profile wasm --target "$target" --out-dir "pkg/$out" \
    --out-name fleetgate --no-pack . >&2
  rm -f "pkg/$out/.gitignore"
done
echo '{"type": "commonjs"}' > pkg/node/package.json
echo '{"type": "module"}' > pkg/web/package.json
cp js/engine.js js/node.mjs js/web.js js/index.d.ts pkg/
cp README.md pkg/README.md 2>/dev/null || true
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
cat > pkg/package.json <<JSON
{
  "name": "fleetgate",
  "version": "$version",
  "description": "Permission engine for multi-tenant IoT fleets (WebAssembly)",
  "license": "Apache-2.0",
  "type": "module",
  "main": "./node.mjs",
  "module": "./web.js",
  "browser": "./web.js",
  "types": "./index.d.ts",
  "exports": {
    ".": {
      "types": "./index.d.ts",
      "node": "./node.mjs",
      "workerd": "./web.js",
      "worker": "./web.js",
      "browser": "./web.js",
      "default": "./web.js"
    },
    "./web": { "types": "./index.d.ts", "default": "./web.js" },
    "./node": { "types": "./index.d.ts", "default": "./node.mjs" },
    "./fleetgate_bg.wasm": "./web/fleetgate_bg.wasm",
    "./package.json": "./package.json"
  },
  "files": ["engine.js", "node.mjs", "web.js", "index.d.ts", "node/", "web/", "README.md"],
  "sideEffects": false,
  "engines": { "node": ">=20" }
}
JSON
raw=$(stat -c %s pkg/web/fleetgate_bg.wasm)
gz=$(gzip -9 -c pkg/web/fleetgate_bg.wasm | wc -c)
echo "pkg: fleetgate_bg.wasm ${raw} bytes raw, ${gz} bytes gzipped"
