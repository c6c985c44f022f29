# A small stand-in for the parts of nixpkgs' lib (and NixOS's utils and pkgs)
# that nix/module.nix uses, for test/nix.e2e-spec.ts: no nixpkgs can be
# fetched on the machines that test this repo. Each function does what its
# nixpkgs namesake does for the values the module gives it; the option types
# only check values (no merging). What it cannot show: that the module
# evaluates under the real module system; README "NixOS" says so.
let
  inherit (builtins)
    all
    attrNames
    attrValues
    concatStringsSep
    filter
    elem
    isAttrs
    isBool
    isFloat
    isInt
    isList
    isPath
    isString
    listToAttrs
    map
    replaceStrings
    toJSON
    typeOf
    ;

  isDerivation = x: isAttrs x && (x.type or null) == "derivation";

  mkType = name: check: extra: { inherit name check; } // extra;

  json =
    let
      check =
        v:
        v == null
        || isBool v
        || isInt v
        || isFloat v
        || isString v
        || isPath v
        || (isList v && all check v)
        || (isAttrs v && !(isDerivation v) && all check (attrValues v));
    in
    mkType "json value" check { };

  types = {
    str = mkType "string" isString { };
    bool = mkType "boolean" isBool { };
    int = mkType "signed integer" isInt { };
    path = mkType "path" (v: isPath v || (isString v && builtins.substring 0 1 v == "/")) { };
    package = mkType "package" isDerivation { };
    nullOr = t: mkType "null or ${t.name}" (v: v == null || t.check v) { };
    either = a: b: mkType "${a.name} or ${b.name}" (v: a.check v || b.check v) { };
    listOf = t: mkType "list of ${t.name}" (v: isList v && all t.check v) { };
    attrsOf = t: mkType "attribute set of ${t.name}" (v: isAttrs v && all t.check (attrValues v)) { };
    enum = values: mkType "one of ${toJSON values}" (v: elem v values) { };
    submodule =
      m:
      mkType "submodule" isAttrs {
        options = m.options or { };
        freeformType = m.freeformType or null;
      };
  };

  lib = {
    inherit types;
    mkOption = attrs: attrs // { _type = "option"; };
    mkEnableOption =
      name:
      lib.mkOption {
        type = types.bool;
        default = false;
        description = "Whether to enable ${name}.";
      };
    mkIf = condition: content: {
      _type = "if";
      inherit condition content;
    };
    literalExpression = text: {
      _type = "literalExpression";
      inherit text;
    };
    optionalAttrs = cond: attrs: if cond then attrs else { };
    filterAttrs =
      pred: set:
      listToAttrs (
        map (name: {
          inherit name;
          value = set.${name};
        }) (filter (name: pred name set.${name}) (attrNames set))
      );
    concatStringsSep = concatStringsSep;
  };

  # NixOS's utils.escapeSystemdExecArgs: each argument a JSON string, % and $ doubled.
  utils = {
    escapeSystemdExecArgs =
      args:
      concatStringsSep " " (
        map (
          arg:
          let
            s =
              if isPath arg then
                "${arg}"
              else if isString arg then
                arg
              else if isInt arg || isFloat arg || isDerivation arg then
                toString arg
              else
                throw "escapeSystemdExecArgs: cannot escape a ${typeOf arg}";
          in
          replaceStrings [ "%" "$" ] [ "%%" "$$" ] (toJSON s)
        ) args
      );
  };

  # A package: what a derivation looks like to the module (a store path, passthru).
  fakePackage =
    name: passthru:
    {
      type = "derivation";
      inherit name passthru;
      outPath = "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha256" name)}-${name}";
    }
    // passthru;

  pkgs = {
    coreutils = fakePackage "coreutils-9.5" { };
    nodejs = fakePackage "nodejs-22.11.0" { };
    # pkgs.formats.json: its type, and generate's file (here: its text, not written to a store).
    formats.json = _: {
      type = json;
      generate = name: value: fakePackage name { text = toJSON value; };
    };
  };
in
{
  inherit
    lib
    utils
    pkgs
    fakePackage
    ;
}
