# Evaluates nix/module.nix against ./stub-lib.nix, as the NixOS module
# system would for one host: every option takes the host's value or its
# default, each value is checked against its type, and the result is what
# test/nix.e2e-spec.ts compares with deploy/systemd/nixfleet-agent.service.
#   nix-instantiate --eval --strict --json test/nix/eval-module.nix --argstr hostJson '{"enable":true,...}'
{
  # The host's services.nixfleet-agent as JSON (the package is filled in here).
  hostJson,
  # Top-level options JSON cannot carry, as Nix values: a path literal such as
  # `--arg hostNix '{ trustFile = /tmp/x/trust.json; }'`. They replace hostJson's.
  hostNix ? { },
}:
let
  host = builtins.fromJSON hostJson // hostNix;
  stub = import ./stub-lib.nix;
  inherit (stub) lib utils pkgs;

  nodejs = stub.fakePackage "nodejs-24.11.1" { };
  agent = stub.fakePackage "nixfleet-agent-0.1.0" {
    inherit nodejs;
    mainScript = "lib/node_modules/nixfleet-agent/dist/main.js";
  };

  module = import ../../nix/module.nix;
  evaluated = module {
    inherit lib pkgs utils;
    config = nixosConfig;
  };
  options = evaluated.options.services.nixfleet-agent;

  # An option's value: the host's, else its default; checked against its type.
  valueOf =
    path: option: given:
    let
      raw =
        if given != null then
          given.value
        else if option ? default then
          option.default
        else
          throw "the option ${path} is used but not defined";
      value =
        if option.type.name == "submodule" then
          builtins.mapAttrs (name: sub: valueOf "${path}.${name}" sub (lookup name raw)) option.type.options
          // removeAttrs raw (builtins.attrNames option.type.options)
        else
          raw;
    in
    if option.type.check value then value else throw "${path}: ${builtins.toJSON value} is not a ${option.type.name}";
  lookup = name: set: if builtins.hasAttr name set then { value = set.${name}; } else null;

  cfg = builtins.mapAttrs (name: option: valueOf "services.nixfleet-agent.${name}" option (lookup name hostCfg)) options;
  hostCfg = host // {
    package = agent;
  };

  nixosConfig = {
    services.nixfleet-agent = cfg;
    networking.hostName = "web-01";
    nix.package = stub.fakePackage "nix-2.24.10" { };
    systemd.package = stub.fakePackage "systemd-257.5" { };
  };

  # The module's config is one mkIf on enable.
  active = evaluated.config.condition;
  config = evaluated.config.content;
  service = config.systemd.services.nixfleet-agent;
  # As NixOS does: a failed assertion stops the evaluation with its message.
  failed = builtins.filter (a: !a.assertion) (config.assertions or [ ]);
in
if !active then
  { inherit active; }
else if failed != [ ] then
  throw "Failed assertions:\n${builtins.concatStringsSep "\n" (map (a: "- ${a.message}") failed)}"
else
{
  inherit active;
  inherit (service)
    description
    wantedBy
    wants
    after
    serviceConfig
    ;
  path = map toString service.path;
  restartTriggers = map toString service.restartTriggers;
  nodejs = toString nodejs;
  package = toString agent;
  etc = builtins.mapAttrs (_: entry: {
    path = toString entry.source;
    text = entry.source.text;
  }) config.environment.etc;
  systemPackages = map toString config.environment.systemPackages;
}
