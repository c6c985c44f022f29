import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { INestApplication, LoggerService } from '@nestjs/common';
import { Test, type TestingModuleBuilder } from '@nestjs/testing';
import { DevControlPlane, type DevCpOptions } from '../../dev/control-plane';
import { ManifestSigner } from '../../dev/manifest-signer';
import { makePki, type Pki } from '../../dev/pki';
import { AgentModule } from '../../src/agent.module';
import { CLOCK } from '../../src/clock/clock';
import { RANDOM, type RandomSource } from '../../src/clock/random';
import type { AgentConfig } from '../../src/config/config.loader';
import { testConfig, type TestConfigOptions } from './agent-config';
import { FakeClock } from './fake-clock';

/** A store-path basename that passes the protocol's closure pattern. */
export function fakeClosure(name: string, hashChar = 'a'): string {
  return `${hashChar.repeat(32)}-nixos-system-${name}`;
}

/** A scratch world for one test file: temp dir, PKI, dev CP, a current-system link. */
export interface World {
  dir: string;
  pki: Pki;
  cp: DevControlPlane;
  /** The fleet CI of the world's CP, and the trust file (in `dir`) that names its keys. */
  signer: ManifestSigner;
  trustFile: string;
  currentSystemPath: string;
  /** A fake /nix/store for the symlink activation backend. */
  storeDir: string;
  /** Re-points the current-system link (atomically enough for tests). */
  setCurrentSystem(closure: string | null): void;
  close(): Promise<void>;
}

/** `pki`: reuse one PKI across several worlds (each still gets its own CP and dir). */
export async function makeWorld(cpOptions: Partial<DevCpOptions> = {}, shared: { pki?: Pki } = {}): Promise<World> {
  const dir = mkdtempSync(join(tmpdir(), 'nfa-world-'));
  const pki = shared.pki ?? (await makePki(join(dir, 'pki')));
  // The fleet CI: every dispatch's manifest is signed, and the agents verify it with trust.json beside their state dirs.
  const signer = cpOptions.signer ?? new ManifestSigner();
  const cp = await DevControlPlane.start({ pki, ...cpOptions, signer });
  const trustFile = join(dir, 'trust.json');
  await signer.writeTrustFile(trustFile);
  const currentSystemPath = join(dir, 'current-system');
  const storeDir = join(dir, 'store');
  mkdirSync(storeDir);
  const world: World = {
    dir,
    pki,
    cp,
    signer,
    trustFile,
    currentSystemPath,
    storeDir,
    setCurrentSystem(closure) {
      rmSync(currentSystemPath, { force: true });
      if (closure !== null) symlinkSync(join(storeDir, closure), currentSystemPath);
    },
    async close() {
      await cp.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  world.setCurrentSystem(fakeClosure('web-01-26.05'));
  return world;
}

/** Pins jitter: 0.5 means no jitter at all. */
export class FixedRandom implements RandomSource {
  constructor(public value = 0.5) {}
  next(): number {
    return this.value;
  }
}

export interface LogEntry {
  level: 'log' | 'error' | 'warn' | 'debug' | 'verbose' | 'fatal';
  message: string;
  context?: string;
  /** The call's trailing plain object: what AgentLogger prints as the entry's `fields`. */
  fields?: Record<string, unknown>;
}

/**
 * Keeps what the agent logs, so tests can assert its warnings. Reads the
 * arguments as Nest's Logger passes them: `(message, [fields | stack], context)`.
 */
export class CapturingLogger implements LoggerService {
  readonly entries: LogEntry[] = [];
  log(message: unknown, ...rest: unknown[]): void {
    this.add('log', message, rest);
  }
  error(message: unknown, ...rest: unknown[]): void {
    this.add('error', message, rest);
  }
  warn(message: unknown, ...rest: unknown[]): void {
    this.add('warn', message, rest);
  }
  debug(message: unknown, ...rest: unknown[]): void {
    this.add('debug', message, rest);
  }
  verbose(message: unknown, ...rest: unknown[]): void {
    this.add('verbose', message, rest);
  }
  fatal(message: unknown, ...rest: unknown[]): void {
    this.add('fatal', message, rest);
  }
  /** Messages of one level, optionally from one context (a class name). */
  messages(level: LogEntry['level'], context?: string): string[] {
    return this.entries.filter((e) => e.level === level && (!context || e.context === context)).map((e) => e.message);
  }
  private add(level: LogEntry['level'], message: unknown, rest: unknown[]): void {
    const last = rest[rest.length - 1];
    const context = typeof last === 'string' ? last : undefined;
    const fields = rest.find(
      (p): p is Record<string, unknown> => typeof p === 'object' && p !== null && Object.getPrototypeOf(p) === Object.prototype,
    );
    const entry: LogEntry = { level, message: typeof message === 'string' ? message : JSON.stringify(message), context };
    if (fields !== undefined) entry.fields = fields;
    this.entries.push(entry);
  }
}

export interface AgentUnderTest {
  app: INestApplication;
  logs: CapturingLogger;
  config: AgentConfig;
  clock: FakeClock;
  random: FixedRandom;
  stateDir: string;
  close(): Promise<void>;
}

export interface BuildOptions extends Partial<Omit<TestConfigOptions, 'pki'>> {
  /** Extra overrides on the testing module before compile. */
  customize?: (builder: TestingModuleBuilder) => TestingModuleBuilder;
  /** Default true: run app.init() (starts the boot handshake). */
  init?: boolean;
  clock?: FakeClock;
}

/**
 * The agent's real module graph, built with the Nest testing module, against
 * the world's dev CP. Time is a FakeClock and jitter is pinned; everything
 * else — TLS, HTTP, files — is real.
 */
export async function buildAgent(world: World, options: BuildOptions = {}): Promise<AgentUnderTest> {
  const stateDir = options.stateDir ?? join(world.dir, `state-${Math.random().toString(36).slice(2)}`);
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const config = testConfig({
    pki: world.pki,
    controlPlaneUrl: options.controlPlaneUrl ?? world.cp.url,
    stateDir,
    currentSystemPath: options.currentSystemPath ?? world.currentSystemPath,
    identity: options.identity,
    machineId: options.machineId,
    caCertPath: options.caCertPath,
    trustFile: options.trustFile ?? world.trustFile,
    // Activation re-points the world's current-system link; a test's own flags come after and win.
    extra: ['--activation-backend', 'symlink', '--store-dir', world.storeDir, ...(options.extra ?? [])],
  });
  const clock = options.clock ?? new FakeClock();
  // The agent judges a manifest's age by its own clock: CI signs by the same one.
  world.cp.signWithClock(() => clock.now());
  const random = new FixedRandom();
  let builder = Test.createTestingModule({ imports: [AgentModule.forRoot(config)] })
    .overrideProvider(CLOCK)
    .useValue(clock)
    .overrideProvider(RANDOM)
    .useValue(random);
  if (options.customize) builder = options.customize(builder);
  const moduleRef = await builder.compile();
  const logs = new CapturingLogger();
  const app = moduleRef.createNestApplication({ logger: logs });
  if (options.init !== false) await app.init();
  return { app, logs, config, clock, random, stateDir, close: () => app.close() };
}
