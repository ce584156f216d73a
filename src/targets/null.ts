// The null target: reads return whatever the buffer holds, writes are dropped,
// and so is metadata (--metadata-size): a READ's metadata is whatever the kernel's buffer held.
// It measures the cost of ublk-ts itself, and never touches data, so it serves
// every copy mode.
import { defineTarget, sizeOption } from '../ublk/target.js';

export default defineTarget<{ size: number }>({
  name: 'null',
  recoverable: true,
  options: [sizeOption(true)],
  setup(options) {
    return { size: options.size, caps: { flush: true, discard: true, writeZeroes: true }, data: 'none', integrity: true, resize: () => {} };
  },
  open() {
    return {
      read: (req) => req.length,
      write: (req) => req.length,
      flush: () => 0,
      discard: () => 0,
      writeZeroes: () => 0,
    };
  },
});
