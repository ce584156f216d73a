// Constants of the ublk UAPI, named exactly as in Linux 7.2's include/uapi/linux/ublk_cmd.h.
// test/host/uapi.test.ts compiles a C program against the real header and checks
// every UBLK* export here (and that none of the header's constants is missing).

// _IOC encoding on x86_64: dir<<30 | size<<16 | type<<8 | nr. The result can have
// bit 31 set, so build it as an unsigned 32-bit number.
const IOC_WRITE = 1;
const IOC_READ = 2;
const UBLK_IOC_TYPE = 0x75; // 'u'
const CTRL_CMD_SIZE = 32; // sizeof(struct ublksrv_ctrl_cmd)
const IO_CMD_SIZE = 16; // sizeof(struct ublksrv_io_cmd) == sizeof(struct ublk_batch_io)
const ioc = (dir: number, nr: number, size: number): number =>
  ((dir << 30) | (size << 16) | (UBLK_IOC_TYPE << 8) | nr) >>> 0;
const ctrlR = (nr: number) => ioc(IOC_READ, nr, CTRL_CMD_SIZE);
const ctrlRW = (nr: number) => ioc(IOC_READ | IOC_WRITE, nr, CTRL_CMD_SIZE);
const ioRW = (nr: number) => ioc(IOC_READ | IOC_WRITE, nr, IO_CMD_SIZE);

// Legacy (unencoded) control command numbers.
export const UBLK_CMD_GET_QUEUE_AFFINITY = 0x01;
export const UBLK_CMD_GET_DEV_INFO = 0x02;
export const UBLK_CMD_ADD_DEV = 0x04;
export const UBLK_CMD_DEL_DEV = 0x05;
export const UBLK_CMD_START_DEV = 0x06;
export const UBLK_CMD_STOP_DEV = 0x07;
export const UBLK_CMD_SET_PARAMS = 0x08;
export const UBLK_CMD_GET_PARAMS = 0x09;
export const UBLK_CMD_START_USER_RECOVERY = 0x10;
export const UBLK_CMD_END_USER_RECOVERY = 0x11;
export const UBLK_CMD_GET_DEV_INFO2 = 0x12;

// Encoded control commands: the only form we send (legacy opcodes may be compiled out).
export const UBLK_U_CMD_GET_QUEUE_AFFINITY = ctrlR(UBLK_CMD_GET_QUEUE_AFFINITY);
export const UBLK_U_CMD_GET_DEV_INFO = ctrlR(UBLK_CMD_GET_DEV_INFO);
export const UBLK_U_CMD_ADD_DEV = ctrlRW(UBLK_CMD_ADD_DEV);
export const UBLK_U_CMD_DEL_DEV = ctrlRW(UBLK_CMD_DEL_DEV);
export const UBLK_U_CMD_START_DEV = ctrlRW(UBLK_CMD_START_DEV);
export const UBLK_U_CMD_STOP_DEV = ctrlRW(UBLK_CMD_STOP_DEV);
export const UBLK_U_CMD_SET_PARAMS = ctrlRW(UBLK_CMD_SET_PARAMS);
export const UBLK_U_CMD_GET_PARAMS = ctrlR(UBLK_CMD_GET_PARAMS);
export const UBLK_U_CMD_START_USER_RECOVERY = ctrlRW(UBLK_CMD_START_USER_RECOVERY);
export const UBLK_U_CMD_END_USER_RECOVERY = ctrlRW(UBLK_CMD_END_USER_RECOVERY);
export const UBLK_U_CMD_GET_DEV_INFO2 = ctrlR(UBLK_CMD_GET_DEV_INFO2);
export const UBLK_U_CMD_GET_FEATURES = ctrlR(0x13);
export const UBLK_U_CMD_DEL_DEV_ASYNC = ctrlR(0x14);
export const UBLK_U_CMD_UPDATE_SIZE = ctrlRW(0x15);
export const UBLK_U_CMD_QUIESCE_DEV = ctrlRW(0x16);
export const UBLK_U_CMD_TRY_STOP_DEV = ctrlRW(0x17);
export const UBLK_U_CMD_REG_BUF = ctrlRW(0x18);
export const UBLK_U_CMD_UNREG_BUF = ctrlRW(0x19);

