// The memory target: a sparse RAM disk. Its data lives in a memfd that every
// queue worker reads and writes with pread/pwrite, so memory is only used for
// data actually written (reading a hole allocates nothing), and DISCARD /
// WRITE_ZEROES punch holes that give the memory back — except WRITE_ZEROES with
// NOUNMAP (e.g. BLKZEROOUT), which promises the space stays allocated.
import fs from 'node:fs';
import { native } from '../native.js';
import { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, MFD_CLOEXEC } from '../sys.js';
import { defineTarget, sizeOption } from '../ublk/target.js';
import type { UblkRequest } from '../ublk/worker/request.js';

function punch(fd: number, req: UblkRequest): number {
  return native.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, req.offset, req.length);
}

function zero(fd: number, req: UblkRequest): number {
  const r = punch(fd, req);
  // Re-allocating after the punch gives zeroed, allocated pages.
  return r < 0 || !req.noUnmap ? r : native.fallocate(fd, FALLOC_FL_KEEP_SIZE, req.offset, req.length);
}

export default defineTarget<{ size: number }, { fd: number }>({
  name: 'memory',
  options: [sizeOption(true)],
  setup(options) {
    const fd = native.memfdCreate('ublk-ts-memory', MFD_CLOEXEC);
    fs.ftruncateSync(fd, options.size);
    return {
      size: options.size,
      caps: { discard: true, writeZeroes: true },
      shared: { fd },
      // Shrinking frees what lies past the new end; growing adds a hole (zeros).
      resize: (size) => fs.ftruncateSync(fd, size),
      cleanup: () => void native.close(fd),
    };
  },
  open(ctx) {
    const { fd } = ctx.shared;
    return {
      read: (req) => fs.readSync(fd, req.buffer, 0, req.length, req.offset),
      write: (req) => fs.writeSync(fd, req.buffer, 0, req.length, req.offset),
      // Holes read back as zeros.
      discard: (req) => punch(fd, req),
      writeZeroes: (req) => zero(fd, req),
    };
  },
});
