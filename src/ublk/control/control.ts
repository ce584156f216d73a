// The ublk control plane: commands on /dev/ublk-control, sent as URING_CMDs on
// an SQE128 ring (struct ublksrv_ctrl_cmd is 32 bytes; a 64-byte SQE only has 16).
import fs from 'node:fs';
import { AsyncRing } from '../../uring/async-ring.js';
import { prepUringCmd } from '../../uring/prep.js';
import { LAYOUTS as URING } from '../../uring/layout.js';
import type { Ring } from '../../uring/ring.js';
import { native, errnoName } from '../../native.js';
import { EINVAL, ENOTTY, EOPNOTSUPP } from '../../sys.js';
import { build, dataView, decode, encode, sizeOf, type Struct } from '../abi/codec.js';
import { decodeParams, encodeParams, paramsRequestBuffer, type DecodedParams, type UblkParams } from '../abi/params.js';
import * as U from '../abi/uapi.js';

/**
 * Fault injection for tests (UBLK_TS_FAULT_HIDE_FEATURES=BATCH_IO,USER_COPY):
 * GET_FEATURES answers as a kernel without these UBLK_F_* bits (all in the
 * low 32), so what happens on such a kernel can be tested on one that has them.
 */
const HIDDEN_FEATURES = (process.env.UBLK_TS_FAULT_HIDE_FEATURES ?? '').split(',').filter(Boolean).reduce((mask, name) => {
  const bit = (U as Record<string, unknown>)[`UBLK_F_${name}`];
  if (typeof bit !== 'number' || bit <= 0 || bit >= 2 ** 31) throw new Error(`UBLK_TS_FAULT_HIDE_FEATURES: unknown feature ${name}`);
  return mask | bit;
}, 0);

export const CONTROL_PATH = '/dev/ublk-control';
const SQE_CMD = URING.io_uring_sqe.fields.cmd[0];
const ANY_QUEUE = 0xffff;
/** ADD_DEV with this id asks the kernel to pick one. */
export const AUTO_ID = 0xffffffff;

export type DevInfo = Struct<'ublksrv_ctrl_dev_info'>;

const COMMAND_NAMES: Record<number, string> = {
  [U.UBLK_U_CMD_GET_FEATURES]: 'GET_FEATURES', [U.UBLK_U_CMD_ADD_DEV]: 'ADD_DEV', [U.UBLK_U_CMD_DEL_DEV]: 'DEL_DEV',
  [U.UBLK_U_CMD_START_DEV]: 'START_DEV', [U.UBLK_U_CMD_STOP_DEV]: 'STOP_DEV', [U.UBLK_U_CMD_SET_PARAMS]: 'SET_PARAMS',
  [U.UBLK_U_CMD_GET_PARAMS]: 'GET_PARAMS', [U.UBLK_U_CMD_GET_DEV_INFO]: 'GET_DEV_INFO',
  [U.UBLK_U_CMD_GET_DEV_INFO2]: 'GET_DEV_INFO2', [U.UBLK_U_CMD_START_USER_RECOVERY]: 'START_USER_RECOVERY',
  [U.UBLK_U_CMD_END_USER_RECOVERY]: 'END_USER_RECOVERY', [U.UBLK_U_CMD_DEL_DEV_ASYNC]: 'DEL_DEV_ASYNC',
  [U.UBLK_U_CMD_QUIESCE_DEV]: 'QUIESCE_DEV', [U.UBLK_U_CMD_UPDATE_SIZE]: 'UPDATE_SIZE', [U.UBLK_U_CMD_TRY_STOP_DEV]: 'TRY_STOP_DEV',
  [U.UBLK_U_CMD_REG_BUF]: 'REG_BUF', [U.UBLK_U_CMD_UNREG_BUF]: 'UNREG_BUF',
};

/** The machine is not ready for ublk (no driver, no permission, a kernel too old); the message says the fix. */
export class UblkSetupError extends Error {
  override name = 'UblkSetupError';
  constructor(message: string, readonly code: string) {
    super(message);
  }
}

/** A control command the kernel refused; `errno` is negative. */
export class UblkControlError extends Error {
  constructor(readonly command: string, readonly devId: number, readonly errno: number) {
    super(`${command} on device ${devId === AUTO_ID ? '(new)' : devId} failed: ${errnoName(errno)}`);
    this.name = 'UblkControlError';
  }
  get code(): string { return errnoName(this.errno); }
}

interface CmdArgs { devId: number; queueId?: number; buf?: Uint8Array; data?: number; devPathLen?: number }

/**
 * Commands on an unprivileged device (UBLK_F_UNPRIVILEGED_DEV) carry the
 * path of its char device at the start of their buffer (`dev_path_len`), and
 * the kernel checks the caller's permission on that node: read for queries,
 * read and write for the rest. ADD_DEV and GET_FEATURES name no device.
 */
