# The pure part of the package: package-lock.json as nixpkgs' importNpmLock
# wants it. npm here writes lockfiles without "resolved" URLs (npm's
# omit-lockfile-registry-resolved), and importNpmLock fetches only what has
# one, so each registry package gets its tarball URL back, made from its
# name and version as npm itself makes it, under the registry you name.
# The "integrity" hashes stay as npm wrote them: fetchurl checks them.
# Builtins only (no lib), so test/nix.e2e-spec.ts can evaluate it with
# nix-instantiate against the real lockfile.
{
  # package-lock.json, parsed (builtins.fromJSON).
  lock,
  # The npm registry's base URL without a trailing slash (what `npm config get registry` prints).
  registry,
}:
let
  # "node_modules/@nestjs/core" and "node_modules/a/node_modules/b" name a
  # package by its last node_modules/ segment; an alias carries its own "name".
  nameOf =
    path: entry:
    if entry ? name then
      entry.name
    else
      let
        parts = builtins.split "node_modules/" path;
      in
      builtins.elemAt parts (builtins.length parts - 1);
  # npm's tarball name: the unscoped part of the name, then the version.
  tarball =
    name: version:
    let
      m = builtins.match "@[^/]+/(.+)" name;
      base = if m == null then name else builtins.head m;
    in
    "${registry}/${name}/-/${base}-${version}.tgz";
  # Registry packages only: the root (""), links and local folders have no integrity.
  fromRegistry = path: entry: path != "" && !(entry.link or false) && entry ? integrity && entry ? version && !(entry ? resolved);
  withResolved =
    path: entry:
    if fromRegistry path entry then entry // { resolved = tarball (nameOf path entry) entry.version; } else entry;
in
lock
// {
  packages = builtins.mapAttrs withResolved lock.packages;
}
