// io_uring user_data layout for every SQE a queue worker submits, defined once.
// user_data is handled as two u32 halves (no BigInt on the hot path):
//   lo bits  0..15  tag
//   lo bits 16..27  queue id (ublk allows 12 bits)
//   lo bits 28..31  kind (below)
//   hi              free for the kind's owner (targets: their own sub-id)
export const KIND_UBLK = 0; // FETCH / COMMIT_AND_FETCH (classic), FETCH_IO_CMDS (batch)
export const KIND_TARGET = 1; // a target's own IO on the worker ring
export const KIND_BATCH = 2; // PREP_IO_CMDS / COMMIT_IO_CMDS
export const KIND_QUIT = 3; // the READ on the worker's quit eventfd

export const userDataLo = (kind: number, queue: number, tag: number): number =>
  ((kind << 28) | (queue << 16) | tag) >>> 0;
export const udTag = (lo: number): number => lo & 0xffff;
export const udQueue = (lo: number): number => (lo >>> 16) & 0xfff;
export const udKind = (lo: number): number => lo >>> 28;
