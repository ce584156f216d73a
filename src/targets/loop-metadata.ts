// The loop target's metadata file (UBLK_F_INTEGRITY): block n's metadata at
// byte n × metadata size, as kublk's loop keeps it in its second backing file.
// Opened through the page cache: its pieces are small and unaligned.
import fs from 'node:fs';
import { TargetOptionError } from '../ublk/target.js';

/** The open file and how many bytes of data its metadata covers. */
export function openMetadataFile(path: string, metadataSize: number, blockSize: number): { fd: number; dataBytes: number } {
  let fd: number;
  try {
    fd = fs.openSync(path, fs.constants.O_RDWR);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new TargetOptionError(`--metadata-file ${path}: ${code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  const st = fs.fstatSync(fd);
  if (!st.isFile()) {
    fs.closeSync(fd);
    throw new TargetOptionError(`--metadata-file ${path} is not a regular file`);
  }
  const blocks = Math.floor(st.size / metadataSize);
  if (blocks === 0) {
    fs.closeSync(fd);
    throw new TargetOptionError(`--metadata-file ${path} holds ${st.size} bytes, less than one block's ${metadataSize} bytes of metadata`);
  }
  return { fd, dataBytes: blocks * blockSize };
}

const FILL_CHUNK = 1 << 20;

/**
 * --init-metadata: 0xff over the first `bytes`. An all-ones application tag
 * (and reference tag) is the protection information's escape: the block layer
 * checks nothing in a block until it is written.
 */
export function fillMetadata(fd: number, bytes: number): void {
  const ones = new Uint8Array(Math.min(FILL_CHUNK, bytes)).fill(0xff);
  for (let done = 0; done < bytes;) done += fs.writeSync(fd, ones, 0, Math.min(ones.length, bytes - done), done);
  fs.fsyncSync(fd);
}
