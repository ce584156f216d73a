// scripts/vmrun's boot watchdog: a VM whose command has not started in time is
// stopped and booted again (twice), then reported as a failed boot (exit 125),
// long before the run's own timeout. A stuck boot is played by a watchdog too
// short for any boot. Needs qemu and the VM kernel (installed for the VM tests).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const VMRUN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../scripts/vmrun');

test('vmrun: a boot that does not reach the command in time is retried, then fails with 125 well before -t', () => {
  const t0 = Date.now();
  const r = spawnSync(VMRUN, ['-t', '300', '--', 'true'], {
    encoding: 'utf8', timeout: 280_000, env: { ...process.env, UBLK_TS_VM_BOOT_TIMEOUT: '1' },
  });
  assert.equal(r.status, 125, `exit status: ${r.stderr}`);
  assert.equal((r.stderr.match(/the command had not started after 1s\); booting again/g) ?? []).length, 2, r.stderr);
  assert.ok(Date.now() - t0 < 120_000, 'stopped by the watchdog, not by -t');
});
