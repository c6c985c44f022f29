# The agent as a Nix package: nest build, production node_modules (the native
# addons fs-ext and unix-dgram compiled by node-gyp against `nodejs`), and a
# bin/nixfleet-agent wrapper for operators (`nixfleet-agent status`). The
# NixOS module (./module.nix) starts `${nodejs}/bin/node` on
# lib/node_modules/nixfleet-agent/dist/main.js itself, so that node is the
# unit's main PID (NotifyAccess=main).
#
#   pkgs.callPackage ./nix/package.nix { npmRegistry = "https://<your npm registry>"; }
#
# Not evaluated against nixpkgs here (no nixpkgs on the machines that test
# this repo): see README "NixOS".
{
  lib,
  buildNpmPackage,
  importNpmLock,
  nodejs,
  makeWrapper,
  # The registry the lockfile's packages are fetched from (see ./npm-lock.nix).
  npmRegistry,
}:
let
  root = ../.;
  packageJson = lib.importJSON (root + "/package.json");
  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      (root + "/package.json")
      (root + "/package-lock.json")
      (root + "/nest-cli.json")
      (root + "/tsconfig.json")
      (root + "/tsconfig.build.json")
      (root + "/src")
    ];
  };
in
buildNpmPackage {
  pname = packageJson.name;
  inherit (packageJson) version;
  inherit src nodejs;

  npmDeps = importNpmLock {
    npmRoot = src;
    packageLock = import ./npm-lock.nix {
      lock = lib.importJSON (root + "/package-lock.json");
      registry = npmRegistry;
    };
  };
  npmConfigHook = importNpmLock.npmConfigHook;

  nativeBuildInputs = [ makeWrapper ];

  # `npm run build` is nest build (tsc): src/ into dist/.
  npmBuildScript = "build";

  # Only what runs: dist/, package.json (read for the version) and the
  # production dependencies, addons included.
  installPhase = ''
    runHook preInstall
    npm prune --omit=dev --no-audit --no-fund
    dest=$out/lib/node_modules/${packageJson.name}
    mkdir -p $dest $out/bin
    cp -r dist node_modules package.json $dest/
    makeWrapper ${nodejs}/bin/node $out/bin/nixfleet-agent \
      --add-flags "--max-semi-space-size=2 --v8-pool-size=1 $dest/dist/main.js"
    runHook postInstall
  '';

  # The smoke check the container image runs: a production dependency left
  # in devDependencies, or an addon built for another ABI, fails here.
  doInstallCheck = true;
  installCheckPhase = ''
    $out/bin/nixfleet-agent --version
  '';

  passthru = {
    inherit nodejs;
    # What the module's ExecStart runs.
    mainScript = "lib/node_modules/${packageJson.name}/dist/main.js";
  };

  meta = {
    description = packageJson.description;
    license = lib.licenses.mit;
    mainProgram = "nixfleet-agent";
    platforms = lib.platforms.linux;
  };
}
