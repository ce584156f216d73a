// A connection to an export, through the handshake and ready for the
// transmission phase: the socket and its fd (for io_uring), and what the
// server told of the export.
import type net from 'node:net';
import { negotiate, type ExportInfo } from './handshake.js';
import { connectSocket, describeAddress, SocketIo, type NbdAddress } from './socket-io.js';

export interface OpenExport { socket: net.Socket; fd: number; info: ExportInfo }

export async function openNbd(a: NbdAddress, exportName: string, timeoutMs: number): Promise<OpenExport> {
  const where = describeAddress(a);
  const socket = await connectSocket(a, timeoutMs);
  try {
    const io = new SocketIo(socket, where);
    const timer = setTimeout(() => socket.destroy(new Error(`no handshake after ${timeoutMs / 1000} s ` +
      '(a server that has as many clients as it takes keeps new ones waiting: e.g. qemu-nbd --shared N)')), timeoutMs);
    let info: ExportInfo;
    try {
      info = await negotiate(io, exportName, where);
    } finally {
      clearTimeout(timer);
    }
    return { socket, fd: io.detach(), info };
  } catch (e) {
    socket.destroy();
    throw e;
  }
}