export const UBLK_SHMEM_BUF_READ_ONLY = 1 << 0;
export const UBLK_FEATURES_LEN = 8;

// Data-plane (per-tag and batch) commands on /dev/ublkcN.
export const UBLK_IO_FETCH_REQ = 0x20;
export const UBLK_IO_COMMIT_AND_FETCH_REQ = 0x21;
export const UBLK_IO_NEED_GET_DATA = 0x22;
export const UBLK_U_IO_FETCH_REQ = ioRW(UBLK_IO_FETCH_REQ);
export const UBLK_U_IO_COMMIT_AND_FETCH_REQ = ioRW(UBLK_IO_COMMIT_AND_FETCH_REQ);
export const UBLK_U_IO_NEED_GET_DATA = ioRW(UBLK_IO_NEED_GET_DATA);
export const UBLK_U_IO_REGISTER_IO_BUF = ioRW(0x23);
export const UBLK_U_IO_UNREGISTER_IO_BUF = ioRW(0x24);
export const UBLK_U_IO_PREP_IO_CMDS = ioRW(0x25);
export const UBLK_U_IO_COMMIT_IO_CMDS = ioRW(0x26);
export const UBLK_U_IO_FETCH_IO_CMDS = ioRW(0x27);

// Fetch completion results.
export const UBLK_IO_RES_OK = 0;
export const UBLK_IO_RES_NEED_GET_DATA = 1;
export const UBLK_IO_RES_ABORT = -19; // -ENODEV

// mmap offsets and the user-copy position encoding on /dev/ublkcN.
export const UBLKSRV_CMD_BUF_OFFSET = 0;
export const UBLKSRV_IO_BUF_OFFSET = 0x80000000;
export const UBLK_MAX_QUEUE_DEPTH = 4096;
export const UBLK_IO_BUF_OFF = 0;
export const UBLK_IO_BUF_BITS = 25;
export const UBLK_IO_BUF_BITS_MASK = 2 ** UBLK_IO_BUF_BITS - 1;
export const UBLK_TAG_OFF = UBLK_IO_BUF_BITS;
export const UBLK_TAG_BITS = 16;
export const UBLK_TAG_BITS_MASK = 2 ** UBLK_TAG_BITS - 1;
export const UBLK_QID_OFF = UBLK_TAG_OFF + UBLK_TAG_BITS;
export const UBLK_QID_BITS = 12;
export const UBLK_QID_BITS_MASK = 2 ** UBLK_QID_BITS - 1;
export const UBLK_MAX_NR_QUEUES = 2 ** UBLK_QID_BITS;
export const UBLKSRV_IO_BUF_TOTAL_BITS = UBLK_QID_OFF + UBLK_QID_BITS;
export const UBLKSRV_IO_BUF_TOTAL_SIZE = 2 ** UBLKSRV_IO_BUF_TOTAL_BITS;
export const UBLK_INTEGRITY_FLAG_OFF = 62;
export const UBLKSRV_IO_INTEGRITY_FLAG = 1n << 62n;

// Device features (ublksrv_ctrl_dev_info.flags).
export const UBLK_F_SUPPORT_ZERO_COPY = 1 << 0;
export const UBLK_F_URING_CMD_COMP_IN_TASK = 1 << 1;
export const UBLK_F_NEED_GET_DATA = 1 << 2;
export const UBLK_F_USER_RECOVERY = 1 << 3;
export const UBLK_F_USER_RECOVERY_REISSUE = 1 << 4;
export const UBLK_F_UNPRIVILEGED_DEV = 1 << 5;
export const UBLK_F_CMD_IOCTL_ENCODE = 1 << 6;
export const UBLK_F_USER_COPY = 1 << 7;
export const UBLK_F_ZONED = 1 << 8;
export const UBLK_F_USER_RECOVERY_FAIL_IO = 1 << 9;
export const UBLK_F_UPDATE_SIZE = 1 << 10;
export const UBLK_F_AUTO_BUF_REG = 1 << 11;
export const UBLK_F_QUIESCE = 1 << 12;
export const UBLK_F_PER_IO_DAEMON = 1 << 13;
export const UBLK_F_BUF_REG_OFF_DAEMON = 1 << 14;
export const UBLK_F_BATCH_IO = 1 << 15;
export const UBLK_F_INTEGRITY = 1 << 16;
export const UBLK_F_SAFE_STOP_DEV = 1 << 17;
export const UBLK_F_NO_AUTO_PART_SCAN = 1 << 18;
export const UBLK_F_SHMEM_ZC = 1 << 19;

