# services.nixfleet-agent: the agent as a NixOS service. The unit is
# deploy/systemd/nixfleet-agent.service (its comments say why each setting
# is there) with Nix store paths: node by absolute path, the settings as a
# JSON file, the health checks and trust roots under /etc/nixfleet/agent.
# test/nix.e2e-spec.ts parses every .nix file and evaluates this module's
# unit against a small stand-in for nixpkgs' lib; it was never evaluated
# against nixpkgs itself (see README "NixOS").
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:
let
  inherit (lib) mkOption types;
  cfg = config.services.nixfleet-agent;
  json = pkgs.formats.json { };

  # The agent reads these paths by default, and re-reads the health checks
  # whenever a rollout starts soaking: a new closure's /etc needs no restart.
  healthChecksPath = "/etc/nixfleet/agent/health-checks.json";
  configPath = "/etc/nixfleet-agent.json";

  # trustFile by interpolation, not toString: a path literal (./fleet/trust.json) is copied into the
  # store and the host reads that copy; toString would give its path on the evaluating machine. A
  # string stays as is. Paths inside settings and healthChecks are copied by the JSON generator.
  settingsFile = json.generate "nixfleet-agent.json" (
    lib.filterAttrs (_: v: v != null) cfg.settings
    // lib.optionalAttrs (cfg.trustFile != null) { trustFile = "${cfg.trustFile}"; }
  );

  node = "${cfg.nodejs}/bin/node";
  main = "${cfg.package}/${cfg.package.passthru.mainScript or "lib/node_modules/nixfleet-agent/dist/main.js"}";
