import { lstat, stat } from 'node:fs/promises';
import { errnoText } from '../common/errno';
import { settingProblem } from '../config/config.messages';
import { flagOf } from '../config/settings';
import { loadTrustFile, type TrustRoots } from './trust-file';

/**
 * How dispatches are judged, decided once at start (PROTOCOL §12): with the
 * trust file's roots, or — only when the operator said so and there is no
 * trust file at all — not at all.
 */
export type TrustSetting =
  | {
      readonly mode: 'verify';
      readonly roots: TrustRoots;
      /** --allow-unsigned was set, but the file is there: it changes nothing, and start-up says so. */
      readonly allowUnsignedIgnored: boolean;
    }
  | { readonly mode: 'unsigned'; readonly file: string };

export const TRUST_SETTING = Symbol('TRUST_SETTING');

class DanglingLink extends Error {}

export type TrustSettingLoad = { ok: true; setting: TrustSetting } | { ok: false; problems: string[] };

/**
 * A missing file runs unverified only under --allow-unsigned. A file that is
 * there but wrong is always an error: it was meant to be used, and a typo must
 * not quietly turn verification off.
 */
export async function loadTrustSetting(config: { trustFile: string; allowUnsigned: boolean }): Promise<TrustSettingLoad> {
  const file = config.trustFile;
  try {
    // lstat first: a dangling symlink (NixOS links /etc into the store) is a broken install, never "no trust file".
    const link = await lstat(file);
    if (link.isSymbolicLink()) await stat(file).catch((err: unknown) => Promise.reject(new DanglingLink(errnoText(err))));
  } catch (err) {
    if (err instanceof DanglingLink) {
      return { ok: false, problems: [settingProblem('trustFile', `${file} is a symlink to nothing readable (${err.message})`)] };
    }
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      return { ok: false, problems: [settingProblem('trustFile', `cannot read ${file}: ${errnoText(err)}`)] };
    }
    if (config.allowUnsigned) return { ok: true, setting: { mode: 'unsigned', file } };
    return {
      ok: false,
      problems: [
        settingProblem(
          'trustFile',
          `${file} does not exist, so no dispatch could be verified; install the fleet's trust file there (README "Trust"), or set ${flagOf('allowUnsigned')} to act on unverified dispatches`,
        ),
      ],
    };
  }
  const loaded = await loadTrustFile(file);
  if (!loaded.ok) return { ok: false, problems: loaded.problems.map((line) => `config error: ${line}`) };
  return { ok: true, setting: { mode: 'verify', roots: loaded.trust, allowUnsignedIgnored: config.allowUnsigned } };
}

/** The warning an unverified agent repeats at start, in every status and on every dispatch. */
export function unsignedWarning(file: string): string {
  return `UNVERIFIED: no trust file at ${file} and ${flagOf('allowUnsigned')} is set, so dispatches are acted on without checking the fleet CI's signature`;
}