// Device states (ublksrv_ctrl_dev_info.state).
export const UBLK_S_DEV_DEAD = 0;
export const UBLK_S_DEV_LIVE = 1;
export const UBLK_S_DEV_QUIESCED = 2;
export const UBLK_S_DEV_FAIL_IO = 3;

// Request ops: ublksrv_io_desc.op_flags & 0xff.
export const UBLK_IO_OP_READ = 0;
export const UBLK_IO_OP_WRITE = 1;
export const UBLK_IO_OP_FLUSH = 2;
export const UBLK_IO_OP_DISCARD = 3;
export const UBLK_IO_OP_WRITE_SAME = 4;
export const UBLK_IO_OP_WRITE_ZEROES = 5;
export const UBLK_IO_OP_ZONE_OPEN = 10;
export const UBLK_IO_OP_ZONE_CLOSE = 11;
export const UBLK_IO_OP_ZONE_FINISH = 12;
export const UBLK_IO_OP_ZONE_APPEND = 13;
export const UBLK_IO_OP_ZONE_RESET_ALL = 14;
export const UBLK_IO_OP_ZONE_RESET = 15;
export const UBLK_IO_OP_REPORT_ZONES = 18;

// linux/blkzoned.h, part of the ublk UAPI for zoned devices: a REPORT_ZONES
// reply is an array of struct blk_zone (LAYOUTS.blk_zone) with these codes.
export const BLK_ZONE_TYPE_CONVENTIONAL = 0x1;
export const BLK_ZONE_TYPE_SEQWRITE_REQ = 0x2;
export const BLK_ZONE_COND_NOT_WP = 0x0;
export const BLK_ZONE_COND_EMPTY = 0x1;
export const BLK_ZONE_COND_IMP_OPEN = 0x2;
export const BLK_ZONE_COND_EXP_OPEN = 0x3;
export const BLK_ZONE_COND_CLOSED = 0x4;
export const BLK_ZONE_COND_FULL = 0xe;

// Request flags: already shifted, test them against op_flags directly.
export const UBLK_IO_F_FAILFAST_DEV = 1 << 8;
export const UBLK_IO_F_FAILFAST_TRANSPORT = 1 << 9;
export const UBLK_IO_F_FAILFAST_DRIVER = 1 << 10;
export const UBLK_IO_F_META = 1 << 11;
export const UBLK_IO_F_FUA = 1 << 13;
export const UBLK_IO_F_NOUNMAP = 1 << 15;
export const UBLK_IO_F_SWAP = 1 << 16;
export const UBLK_IO_F_NEED_REG_BUF = 1 << 17;
export const UBLK_IO_F_INTEGRITY = 1 << 18;
export const UBLK_IO_F_SHMEM_ZC = 1 << 19;

export const UBLK_AUTO_BUF_REG_FALLBACK = 1 << 0;
export const UBLK_AUTO_BUF_REG_F_MASK = UBLK_AUTO_BUF_REG_FALLBACK;

export const UBLK_BATCH_F_HAS_ZONE_LBA = 1 << 0;
export const UBLK_BATCH_F_HAS_BUF_ADDR = 1 << 1;
export const UBLK_BATCH_F_AUTO_BUF_REG_FALLBACK = 1 << 2;

export const UBLK_ATTR_READ_ONLY = 1 << 0;
export const UBLK_ATTR_ROTATIONAL = 1 << 1;
export const UBLK_ATTR_VOLATILE_CACHE = 1 << 2;
export const UBLK_ATTR_FUA = 1 << 3;

export const UBLK_MIN_SEGMENT_SIZE = 4096;