const NO_DEVICE = new Set([U.UBLK_U_CMD_ADD_DEV, U.UBLK_U_CMD_GET_FEATURES]);

/** Whether this process is root (else its devices are unprivileged ones: UBLK_F_UNPRIVILEGED_DEV). */
export const isRoot = (): boolean => process.geteuid?.() === 0;

export class UblkControl {
  /** Devices seen to be unprivileged (their flags, from ADD_DEV or GET_DEV_INFO2): their commands carry the path. */
  private readonly unprivileged = new Set<number>();

  private constructor(private readonly fd: number, private readonly ring: AsyncRing) {}

  /** Opens the control device; the errors say what to do (load the driver, be root). */
  static open(path = CONTROL_PATH): UblkControl {
    let fd: number;
    try {
      fd = fs.openSync(path, fs.constants.O_RDWR);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new UblkSetupError(`${path} not found: load the ublk driver with \`modprobe ublk_drv\``, code);
      if (code === 'EACCES' || code === 'EPERM') {
        throw new UblkSetupError(`no permission to open ${path}: run as root, or let users create their own devices ` +
          `(README: unprivileged devices; e.g. \`chmod 0666 ${path}\`)`, code);
      }
      throw e;
    }
    try {
      return new UblkControl(fd, AsyncRing.create({ entries: 16, sqe128: true }));
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  close(): void {
    this.ring.close();
    fs.closeSync(this.fd);
  }

  /**
   * The path prefix for device commands where needed: for devices seen to be
   * unprivileged, and for every device when this process is not root (it
   * can only manage unprivileged ones).
   */
  private withPath(op: number, a: CmdArgs): CmdArgs {
    if (a.devPathLen !== undefined || NO_DEVICE.has(op) || (isRoot() && !this.unprivileged.has(a.devId))) return a;
    return { ...a, ...withDevPath(a.devId, a.buf) };
  }

  private async cmd(op: number, given: CmdArgs): Promise<number> {
    const a = this.withPath(op, given);
    const buf = a.buf;
    const { res } = await this.ring.submit((ring: Ring, s: number) => {
      prepUringCmd(ring, s, this.fd, op);
      const dv = new DataView(ring.sqeU8.buffer, ring.sqeU8.byteOffset);
      encode('ublksrv_ctrl_cmd', dv, s + SQE_CMD, {
        dev_id: a.devId,
        queue_id: a.queueId ?? ANY_QUEUE,
        len: buf ? buf.byteLength : 0,
        addr: buf ? native.addressOf(buf) : 0,
        data: a.data ?? 0,
        dev_path_len: a.devPathLen ?? 0,
      });
    });
    // `buf` is referenced until here, so the kernel's pointer stays valid for the whole command.
    void buf;
    if (res < 0) throw new UblkControlError(COMMAND_NAMES[op] ?? `0x${op.toString(16)}`, a.devId, res);
    // What the kernel wrote after the path (GET_PARAMS) goes back into the caller's buffer.
    if (given.buf && a.buf !== given.buf) given.buf.set(a.buf!.subarray(a.devPathLen!));
    return res;
  }

  /** Remembers whether device `id` is unprivileged (its commands then carry the path). */
  private note(info: DevInfo): DevInfo {
    if (Number(info.flags) & U.UBLK_F_UNPRIVILEGED_DEV) this.unprivileged.add(info.dev_id);
    else this.unprivileged.delete(info.dev_id);
    return info;
  }

  /** UBLK_F_* bits the running driver supports. */
  async getFeatures(): Promise<number> {
    const buf = new Uint8Array(U.UBLK_FEATURES_LEN);
    try {
      await this.cmd(U.UBLK_U_CMD_GET_FEATURES, { devId: AUTO_ID, buf });
    } catch (e) {
      // Drivers before Linux 6.5 do not know the command.
      if (e instanceof UblkControlError && [-EINVAL, -EOPNOTSUPP, -ENOTTY].includes(e.errno)) {
        throw new UblkSetupError(`this kernel's ublk driver is too old (no GET_FEATURES, ${e.code}): ublk-ts needs Linux 6.5 or later`, e.code);
      }
      throw e;
    }
    const dv = dataView(buf);
    return ((dv.getUint32(0, true) & ~HIDDEN_FEATURES) >>> 0) + dv.getUint32(4, true) * 2 ** 32;
  }

  /** ADD_DEV; returns the kernel's view: final id, clamped queue count, negotiated flags. */
  async addDev(info: Partial<DevInfo>): Promise<DevInfo> {
    const devId = info.dev_id ?? AUTO_ID;
    const buf = build('ublksrv_ctrl_dev_info', { ...info, dev_id: devId });
    await this.cmd(U.UBLK_U_CMD_ADD_DEV, { devId, buf });
    return this.note(decode('ublksrv_ctrl_dev_info', dataView(buf)));
  }

  async delDev(devId: number): Promise<void> { await this.cmd(U.UBLK_U_CMD_DEL_DEV, { devId }); }
  async stopDev(devId: number): Promise<void> { await this.cmd(U.UBLK_U_CMD_STOP_DEV, { devId }); }
  /** START_DEV: `pid` must be the process that opened /dev/ublkcN. Blocks until every tag is fetched. */
  async startDev(devId: number, pid: number): Promise<void> { await this.cmd(U.UBLK_U_CMD_START_DEV, { devId, data: pid }); }
  /** START_USER_RECOVERY: -EBUSY while /dev/ublkcN is still open or the device is not QUIESCED/FAIL_IO. */
  async startUserRecovery(devId: number): Promise<void> { await this.cmd(U.UBLK_U_CMD_START_USER_RECOVERY, { devId }); }
  /** END_USER_RECOVERY: `pid` as for START_DEV; blocks until every tag is fetched (or prepared), then the device is LIVE. */
  async endUserRecovery(devId: number, pid: number): Promise<void> {
    await this.cmd(U.UBLK_U_CMD_END_USER_RECOVERY, { devId, data: pid });
  }

  /**
   * QUIESCE_DEV (UBLK_F_QUIESCE): new IO is held, and once every queue has an
   * idle tag (within `timeoutMs`, else -EBUSY; 0: no limit) the server's
   * fetches are cancelled. The device becomes QUIESCED when the server closes /dev/ublkcN.
   */
  async quiesceDev(devId: number, timeoutMs: number): Promise<void> {
    await this.cmd(U.UBLK_U_CMD_QUIESCE_DEV, { devId, data: timeoutMs });
  }

  /** UPDATE_SIZE: the disk's new capacity in 512-byte sectors (the server must serve it). */
  async updateSize(devId: number, sectors: number): Promise<void> {
    await this.cmd(U.UBLK_U_CMD_UPDATE_SIZE, { devId, data: sectors });
  }

  /** TRY_STOP_DEV (UBLK_F_SAFE_STOP_DEV): STOP_DEV unless the disk is open (-EBUSY). */
  async tryStopDev(devId: number): Promise<void> {
    await this.cmd(U.UBLK_U_CMD_TRY_STOP_DEV, { devId });
  }

  /**
   * REG_BUF (UBLK_F_SHMEM_ZC): `reg` is a struct ublk_shmem_buf_reg
   * (shmem.ts); the kernel pins the pages it names. Returns the buffer's index.
   */
  regBuf(devId: number, reg: Uint8Array): Promise<number> {
    return this.cmd(U.UBLK_U_CMD_REG_BUF, { devId, buf: reg });
  }

  /** UNREG_BUF: unpins buffer `index` of REG_BUF. */
  async unregBuf(devId: number, index: number): Promise<void> {
    await this.cmd(U.UBLK_U_CMD_UNREG_BUF, { devId, data: index });
  }

  async setParams(devId: number, params: UblkParams): Promise<void> {
    await this.cmd(U.UBLK_U_CMD_SET_PARAMS, { devId, buf: encodeParams(params) });
  }

  async getParams(devId: number): Promise<DecodedParams> {
    const buf = paramsRequestBuffer();
    await this.cmd(U.UBLK_U_CMD_GET_PARAMS, { devId, buf });
    return decodeParams(buf);
  }

  /** GET_DEV_INFO2: the buffer starts with the char device's path (checked by the kernel). */
  async getDevInfo(devId: number): Promise<DevInfo> {
    const { buf, devPathLen } = withDevPath(devId, new Uint8Array(sizeOf('ublksrv_ctrl_dev_info')));
    await this.cmd(U.UBLK_U_CMD_GET_DEV_INFO2, { devId, buf, devPathLen });
    return this.note(decode('ublksrv_ctrl_dev_info', new DataView(buf.buffer, devPathLen)));
  }
}

export const charDevicePath = (id: number): string => `/dev/ublkc${id}`;

/** A command's buffer with device `id`'s char device path (NUL-terminated) before `payload`: `[path\0][payload]`. */
export function withDevPath(id: number, payload?: Uint8Array): { buf: Uint8Array; devPathLen: number } {
  const path = Buffer.from(`${charDevicePath(id)}\0`);
  const buf = new Uint8Array(path.length + (payload?.byteLength ?? 0));
  buf.set(path);
  if (payload) buf.set(payload, path.length);
  return { buf, devPathLen: path.length };
}
export const blockDevicePath = (id: number): string => `/dev/ublkb${id}`;
