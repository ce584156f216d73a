// The backing store the loop benchmarks share: brd's one RAM disk, and the
// kernel loop driver over it (the baseline of every loop ratio).
import fs from 'node:fs';
import path from 'node:path';
import { MiB, sh, unloadModule } from './suite.js';

export const RAM = '/dev/ram0';

/** Loads brd with one RAM disk of `bytes`, every page written once (brd reads a page never written as zeros, without touching memory). */
export function loadRamDisk(bytes: number): void {
  if (fs.existsSync('/sys/module/brd')) throw new Error('brd is loaded already: the benchmark needs to load it with its own size');
  sh('modprobe', 'brd', 'rd_nr=1', `rd_size=${bytes / 1024}`);
  sh('dd', 'if=/dev/zero', `of=${RAM}`, 'bs=1M', `count=${bytes / MiB}`, 'oflag=direct', 'status=none');
}

/** A kernel loop device over the RAM disk, with direct IO (losetup falls back to buffered IO silently, hence the check). */
export function kernelLoop(): string {
  sh('modprobe', 'loop');
  const dev = sh('losetup', '--direct-io=on', '--show', '-f', RAM).trim();
  const dio = fs.readFileSync(`/sys/block/${path.basename(dev)}/loop/dio`, 'utf8').trim();
  if (dio !== '1') {
    sh('losetup', '-d', dev);
    throw new Error(`${dev}: the loop driver did not switch to direct IO on ${RAM}`);
  }
  return dev;
}

/** Unloads brd, waiting a little for its last user to let go (a file closed late). */
export const unloadRamDisk = (): Promise<void> => unloadModule('brd');
