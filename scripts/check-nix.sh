#!/usr/bin/env bash
# npm run check:nix: every .nix file of the repository parses (nix-instantiate
# --parse, from Debian's nix-bin). Nothing is built or evaluated against
# nixpkgs: see README "NixOS" for what is and is not exercised.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nix-instantiate >/dev/null; then
  echo 'check:nix: nix-instantiate is not installed: apt-get install nix-bin (as .ci/run does)' >&2
  exit 2
fi
mapfile -t files < <(find . \( -name node_modules -o -name .git -o -name 'dist*' -o -name .demo -o -name coverage \) -prune -o -name '*.nix' -type f -print | sort)
if [ "${#files[@]}" -eq 0 ]; then
  echo 'check:nix: no .nix files found' >&2
  exit 1
fi
failed=0
for file in "${files[@]}"; do
  if ! err="$(nix-instantiate --parse "$file" 2>&1 >/dev/null)"; then
    printf 'check:nix: %s does not parse:\n%s\n' "$file" "$err" >&2
    failed=1
  fi
done
if [ "$failed" -ne 0 ]; then exit 1; fi
echo "check:nix: ${#files[@]} .nix files parse: ${files[*]}"
