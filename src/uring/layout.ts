// Byte layouts of the io_uring UAPI structs (include/uapi/linux/io_uring.h),
// keyed by C struct name, fields by their C names (anonymous-union members by
// their own names). This table is the only place io_uring byte offsets appear;
// a host test compiles the header and checks every entry with offsetof/sizeof.

export type Layout = { size: number; fields: Record<string, readonly [offset: number, size: number]> };

export const LAYOUTS = {
  io_uring_sqe: {
    size: 64,
    fields: {
      opcode: [0, 1], flags: [1, 1], ioprio: [2, 2], fd: [4, 4],
      off: [8, 8], addr2: [8, 8], cmd_op: [8, 4],
      addr: [16, 8], splice_off_in: [16, 8], level: [16, 4], optname: [20, 4],
      len: [24, 4],
      rw_flags: [28, 4], fsync_flags: [28, 4], poll32_events: [28, 4], timeout_flags: [28, 4],
      accept_flags: [28, 4], cancel_flags: [28, 4], open_flags: [28, 4], msg_ring_flags: [28, 4],
      uring_cmd_flags: [28, 4], nop_flags: [28, 4],
      user_data: [32, 8],
      buf_index: [40, 2], buf_group: [40, 2], personality: [42, 2],
      splice_fd_in: [44, 4], file_index: [44, 4], optlen: [44, 4], addr_len: [44, 2],
      addr3: [48, 8], optval: [48, 8],
      // Command payload of IORING_OP_URING_CMD: 16 bytes in a 64-byte SQE, 80
      // with IORING_SETUP_SQE128 (C declares it `__u8 cmd[0]`).
      cmd: [48, 16],
    },
  },
  io_uring_cqe: {
    size: 16,
    fields: { user_data: [0, 8], res: [8, 4], flags: [12, 4] },
  },
  io_sqring_offsets: {
    size: 40,
    fields: {
      head: [0, 4], tail: [4, 4], ring_mask: [8, 4], ring_entries: [12, 4], flags: [16, 4],
      dropped: [20, 4], array: [24, 4], resv1: [28, 4], user_addr: [32, 8],
    },
  },
  io_cqring_offsets: {
    size: 40,
    fields: {
      head: [0, 4], tail: [4, 4], ring_mask: [8, 4], ring_entries: [12, 4], overflow: [16, 4],
      cqes: [20, 4], flags: [24, 4], resv1: [28, 4], user_addr: [32, 8],
    },
  },
  io_uring_params: {
    size: 120,
    fields: {
      sq_entries: [0, 4], cq_entries: [4, 4], flags: [8, 4], sq_thread_cpu: [12, 4], sq_thread_idle: [16, 4],
      features: [20, 4], wq_fd: [24, 4], resv: [28, 12], sq_off: [40, 40], cq_off: [80, 40],
    },
  },
  io_uring_rsrc_register: {
    size: 32,
    fields: { nr: [0, 4], flags: [4, 4], resv2: [8, 8], data: [16, 8], tags: [24, 8] },
  },
  io_uring_buf_reg: {
    size: 40,
    fields: { ring_addr: [0, 8], ring_entries: [8, 4], bgid: [12, 2], flags: [14, 2], min_left: [16, 4], resv: [20, 20] },
  },
  io_uring_buf: {
    size: 16,
    fields: { addr: [0, 8], len: [8, 4], bid: [12, 2], resv: [14, 2] },
  },
  // The ring header overlays entry 0: its u16 tail is entry 0's resv.
  io_uring_buf_ring: {
    size: 16,
    fields: { resv1: [0, 8], resv2: [8, 4], resv3: [12, 2], tail: [14, 2] },
  },
  __kernel_timespec: {
    size: 16,
    fields: { tv_sec: [0, 8], tv_nsec: [8, 8] },
  },
  io_uring_getevents_arg: {
    size: 24,
    fields: { sigmask: [0, 8], sigmask_sz: [8, 4], min_wait_usec: [12, 4], ts: [16, 8] },
  },
} as const satisfies Record<string, Layout>;

/** struct iovec (<sys/uio.h>, not io_uring.h), as IORING_REGISTER_BUFFERS reads it. */
export const IOVEC = { size: 16, fields: { iov_base: [0, 8], iov_len: [8, 8] } } as const satisfies Layout;