export const UBLK_PARAM_TYPE_BASIC = 1 << 0;
export const UBLK_PARAM_TYPE_DISCARD = 1 << 1;
export const UBLK_PARAM_TYPE_DEVT = 1 << 2;
export const UBLK_PARAM_TYPE_ZONED = 1 << 3;
export const UBLK_PARAM_TYPE_DMA_ALIGN = 1 << 4;
export const UBLK_PARAM_TYPE_SEGMENT = 1 << 5;
export const UBLK_PARAM_TYPE_INTEGRITY = 1 << 6;

export const UBLK_SHMEM_ZC_OFF_MASK = 0xffffffff;
export const UBLK_SHMEM_ZC_IDX_OFF = 32;
export const UBLK_SHMEM_ZC_IDX_MASK = 0xffff;

// UBLK_PARAM_TYPE_INTEGRITY's flags and csum_type take these values of linux/fs.h.
export const LBMD_PI_CAP_INTEGRITY = 1 << 0;
export const LBMD_PI_CAP_REFTAG = 1 << 1;
export const LBMD_PI_CSUM_NONE = 0;
export const LBMD_PI_CSUM_IP = 1;
export const LBMD_PI_CSUM_CRC16_T10DIF = 2;
export const LBMD_PI_CSUM_CRC64_NVME = 4;

/** Feature names by bit, for `features` and `list` output. */
export const FEATURE_NAMES: ReadonlyArray<readonly [number, string]> = [
  [UBLK_F_SUPPORT_ZERO_COPY, 'SUPPORT_ZERO_COPY'],
  [UBLK_F_URING_CMD_COMP_IN_TASK, 'URING_CMD_COMP_IN_TASK'],
  [UBLK_F_NEED_GET_DATA, 'NEED_GET_DATA'],
  [UBLK_F_USER_RECOVERY, 'USER_RECOVERY'],
  [UBLK_F_USER_RECOVERY_REISSUE, 'USER_RECOVERY_REISSUE'],
  [UBLK_F_UNPRIVILEGED_DEV, 'UNPRIVILEGED_DEV'],
  [UBLK_F_CMD_IOCTL_ENCODE, 'CMD_IOCTL_ENCODE'],
  [UBLK_F_USER_COPY, 'USER_COPY'],
  [UBLK_F_ZONED, 'ZONED'],
  [UBLK_F_USER_RECOVERY_FAIL_IO, 'USER_RECOVERY_FAIL_IO'],
  [UBLK_F_UPDATE_SIZE, 'UPDATE_SIZE'],
  [UBLK_F_AUTO_BUF_REG, 'AUTO_BUF_REG'],
  [UBLK_F_QUIESCE, 'QUIESCE'],
  [UBLK_F_PER_IO_DAEMON, 'PER_IO_DAEMON'],
  [UBLK_F_BUF_REG_OFF_DAEMON, 'BUF_REG_OFF_DAEMON'],
  [UBLK_F_BATCH_IO, 'BATCH_IO'],
  [UBLK_F_INTEGRITY, 'INTEGRITY'],
  [UBLK_F_SAFE_STOP_DEV, 'SAFE_STOP_DEV'],
  [UBLK_F_NO_AUTO_PART_SCAN, 'NO_AUTO_PART_SCAN'],
  [UBLK_F_SHMEM_ZC, 'SHMEM_ZC'],
];

/** Names of the UBLK_F_* bits set in `flags`; unknown bits as hex. */
export function featureNames(flags: number): string[] {
  const names: string[] = [];
  let rest = flags;
  for (const [bit, name] of FEATURE_NAMES) {
    if (flags & bit) names.push(name);
    rest &= ~bit;
  }
  if (rest) names.push('0x' + (rest >>> 0).toString(16));
  return names;
}

export const STATE_NAMES: Record<number, string> = {
  [UBLK_S_DEV_DEAD]: 'dead',
  [UBLK_S_DEV_LIVE]: 'live',
  [UBLK_S_DEV_QUIESCED]: 'quiesced',
  [UBLK_S_DEV_FAIL_IO]: 'fail_io',
};
