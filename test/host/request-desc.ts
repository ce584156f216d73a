// A block request as the driver would hand it to a queue, for host tests that
// drive a target by hand: its descriptor written, the request loaded from it.
import type { UblkRequest } from '../../src/ublk/worker/request.js';
import { DESC_NR_SECTORS, DESC_OP_FLAGS, DESC_START_SECTOR, DESC_WORDS } from '../../src/ublk/worker/queue-memory.js';

export function loadRequest(desc: Uint32Array, req: UblkRequest, op: number, offset: number, length: number, flags = 0): void {
  const w = req.tag * DESC_WORDS;
  desc[w + DESC_OP_FLAGS] = op | flags;
  desc[w + DESC_NR_SECTORS] = length / 512;
  desc[w + DESC_START_SECTOR] = offset / 512;
  req.load(desc);
}
