/**
 * The errno of a failed file-system call in the words an operator reads in a
 * warning or a config error ("no such file", "permission denied"); an errno
 * without its own words keeps its code and message. Shared by config, comms,
 * the state-dir lock and the activation backends.
 */
export function errnoText(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  switch (e.code) {
    case 'ENOENT':
      return 'no such file';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EISDIR':
      return 'it is a directory';
    case 'ENOTDIR':
      return 'a part of the path is not a directory';
    case 'EROFS':
      return 'read-only file system';
    case 'ENOSPC':
      return 'no space left on the device';
    case undefined:
      // Not a system call's error: its message, or the thrown value itself.
      return String(e.message ?? err);
    default:
      return `${e.code}: ${e.message}`;
  }
}
