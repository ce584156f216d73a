// The memory target: a sparse RAM disk. Its data lives in a memfd that every
// queue worker reads and writes with pread/pwrite, so memory is only used for
// data actually written (reading a hole allocates nothing), and DISCARD /
// WRITE_ZEROES punch holes that give the memory back — except WRITE_ZEROES with
// NOUNMAP (e.g. BLKZEROOUT), which promises the space stays allocated.
// With --metadata-size, each block's metadata lives in a second memfd, block
// after block (the device then leaves DISCARD/WRITE_ZEROES to the kernel,
// which writes zeros with fresh metadata).
import fs from 'node:fs';
import { native } from '../native.js';
import { EIO, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, MFD_CLOEXEC } from '../sys.js';
import { defineTarget, sizeOption } from '../ublk/target.js';
import type { UblkRequest } from '../ublk/worker/request.js';
import { readData, readMetadata, writeData, writeMetadata } from './sync-io.js';

function punch(fd: number, req: UblkRequest): number {
  return native.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, req.offset, req.length);
}

function zero(fd: number, req: UblkRequest): number {
  const r = punch(fd, req);
  // Re-allocating after the punch gives zeroed, allocated pages.
  return r < 0 || !req.noUnmap ? r : native.fallocate(fd, FALLOC_FL_KEEP_SIZE, req.offset, req.length);
}

/** Moves a request's data (sync-io.ts: readData or writeData), or its metadata. */
type Move = (fd: number, req: UblkRequest) => number;

/**
 * Moves the request's data to or from `fd`, then its metadata (if any) to or
 * from `metaFd`. With metadata, a short transfer (a READ past the end a
 * shrinking resize just set) fails whole: its count would tell the kernel
 * that part's metadata had moved too.
 */
function rw(data: Move, metadata: Move, fd: number, metaFd: number, req: UblkRequest): number {
  const n = data(fd, req);
  if (!req.integrity || n < 0) return n;
  if (n !== req.length) return -EIO;
  const m = metadata(metaFd, req);
  return m === req.integrity ? n : m < 0 ? m : -EIO;
}

export default defineTarget<{ size: number }, { fd: number; metaFd: number }>({
  name: 'memory',
  options: [sizeOption(true)],
  setup(options, device) {
    const metadataSize = device?.metadataSize ?? 0;
    const fd = native.memfdCreate('ublk-ts-memory', MFD_CLOEXEC);
    const metaFd = metadataSize ? native.memfdCreate('ublk-ts-memory-metadata', MFD_CLOEXEC) : -1;
    const truncate = (size: number) => {
      fs.ftruncateSync(fd, size);
      if (metadataSize) fs.ftruncateSync(metaFd, size / 512 * metadataSize);
    };
    truncate(options.size);
    let current = options.size;
    return {
      size: options.size,
      caps: { discard: !metadataSize, writeZeroes: !metadataSize },
      integrity: true,
      shared: { fd, metaFd },
      // Shrinking frees what lies past the new end; growing adds a hole
      // (zeros). A WRITE the kernel issued before a shrink may still land
      // past the new end after it, growing the memfd again: growing first
      // cuts back to the size the device had, so that such data never shows.
      resize: (size) => {
        if (size > current) truncate(current);
        truncate(size);
        current = size;
      },
      cleanup: () => {
        native.close(fd);
        if (metaFd >= 0) native.close(metaFd);
      },
    };
  },
  open(ctx) {
    const { fd, metaFd } = ctx.shared;
    return {
      read: (req) => rw(readData, readMetadata, fd, metaFd, req),
      write: (req) => rw(writeData, writeMetadata, fd, metaFd, req),
      // Holes read back as zeros.
      discard: (req) => punch(fd, req),
      writeZeroes: (req) => zero(fd, req),
    };
  },
});
