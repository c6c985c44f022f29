import { readFileSync } from 'node:fs';
import { join } from 'node:path';

// Read at run time: package.json sits one level above both src/ and dist/.
export const AGENT_VERSION: string = (JSON.parse(readFileSync(join(__dirname, '..', 'package.json'), 'utf8')) as { version: string })
  .version;
