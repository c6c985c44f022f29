import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadHealthChecks, systemdFailedUnitsDeclaration, type HealthChecksLoad } from './health-checks.file';
import { HEALTH_CHECKS_FILE_PROBE, SYSTEMD_FAILED_UNITS_PROBE, type ProbeDeclaration } from './probe.types';

const ENFORCE_TAIL = '; the probe counts as a failing enforce probe';

describe('loadHealthChecks', () => {
  let dir: string;
  let file: string;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-health-checks-'));
    file = join(dir, 'health-checks.json');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  async function load(content: unknown): Promise<Extract<HealthChecksLoad, { kind: 'loaded' }>> {
    writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content));
    const result = await loadHealthChecks(file);
    if (result.kind !== 'loaded') throw new Error(`expected a loaded file, got ${JSON.stringify(result)}`);
    return result;
  }

  /** The one declaration of a file with one entry, which must be invalid: its problem line. */
  async function problemOf(entry: unknown, name = 'p'): Promise<{ declaration: ProbeDeclaration; problem: string }> {
    const { probes, problems } = await load({ [name]: entry });
    expect(probes).toHaveLength(1);
    expect(problems).toHaveLength(1);
    const [declaration] = probes;
    if (declaration.spec.kind !== 'invalid') throw new Error(`expected an invalid declaration, got ${JSON.stringify(declaration)}`);
    expect(declaration.spec.problem).toBe(problems[0]);
    expect(problems[0]).not.toMatch(/\n/);
    return { declaration, problem: problems[0] };
  }

  describe('the file as a whole', () => {
    it('reports a missing file as missing, not as a problem', async () => {
      expect(await loadHealthChecks(join(dir, 'absent.json'))).toEqual({ kind: 'missing' });
    });

    it('declares one failing enforce probe for a file that cannot be read, naming the file and why', async () => {
      mkdirSync(file);
      const problem = `health-checks file ${file}: cannot be read (it is a directory); none of its probes runs: the agent declares one failing enforce probe "health-checks-file" instead`;
      expect(await loadHealthChecks(file)).toEqual({
        kind: 'loaded',
        probes: [
          {
            name: HEALTH_CHECKS_FILE_PROBE,
            mode: 'enforce',
            intervalMs: 30_000,
            runOnce: false,
            spec: { kind: 'invalid', declaredKind: 'invalid', problem },
          },
        ],
        problems: [problem],
      });
    });

    it('treats a path under a regular file as unreadable, not as missing', async () => {
      writeFileSync(file, '{}');
      const result = await loadHealthChecks(join(file, 'nested.json'));
      expect(result).toMatchObject({
        kind: 'loaded',
        problems: [expect.stringContaining('cannot be read (a part of the path is not a directory)')],
      });
    });

    it('declares one failing enforce probe for text that is not JSON, quoting the parser on one line', async () => {
      const { probes, problems } = await load('{\n  "db": {"kind": "tcp", "port": 5432},\n  oops\n}');
      expect(problems).toHaveLength(1);
      expect(problems[0]).toMatch(new RegExp(`^health-checks file ${file}: not valid JSON \\(.+\\); none of its probes runs`));
      expect(problems[0]).not.toMatch(/\n/);
      expect(probes).toEqual([
        expect.objectContaining({
          name: HEALTH_CHECKS_FILE_PROBE,
          mode: 'enforce',
          spec: { kind: 'invalid', declaredKind: 'invalid', problem: problems[0] },
        }),
      ]);
    });

    it('says an empty file is empty', async () => {
      const { problems } = await load('  \n');
      expect(problems).toEqual([
        `health-checks file ${file}: is empty, expected a JSON object mapping probe names to declarations; none of its probes runs: the agent declares one failing enforce probe "health-checks-file" instead`,
      ]);
    });

    it.each([
      ['an array', [{ kind: 'tcp', port: 1 }], 'an array'],
      ['null', null, 'null'],
      ['a string', 'probes', '"probes"'],
      ['a number', 3, '3'],
    ])('declares one failing enforce probe when the top level is %s, not an object', async (_what, content, shown) => {
      const { probes, problems } = await load(JSON.stringify(content));
      expect(problems).toEqual([
        `health-checks file ${file}: expected a JSON object mapping probe names to declarations, got ${shown}; none of its probes runs: the agent declares one failing enforce probe "health-checks-file" instead`,
      ]);
      expect(probes.map((p) => p.name)).toEqual([HEALTH_CHECKS_FILE_PROBE]);
    });

    it('loads an empty object as no probes and no problems', async () => {
      expect(await load({})).toEqual({ kind: 'loaded', probes: [], problems: [] });
    });
  });

  describe('valid entries', () => {
    it('applies the §10 defaults and turns seconds into milliseconds', async () => {
      const { probes, problems } = await load({
        web: { kind: 'http', url: 'http://127.0.0.1:8080/health' },
        db: { kind: 'tcp', port: 5432 },
        migrations: { kind: 'exec', command: ['/run/current-system/sw/bin/check-migrations', '--quiet'] },
      });
      expect(problems).toEqual([]);
      expect(probes).toEqual([
        {
          name: 'db',
          mode: 'enforce',
          intervalMs: 30_000,
          runOnce: false,
          spec: { kind: 'tcp', host: '127.0.0.1', port: 5432, connectTimeoutMs: 5_000 },
        },
        {
          name: 'migrations',
          mode: 'enforce',
          intervalMs: 30_000,
          runOnce: false,
          spec: { kind: 'exec', command: ['/run/current-system/sw/bin/check-migrations', '--quiet'], timeoutMs: 10_000 },
        },
        {
          name: 'web',
          mode: 'enforce',
          intervalMs: 30_000,
          runOnce: false,
          spec: { kind: 'http', url: 'http://127.0.0.1:8080/health', expectStatus: 200, timeoutMs: 10_000 },
        },
      ]);
    });

    it('takes every field as given', async () => {
      const { probes, problems } = await load({
        web: {
          kind: 'http',
          mode: 'observe',
          intervalSeconds: 15,
          runOnce: true,
          url: 'https://web.internal/ready',
          expectStatus: 204,
          timeoutSecs: 0.25,
        },
        db: { kind: 'tcp', mode: 'disabled', host: 'db-01.internal', port: 5432, connectTimeoutSecs: 2 },
        cron: { kind: 'exec', command: ['/bin/true'], timeoutSecs: 3 },
      });
      expect(problems).toEqual([]);
      expect(probes).toEqual([
        {
          name: 'cron',
          mode: 'enforce',
          intervalMs: 30_000,
          runOnce: false,
          spec: { kind: 'exec', command: ['/bin/true'], timeoutMs: 3_000 },
        },
        {
          name: 'db',
          mode: 'disabled',
          intervalMs: 30_000,
          runOnce: false,
          spec: { kind: 'tcp', host: 'db-01.internal', port: 5432, connectTimeoutMs: 2_000 },
        },
        {
          name: 'web',
          mode: 'observe',
          intervalMs: 15_000,
          runOnce: true,
          spec: { kind: 'http', url: 'https://web.internal/ready', expectStatus: 204, timeoutMs: 250 },
        },
      ]);
    });

    it('floors intervalSeconds of 1 to 4 to 5 s without calling it a problem', async () => {
      const { probes, problems } = await load({
        a: { kind: 'tcp', port: 1, intervalSeconds: 1 },
        b: { kind: 'tcp', port: 1, intervalSeconds: 4 },
        c: { kind: 'tcp', port: 1, intervalSeconds: 5 },
        d: { kind: 'tcp', port: 1, intervalSeconds: 6 },
      });
      expect(problems).toEqual([]);
      expect(probes.map((p) => p.intervalMs)).toEqual([5_000, 5_000, 5_000, 6_000]);
    });

    it("accepts null for another kind's keys and for its own optional ones (the Nix renderer writes null for unset options)", async () => {
      const { probes, problems } = await load({
        web: {
          kind: 'http',
          url: 'http://[::1]:8080/',
          mode: null,
          intervalSeconds: null,
          runOnce: null,
          expectStatus: null,
          timeoutSecs: null,
          host: null,
          port: null,
          connectTimeoutSecs: null,
          command: null,
        },
      });
      expect(problems).toEqual([]);
      expect(probes).toEqual([
        {
          name: 'web',
          mode: 'enforce',
          intervalMs: 30_000,
          runOnce: false,
          spec: { kind: 'http', url: 'http://[::1]:8080/', expectStatus: 200, timeoutMs: 10_000 },
        },
      ]);
    });

    it('returns the declarations sorted by name, whatever the order of the file', async () => {
      const { probes } = await load({
        zeta: { kind: 'tcp', port: 1 },
        Alpha: { kind: 'tcp', port: 1 },
        beta: 5,
        alpha: { kind: 'tcp', port: 1 },
      });
      expect(probes.map((p) => p.name)).toEqual(['Alpha', 'alpha', 'beta', 'zeta']);
    });

    it('accepts a name of exactly 128 characters', async () => {
      const name = 'n'.repeat(128);
      const { probes, problems } = await load({ [name]: { kind: 'tcp', port: 1 } });
      expect(problems).toEqual([]);
      expect(probes.map((p) => p.name)).toEqual([name]);
    });
  });

  describe('malformed entries', () => {
    it('names the file, the probe and the field of a number given as a string, and what the agent does', async () => {
      const { declaration, problem } = await problemOf({ kind: 'tcp', port: '5432' }, 'db-ping');
      expect(problem).toBe(
        `health-checks file ${file}, probe "db-ping", field "port": must be a whole number from 1 to 65535 (got "5432")${ENFORCE_TAIL}`,
      );
      expect(declaration).toEqual({
        name: 'db-ping',
        mode: 'enforce',
        intervalMs: 30_000,
        runOnce: false,
        spec: { kind: 'invalid', declaredKind: 'tcp', problem },
      });
    });

    it('refuses a key no kind has: a typo must not leave the default in force', async () => {
      const { problem } = await problemOf({ kind: 'http', url: 'http://127.0.0.1/', expectedStatus: 204 }, 'web');
      expect(problem).toBe(
        `health-checks file ${file}, probe "web", field "expectedStatus": is not a field of an http probe (its fields: kind, mode, intervalSeconds, runOnce, url, expectStatus, timeoutSecs)${ENFORCE_TAIL}`,
      );
    });

    it("refuses another kind's key unless it is null", async () => {
      const { problem } = await problemOf({ kind: 'tcp', port: 5432, timeoutSecs: 3 }, 'db');
      expect(problem).toBe(
        `health-checks file ${file}, probe "db", field "timeoutSecs": belongs to http and exec probes, and in a tcp probe it must be null or absent (got 3)${ENFORCE_TAIL}`,
      );
    });

    it('refuses an exec command whose program is not an absolute path', async () => {
      const { problem } = await problemOf({ kind: 'exec', command: ['pg_isready', '-h', '127.0.0.1'] }, 'pg');
      expect(problem).toBe(
        `health-checks file ${file}, probe "pg", field "command": its first element, the program, must be an absolute path such as /run/current-system/sw/bin/<name>: probes run with a clean environment (got ["pg_isready","-h","127.0.0.1"])${ENFORCE_TAIL}`,
      );
    });

    it('refuses the upstream evidence kind, which this agent does not run, and keeps it as the declared kind', async () => {
      const { declaration, problem } = await problemOf({ kind: 'evidence' }, 'compliance');
      expect(problem).toBe(
        `health-checks file ${file}, probe "compliance", field "kind": is "evidence" (a signed compliance file), which this agent does not run${ENFORCE_TAIL}`,
      );
      expect(declaration.mode).toBe('enforce');
      expect(declaration.spec).toMatchObject({ kind: 'invalid', declaredKind: 'evidence' });
    });

    it('names every wrong field in one line, in the order of the file', async () => {
      const { problem } = await problemOf({ kind: 'http', mode: 'strict', expectStatus: 99, timeoutSecs: 0, intervalSeconds: 1.5 }, 'web');
      expect(problem).toBe(
        [
          `health-checks file ${file}, probe "web", field "mode": must be "enforce", "observe" or "disabled" (got "strict")`,
          'field "expectStatus": must be a whole number from 100 to 599 (got 99)',
          'field "timeoutSecs": must be a number of seconds greater than 0 and at most 86400 (got 0)',
          'field "intervalSeconds": must be a whole number of seconds from 1 to 86400 (got 1.5)',
          `field "url": is required${ENFORCE_TAIL}`,
        ].join('; '),
      );
    });

    it('declares a malformed entry in the mode it asked for when that field is valid: observe never gated, disabled is not run', async () => {
      const observe = await problemOf({ kind: 'tcp', mode: 'observe', port: 0 });
      expect(observe.declaration.mode).toBe('observe');
      expect(observe.problem).toMatch(/; the probe counts as a failing observe probe \(reported, never gates\)$/);
      const disabled = await problemOf({ kind: 'evidence', mode: 'disabled' });
      expect(disabled.declaration.mode).toBe('disabled');
      expect(disabled.problem).toMatch(/; the probe is declared disabled, as it asked, and not run$/);
    });

    it('declares a malformed entry as enforce when its mode is missing or itself wrong: a typo there must not lift the gate', async () => {
      for (const mode of [undefined, 'observ', 7, null]) {
        const { declaration, problem } = await problemOf({ kind: 'tcp', mode, port: 0 });
        expect(declaration.mode).toBe('enforce');
        expect(problem.endsWith(ENFORCE_TAIL)).toBe(true);
      }
    });

    it.each([
      ['missing', {}, 'invalid', 'field "kind": is required: "http", "tcp" or "exec"'],
      ['null', { kind: null }, 'invalid', 'field "kind": is required: "http", "tcp" or "exec"'],
      ['not a string', { kind: 7 }, 'invalid', 'field "kind": must be "http", "tcp" or "exec" (got 7)'],
      ['unknown', { kind: 'grpc', port: 1 }, 'grpc', 'field "kind": must be "http", "tcp" or "exec" (got "grpc")'],
    ])('refuses a kind that is %s, declaring the kind it named when it named one', async (_what, entry, declaredKind, clause) => {
      const { declaration, problem } = await problemOf(entry);
      expect(problem).toBe(`health-checks file ${file}, probe "p", ${clause}${ENFORCE_TAIL}`);
      expect(declaration.spec).toMatchObject({ kind: 'invalid', declaredKind });
    });

    it('still judges the keys every kind has when the kind is unknown', async () => {
      const { problem } = await problemOf({ kind: 'grpc', runOnce: 'yes' });
      expect(problem).toBe(
        `health-checks file ${file}, probe "p", field "kind": must be "http", "tcp" or "exec" (got "grpc"); field "runOnce": must be true or false (got "yes")${ENFORCE_TAIL}`,
      );
    });

    it.each([
      [
        'expectStatus',
        { kind: 'http', url: 'http://127.0.0.1/', expectStatus: '200' },
        'must be a whole number from 100 to 599 (got "200")',
      ],
      [
        'timeoutSecs',
        { kind: 'http', url: 'http://127.0.0.1/', timeoutSecs: '10' },
        'must be a number of seconds greater than 0 and at most 86400 (got "10")',
      ],
      ['intervalSeconds', { kind: 'tcp', port: 1, intervalSeconds: '30' }, 'must be a whole number of seconds from 1 to 86400 (got "30")'],
      ['intervalSeconds', { kind: 'tcp', port: 1, intervalSeconds: 0 }, 'must be a whole number of seconds from 1 to 86400 (got 0)'],
      ['runOnce', { kind: 'tcp', port: 1, runOnce: 'true' }, 'must be true or false (got "true")'],
      ['port', { kind: 'tcp', port: 65536 }, 'must be a whole number from 1 to 65535 (got 65536)'],
      ['port', { kind: 'tcp', port: null }, 'is required'],
      ['host', { kind: 'tcp', port: 1, host: '' }, 'must be a host name or an IP address (got "")'],
      ['host', { kind: 'tcp', port: 1, host: 'db 01' }, 'must be a host name or an IP address (got "db 01")'],
      [
        'connectTimeoutSecs',
        { kind: 'tcp', port: 1, connectTimeoutSecs: -1 },
        'must be a number of seconds greater than 0 and at most 86400 (got -1)',
      ],
      ['url', { kind: 'http', url: 'ftp://127.0.0.1/' }, 'must be an http:// or https:// URL with a host (got "ftp://127.0.0.1/")'],
      [
        'url',
        { kind: 'http', url: '127.0.0.1:8080/health' },
        'must be an http:// or https:// URL with a host (got "127.0.0.1:8080/health")',
      ],
      ['url', { kind: 'http', url: 42 }, 'must be an http:// or https:// URL with a host (got 42)'],
      ['command', { kind: 'exec', command: [] }, 'must be a non-empty array of non-empty strings, the argv run without a shell (got [])'],
      [
        'command',
        { kind: 'exec', command: '/bin/true' },
        'must be a non-empty array of non-empty strings, the argv run without a shell (got "/bin/true")',
      ],
      [
        'command',
        { kind: 'exec', command: ['/bin/echo', ''] },
        'must be a non-empty array of non-empty strings, the argv run without a shell (got ["/bin/echo",""])',
      ],
      [
        'command',
        { kind: 'exec', command: ['/bin/echo', 5] },
        'must be a non-empty array of non-empty strings, the argv run without a shell (got ["/bin/echo",5])',
      ],
      ['command', { kind: 'exec', command: ['/bin/echo', 'a\u0000b'] }, 'must not contain a NUL character (got ["/bin/echo","a\\u0000b"])'],
      ['command', { kind: 'exec' }, 'is required'],
    ])('refuses a bad %s: %j', async (field, entry, what) => {
      const { problem } = await problemOf(entry);
      expect(problem).toBe(`health-checks file ${file}, probe "p", field "${field}": ${what}${ENFORCE_TAIL}`);
    });

    it('declares an entry that is not an object as a failing enforce probe under its name', async () => {
      const { declaration, problem } = await problemOf(['/bin/true'], 'cron');
      expect(problem).toBe(`health-checks file ${file}, probe "cron", the declaration must be a JSON object (got an array)${ENFORCE_TAIL}`);
      expect(declaration.spec).toMatchObject({ kind: 'invalid', declaredKind: 'invalid' });
    });

    it('keeps the good entries of a file running beside a bad one', async () => {
      const { probes, problems } = await load({ good: { kind: 'tcp', port: 22 }, bad: { kind: 'tcp', port: 'ssh' } });
      expect(problems).toHaveLength(1);
      expect(probes.map((p) => [p.name, p.spec.kind])).toEqual([
        ['bad', 'invalid'],
        ['good', 'tcp'],
      ]);
    });
  });

  describe('probe names', () => {
    it.each([
      ['empty', '', 'is empty (a probe name has 1 to 128 characters, none of them a control character)'],
      [
        'too long',
        'x'.repeat(129),
        'is longer than 128 characters (a probe name has 1 to 128 characters, none of them a control character)',
      ],
      [
        'with a control character',
        'db\nping',
        'contains a control character (a probe name has 1 to 128 characters, none of them a control character)',
      ],
    ])('declares an entry whose name is %s under a safe name, as a failing enforce probe, and says so', async (_what, name, why) => {
      const { probes, problems } = await load({ ok: { kind: 'tcp', port: 1 }, [name]: { kind: 'tcp', mode: 'observe', port: 1 } });
      const shown = JSON.stringify(name).length > 60 ? `${JSON.stringify(name).slice(0, 59)}…` : JSON.stringify(name);
      const problem = `health-checks file ${file}, entry 2 (probe name ${shown}), the name ${why}; the entry is declared as "invalid-probe-2", a failing enforce probe`;
      expect(problems).toEqual([problem]);
      expect(probes).toEqual([
        {
          name: 'invalid-probe-2',
          mode: 'enforce',
          intervalMs: 30_000,
          runOnce: false,
          spec: { kind: 'invalid', declaredKind: 'tcp', problem },
        },
        expect.objectContaining({ name: 'ok' }),
      ]);
    });

    it('refuses "__proto__", which as an object key would set a prototype and make the probe vanish', async () => {
      const { probes, problems } = await load({ ['__proto__']: { kind: 'exec', command: ['/bin/false'] } });
      expect(problems).toEqual([
        `health-checks file ${file}, entry 1 (probe name "__proto__"), the name is "__proto__", which cannot name a probe; the entry is declared as "invalid-probe-1", a failing enforce probe`,
      ]);
      expect(probes.map((p) => [p.name, p.mode, p.spec.kind])).toEqual([['invalid-probe-1', 'enforce', 'invalid']]);
    });

    it('reserves the name of the manifest gate probe', async () => {
      const { probes, problems } = await load({ [SYSTEMD_FAILED_UNITS_PROBE]: { kind: 'exec', command: ['/bin/true'] } });
      expect(problems).toEqual([
        `health-checks file ${file}, entry 1 (probe name "systemd-failed-units"), the name is reserved for the signed manifest's systemdFailedUnits gate; the entry is declared as "invalid-probe-1", a failing enforce probe`,
      ]);
      expect(probes.map((p) => [p.name, p.spec.kind])).toEqual([['invalid-probe-1', 'invalid']]);
    });

    it('says what else is wrong with a badly named entry in the same line', async () => {
      const { problems } = await load({ '': { kind: 'tcp', port: '22' } });
      expect(problems).toEqual([
        `health-checks file ${file}, entry 1 (probe name ""), the name is empty (a probe name has 1 to 128 characters, none of them a control character); field "port": must be a whole number from 1 to 65535 (got "22"); the entry is declared as "invalid-probe-1", a failing enforce probe`,
      ]);
    });

    it('never gives a badly named entry a name the file already uses', async () => {
      const { probes } = await load({ 'invalid-probe-2': { kind: 'tcp', port: 1 }, '': { kind: 'tcp', port: 1 } });
      expect(probes.map((p) => [p.name, p.spec.kind])).toEqual([
        ['invalid-probe-2', 'tcp'],
        ['invalid-probe-2-2', 'invalid'],
      ]);
    });
  });
});

describe('systemdFailedUnitsDeclaration', () => {
  it('declares the manifest gate as an enforce probe every 30 s, systemctl given 10 s', () => {
    expect(systemdFailedUnitsDeclaration(2)).toEqual({
      name: SYSTEMD_FAILED_UNITS_PROBE,
      mode: 'enforce',
      intervalMs: 30_000,
      runOnce: false,
      spec: { kind: 'systemd-failed-units', max: 2, timeoutMs: 10_000 },
    });
  });
});
