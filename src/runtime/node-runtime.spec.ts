import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { currentNodeRuntime, MIN_NODE_VERSION, NODE_ENGINES, nodeRuntimeProblem, versionSupported } from './node-runtime';

const ROOT = join(__dirname, '..', '..');

describe('the Node.js runtime check', () => {
  it.each(['20.15.0', '20.15.1', '20.20.2', '22.2.0', '22.11.0', '23.0.0', '24.9.1', 'v20.15.0'])('accepts Node.js %s', (v) => {
    expect(versionSupported(v)).toBe(true);
  });

  it.each(['18.20.4', '20.0.0', '20.11.1', '20.14.9', '21.7.3', '22.0.0', '22.1.9', 'garbage', ''])(
    'refuses Node.js %s: it lacks zlib.crc32',
    (v) => {
      expect(versionSupported(v)).toBe(false);
    },
  );

  it('says nothing on a Node.js that has what the agent needs', () => {
    expect(nodeRuntimeProblem({ version: '20.15.0', hasCrc32: true })).toBeNull();
  });

  it('names the running version and the minimum in one line', () => {
    const line = nodeRuntimeProblem({ version: '20.11.1', hasCrc32: false });
    expect(line).toBe(
      'nixfleet-agent needs Node.js 20.15.0 or newer (^20.15.0 || >=22.2.0); this is Node.js 20.11.1, ' +
        'which lacks zlib.crc32 (the event log checksums every record with it): not started',
    );
    expect(line).not.toContain('\n');
  });

  it('trusts the feature over the version: a build without zlib.crc32 is refused whatever it calls itself', () => {
    expect(nodeRuntimeProblem({ version: '20.20.2', hasCrc32: false })).toContain('lacks zlib.crc32');
  });

  it('passes on the Node.js running these tests', () => {
    expect(nodeRuntimeProblem(currentNodeRuntime())).toBeNull();
  });

  it('agrees with package.json engines, the README and the Docker base image', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { engines: { node: string } };
    expect(pkg.engines.node).toBe(NODE_ENGINES);
    const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, { engines?: { node?: string } }>;
    };
    expect(lock.packages['']?.engines?.node).toBe(NODE_ENGINES);

    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    expect(readme).toContain(`Node.js ${MIN_NODE_VERSION} or newer`);

    const dockerfile = readFileSync(join(ROOT, 'docker', 'Dockerfile'), 'utf8');
    const image = /^ARG NODE_IMAGE=node:(\d+\.\d+\.\d+)-/m.exec(dockerfile);
    expect(image).not.toBeNull();
    expect(versionSupported(image![1])).toBe(true);
  });
});
