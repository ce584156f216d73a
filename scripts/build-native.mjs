// `npm ci`/`npm install` builds the native addon with node-gyp (npm puts its
// bundled node-gyp on PATH for install scripts). Where Node's headers are
// installed beside the running node (Debian: /usr/include/node), point
// node-gyp at them explicitly, so no header download is attempted.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const prefix = path.resolve(process.execPath, '..', '..');
const args = ['rebuild'];
if (fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`);
const r = spawnSync('node-gyp', args, { stdio: 'inherit' });
if (r.error) {
  console.error(`build-native: cannot run node-gyp: ${r.error.message}`);
  process.exit(1);
}
process.exit(r.status ?? 1);