in
{
  options.services.nixfleet-agent = {
    enable = lib.mkEnableOption "the NixFleet host agent (heartbeats and rollouts for the fleet control plane)";

    package = mkOption {
      type = types.package;
      description = ''
        The agent, e.g. `pkgs.callPackage ./nix/package.nix { npmRegistry = "https://…"; }`
        (nix/package.nix names why it needs the registry). There is no default: nixpkgs has no such package.
      '';
    };

    nodejs = mkOption {
      type = types.package;
      default = cfg.package.passthru.nodejs or pkgs.nodejs;
      defaultText = lib.literalExpression "config.services.nixfleet-agent.package.passthru.nodejs";
      description = "The Node.js that runs the agent: the one its native addons were built for. 20.15 or newer on 20.x, or 22.2 or newer.";
    };

    nodeFlags = mkOption {
      type = types.listOf types.str;
      default = [
        "--max-semi-space-size=2"
        "--v8-pool-size=1"
      ];
      description = "Node.js flags for an agent that mostly waits (deploy/systemd/nixfleet-agent.service says why).";
    };

    settings = mkOption {
      description = ''
        The agent's settings, written to ${configPath} (its `--config` file): the file keys of the
        README's settings table (camelCase). World-readable in the Nix store: paths to keys, never keys.
      '';
      default = { };
      type = types.submodule {
        freeformType = json.type;
        options = {
          controlPlaneUrl = mkOption {
            type = types.str;
            example = "https://fleet.example.org:8443";
            description = "https URL of the control plane.";
          };
          machineId = mkOption {
            type = types.str;
            default = config.networking.hostName;
            defaultText = lib.literalExpression "config.networking.hostName";
            description = "This host's machine id; the client certificate's CN must carry it.";
          };
          clientCert = mkOption {
            type = types.nullOr types.str;
            default = null;
            example = "/etc/nixfleet/agent.pem";
            description = "The client certificate (PEM) the fleet CA issued for clientKey; set together with it.";
          };
          clientKey = mkOption {
            type = types.nullOr types.str;
            default = "/etc/ssh/ssh_host_ed25519_key";
            description = "The client key: the host's OpenSSH ed25519 key, or a PEM key; set together with clientCert.";
          };
          activationBackend = mkOption {
            type = types.enum [
              "nixos"
              "command"
              "symlink"
            ];
            default = "nixos";
            description = "How a rollout is activated; `nixos` runs switch-to-configuration in a transient unit.";
          };
        };
      };
    };

    trustFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = lib.literalExpression "./fleet/trust.json";
      description = ''
        The fleet CI's release keys every dispatch is verified with (README "Trust"). Null: the agent's
        default, /etc/nixfleet/agent/trust.json, which must then exist (or settings.allowUnsigned).
      '';
    };

    healthChecks = mkOption {
      type = types.attrsOf json.type;
      default = { };
      example = {
        app-http = {
          kind = "http";
          url = "http://127.0.0.1:8080/health";
          intervalSeconds = 10;
        };
      };
      description = ''
        The probes that judge a new system (PROTOCOL §10), written to ${healthChecksPath}. They are part of the
        closure a rollout activates, so each rollout is judged by its own checks; empty: no probes.
      '';
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [
        "--log-level"
        "debug"
      ];
      description = "More flags for the agent (flags win over the settings file).";
    };
  };

  config = lib.mkIf cfg.enable {
    # The agent refuses one without the other (exit 2 at start): say so at evaluation instead.
    assertions = [
      {
        assertion = (cfg.settings.clientCert == null) == (cfg.settings.clientKey == null);
        message = "services.nixfleet-agent.settings: clientCert and clientKey go together (clientKey defaults to the OpenSSH host key; give the certificate the fleet CA issued for it, or set both to null)";
      }
    ];

    environment.etc = {
      "nixfleet-agent.json".source = settingsFile;
    }
    // lib.optionalAttrs (cfg.healthChecks != { }) {
      "nixfleet/agent/health-checks.json".source = json.generate "health-checks.json" cfg.healthChecks;
    };

    # `nixfleet-agent status` for operators; it finds the agent from ${configPath}.
    environment.systemPackages = [ cfg.package ];

    systemd.services.nixfleet-agent = {
      description = "NixFleet host agent (heartbeats and rollout state for the fleet control plane)";
      wantedBy = [ "multi-user.target" ];
      wants = [
        "network-online.target"
        "time-sync.target"
      ];
      after = [
        "network-online.target"
        "time-sync.target"
      ];
      # The nixos backend runs nix-store, nix-env and systemd-run (and systemctl for probes).
      path = [
        config.nix.package
        config.systemd.package
      ];
      # The settings file is read at start only.
      restartTriggers = [ settingsFile ];
      serviceConfig = {
        Type = "notify";
        # node itself is the main PID: no wrapper, no /usr/bin/env.
        NotifyAccess = "main";
        ExecStart = utils.escapeSystemdExecArgs (
          [ node ]
          ++ cfg.nodeFlags
          ++ [
            main
            "--config"
            configPath
          ]
          ++ cfg.extraArgs
        );
        ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
        TimeoutStartSec = 90;
        WatchdogSec = 60;
        StateDirectory = "nixfleet-agent";
        StateDirectoryMode = "0700";
        Restart = "always";
        RestartSec = 5;
        RestartPreventExitStatus = 2;
        TimeoutStopSec = 30;
        KillMode = "mixed";
        # Whatever the agent writes (event log, cached manifests, the admin socket) is its own.
        UMask = "0077";

        # Hardening: deploy/systemd/nixfleet-agent.service says what activation needs and why these.
        ProtectSystem = "full";
        ProtectHome = "read-only";
        PrivateTmp = true;
        PrivateDevices = true;
        NoNewPrivileges = true;
        RestrictNamespaces = "mnt";
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        RestrictAddressFamilies = [
          "AF_UNIX"
          "AF_INET"
          "AF_INET6"
          "AF_NETLINK"
        ];
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [ "~@cpu-emulation @debug @module @obsolete @raw-io @reboot @swap" ];
        SystemCallErrorNumber = "EPERM";
      };
    };
  };
}
