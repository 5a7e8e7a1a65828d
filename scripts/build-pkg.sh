#!/usr/bin/env bash
# Builds pkg/: the npm package `fleetgate` — the wasm engine built once by wasm-pack
# (`--target web`, pkg/web: one `.wasm` for every entry), joined by the JS wrapper, the entries
# (node.mjs reads the .wasm bytes, workerd.js imports it as a module, web.js fetches it) and the
# types in js/, plus fleetgate/sync (js/sync*.js), fleetgate/react (js/react*; React an optional peer), the package README (js/README.md), LICENSE and
# CHANGELOG.md. `--js-only` keeps an existing pkg/web and redoes only the JS side (quick).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$HOME/.cargo/bin:$PATH"

if [ "${1:-}" = "--js-only" ] && [ -f pkg/web/fleetgate_bg.wasm ]; then
  find pkg -mindepth 1 -maxdepth 1 ! -name web -exec rm -rf {} +
else
  rm -rf pkg
  # Size matters more than speed for the .wasm download; the native build keeps opt-level 3.
  wasm-pack build --profile wasm --target web --out-dir pkg/web --out-name fleetgate --no-pack . >&2
  rm -f pkg/web/.gitignore
fi
echo '{"type": "module"}' > pkg/web/package.json
JS_FILES=(engine.js node.mjs web.js workerd.js index.d.ts sync.js sync-node.mjs sync-web.js sync-workerd.js sync.d.ts react.js react.d.ts)
for f in "${JS_FILES[@]}"; do cp "js/$f" pkg/; done
cp js/README.md pkg/README.md
cp LICENSE CHANGELOG.md pkg/
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
repo=$(sed -n 's/^repository = "\(.*\)"/\1/p' Cargo.toml | head -1)
cat > pkg/package.json <<JSON
{
  "name": "fleetgate",
  "version": "$version",
  "description": "Permission engine for multi-tenant IoT fleets (WebAssembly)",
  "license": "Apache-2.0",
  "repository": { "type": "git", "url": "git+$repo.git" },
  "homepage": "$repo#readme",
  "bugs": { "url": "$repo/issues" },
  "keywords": ["authorization", "permissions", "rbac", "access-control", "multi-tenant", "iot", "fleet", "webassembly", "wasm", "cloudflare-workers"],
  "type": "module",
  "main": "./node.mjs",
  "module": "./web.js",
  "types": "./index.d.ts",
  "exports": {
    ".": {
      "types": "./index.d.ts",
      "workerd": "./workerd.js",
      "node": "./node.mjs",
      "worker": "./web.js",
      "browser": "./web.js",
      "default": "./web.js"
    },
    "./web": { "types": "./index.d.ts", "default": "./web.js" },
    "./node": { "types": "./index.d.ts", "default": "./node.mjs" },
    "./workerd": { "types": "./index.d.ts", "default": "./workerd.js" },
    "./sync": {
      "types": "./sync.d.ts",
      "workerd": "./sync-workerd.js",
      "node": "./sync-node.mjs",
      "default": "./sync-web.js"
    },
    "./react": { "types": "./react.d.ts", "default": "./react.js" },
    "./fleetgate_bg.wasm": "./web/fleetgate_bg.wasm",
    "./package.json": "./package.json"
  },
  "files": [$(printf '"%s", ' "${JS_FILES[@]}")"web/", "README.md", "LICENSE", "CHANGELOG.md"],
  "peerDependencies": { "react": ">=18" },
  "peerDependenciesMeta": { "react": { "optional": true } },
  "sideEffects": false,
  "engines": { "node": ">=20" }
}
JSON
raw=$(stat -c %s pkg/web/fleetgate_bg.wasm)
gz=$(gzip -9 -c pkg/web/fleetgate_bg.wasm | wc -c)
count=$(find pkg -name '*.wasm' | wc -l)
echo "pkg: fleetgate_bg.wasm ${raw} bytes raw, ${gz} bytes gzipped (${count} .wasm file in the package)"
