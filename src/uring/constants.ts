// io_uring UAPI constants, named exactly as in include/uapi/linux/io_uring.h
// (a host test compiles the header and compares every IORING_*/IOSQE_*/IOU_*
// export here). Values that are unsigned 32-bit in C stay positive here.

// sqe->flags
export const IOSQE_FIXED_FILE = 1 << 0;
export const IOSQE_IO_DRAIN = 1 << 1;
export const IOSQE_IO_LINK = 1 << 2;
export const IOSQE_IO_HARDLINK = 1 << 3;
export const IOSQE_ASYNC = 1 << 4;
export const IOSQE_BUFFER_SELECT = 1 << 5;
export const IOSQE_CQE_SKIP_SUCCESS = 1 << 6;

// io_uring_setup() flags
export const IORING_SETUP_IOPOLL = 1 << 0;
export const IORING_SETUP_SQPOLL = 1 << 1;
export const IORING_SETUP_SQ_AFF = 1 << 2;
export const IORING_SETUP_CQSIZE = 1 << 3;
export const IORING_SETUP_CLAMP = 1 << 4;
export const IORING_SETUP_ATTACH_WQ = 1 << 5;
export const IORING_SETUP_R_DISABLED = 1 << 6;
export const IORING_SETUP_SUBMIT_ALL = 1 << 7;
export const IORING_SETUP_COOP_TASKRUN = 1 << 8;
export const IORING_SETUP_TASKRUN_FLAG = 1 << 9;
export const IORING_SETUP_SQE128 = 1 << 10;
export const IORING_SETUP_CQE32 = 1 << 11;
export const IORING_SETUP_SINGLE_ISSUER = 1 << 12;
export const IORING_SETUP_DEFER_TASKRUN = 1 << 13;
export const IORING_SETUP_NO_MMAP = 1 << 14;
export const IORING_SETUP_REGISTERED_FD_ONLY = 1 << 15;
export const IORING_SETUP_NO_SQARRAY = 1 << 16;
export const IORING_SETUP_HYBRID_IOPOLL = 1 << 17;

// enum io_uring_op
export const IORING_OP_NOP = 0;
export const IORING_OP_READV = 1;
export const IORING_OP_WRITEV = 2;
export const IORING_OP_FSYNC = 3;
export const IORING_OP_READ_FIXED = 4;
export const IORING_OP_WRITE_FIXED = 5;
export const IORING_OP_POLL_ADD = 6;
export const IORING_OP_POLL_REMOVE = 7;
export const IORING_OP_SYNC_FILE_RANGE = 8;
export const IORING_OP_SENDMSG = 9;
export const IORING_OP_RECVMSG = 10;
export const IORING_OP_TIMEOUT = 11;
export const IORING_OP_TIMEOUT_REMOVE = 12;
export const IORING_OP_ACCEPT = 13;
export const IORING_OP_ASYNC_CANCEL = 14;
export const IORING_OP_LINK_TIMEOUT = 15;
export const IORING_OP_CONNECT = 16;
export const IORING_OP_FALLOCATE = 17;
export const IORING_OP_OPENAT = 18;
export const IORING_OP_CLOSE = 19;
export const IORING_OP_FILES_UPDATE = 20;
export const IORING_OP_STATX = 21;
export const IORING_OP_READ = 22;
export const IORING_OP_WRITE = 23;
export const IORING_OP_FADVISE = 24;
export const IORING_OP_MADVISE = 25;
export const IORING_OP_SEND = 26;
export const IORING_OP_RECV = 27;
export const IORING_OP_OPENAT2 = 28;
export const IORING_OP_EPOLL_CTL = 29;
export const IORING_OP_SPLICE = 30;
export const IORING_OP_PROVIDE_BUFFERS = 31;
export const IORING_OP_REMOVE_BUFFERS = 32;
export const IORING_OP_TEE = 33;
export const IORING_OP_SHUTDOWN = 34;
export const IORING_OP_RENAMEAT = 35;
export const IORING_OP_UNLINKAT = 36;
export const IORING_OP_MKDIRAT = 37;
export const IORING_OP_SYMLINKAT = 38;
export const IORING_OP_LINKAT = 39;
export const IORING_OP_MSG_RING = 40;
export const IORING_OP_FSETXATTR = 41;
export const IORING_OP_SETXATTR = 42;
export const IORING_OP_FGETXATTR = 43;
export const IORING_OP_GETXATTR = 44;
export const IORING_OP_SOCKET = 45;
export const IORING_OP_URING_CMD = 46;
export const IORING_OP_SEND_ZC = 47;
export const IORING_OP_SENDMSG_ZC = 48;
export const IORING_OP_READ_MULTISHOT = 49;
export const IORING_OP_WAITID = 50;
export const IORING_OP_FUTEX_WAIT = 51;
export const IORING_OP_FUTEX_WAKE = 52;
export const IORING_OP_FUTEX_WAITV = 53;
export const IORING_OP_FIXED_FD_INSTALL = 54;
export const IORING_OP_FTRUNCATE = 55;
export const IORING_OP_BIND = 56;
export const IORING_OP_LISTEN = 57;
export const IORING_OP_RECV_ZC = 58;
export const IORING_OP_EPOLL_WAIT = 59;
export const IORING_OP_READV_FIXED = 60;
export const IORING_OP_WRITEV_FIXED = 61;
export const IORING_OP_PIPE = 62;

// sqe->uring_cmd_flags (the top 8 bits belong to the kernel)
export const IORING_URING_CMD_FIXED = 1 << 0;
export const IORING_URING_CMD_MULTISHOT = 1 << 1;
export const IORING_URING_CMD_MASK = IORING_URING_CMD_FIXED | IORING_URING_CMD_MULTISHOT;

// sqe->fsync_flags
export const IORING_FSYNC_DATASYNC = 1 << 0;

// sqe->timeout_flags
export const IORING_TIMEOUT_ABS = 1 << 0;
export const IORING_TIMEOUT_UPDATE = 1 << 1;
export const IORING_TIMEOUT_BOOTTIME = 1 << 2;
export const IORING_TIMEOUT_REALTIME = 1 << 3;
export const IORING_LINK_TIMEOUT_UPDATE = 1 << 4;
export const IORING_TIMEOUT_ETIME_SUCCESS = 1 << 5;
export const IORING_TIMEOUT_MULTISHOT = 1 << 6;

// sqe->cancel_flags (IORING_OP_ASYNC_CANCEL)
export const IORING_ASYNC_CANCEL_ALL = 1 << 0;
export const IORING_ASYNC_CANCEL_FD = 1 << 1;
export const IORING_ASYNC_CANCEL_ANY = 1 << 2;
export const IORING_ASYNC_CANCEL_FD_FIXED = 1 << 3;
export const IORING_ASYNC_CANCEL_USERDATA = 1 << 4;
export const IORING_ASYNC_CANCEL_OP = 1 << 5;

// sqe->nop_flags
export const IORING_NOP_INJECT_RESULT = 1 << 0;

// sqe->file_index: let the kernel pick a free direct descriptor (~0U)
export const IORING_FILE_INDEX_ALLOC = 0xffffffff;

// cqe->flags
export const IORING_CQE_F_BUFFER = 1 << 0;
export const IORING_CQE_F_MORE = 1 << 1;
export const IORING_CQE_F_SOCK_NONEMPTY = 1 << 2;
export const IORING_CQE_F_NOTIF = 1 << 3;
export const IORING_CQE_F_BUF_MORE = 1 << 4;
export const IORING_CQE_BUFFER_SHIFT = 16;

// mmap(2) offsets of the ring regions
export const IORING_OFF_SQ_RING = 0;
export const IORING_OFF_CQ_RING = 0x8000000;
export const IORING_OFF_SQES = 0x10000000;
export const IORING_OFF_PBUF_RING = 0x80000000;
export const IORING_OFF_PBUF_SHIFT = 16;
export const IORING_OFF_MMAP_MASK = 0xf8000000;

// sq_ring->flags
export const IORING_SQ_NEED_WAKEUP = 1 << 0;
export const IORING_SQ_CQ_OVERFLOW = 1 << 1;
export const IORING_SQ_TASKRUN = 1 << 2;

// cq_ring->flags
export const IORING_CQ_EVENTFD_DISABLED = 1 << 0;

// io_uring_enter(2) flags
export const IORING_ENTER_GETEVENTS = 1 << 0;
export const IORING_ENTER_SQ_WAKEUP = 1 << 1;
export const IORING_ENTER_SQ_WAIT = 1 << 2;
export const IORING_ENTER_EXT_ARG = 1 << 3;
export const IORING_ENTER_REGISTERED_RING = 1 << 4;

// io_uring_params->features
export const IORING_FEAT_SINGLE_MMAP = 1 << 0;
export const IORING_FEAT_NODROP = 1 << 1;
export const IORING_FEAT_SUBMIT_STABLE = 1 << 2;
export const IORING_FEAT_RW_CUR_POS = 1 << 3;
export const IORING_FEAT_CUR_PERSONALITY = 1 << 4;
export const IORING_FEAT_FAST_POLL = 1 << 5;
export const IORING_FEAT_POLL_32BITS = 1 << 6;
export const IORING_FEAT_SQPOLL_NONFIXED = 1 << 7;
export const IORING_FEAT_EXT_ARG = 1 << 8;
export const IORING_FEAT_NATIVE_WORKERS = 1 << 9;
export const IORING_FEAT_RSRC_TAGS = 1 << 10;
export const IORING_FEAT_CQE_SKIP = 1 << 11;
export const IORING_FEAT_LINKED_FILE = 1 << 12;
export const IORING_FEAT_REG_REG_RING = 1 << 13;
export const IORING_FEAT_RECVSEND_BUNDLE = 1 << 14;
export const IORING_FEAT_MIN_TIMEOUT = 1 << 15;

// sqe->ioprio of SEND/RECV
/** The buffer is registered buffer sqe->buf_index (RECV: Linux 7.2 takes it; 6.18 fails it with -EINVAL). */
export const IORING_RECVSEND_FIXED_BUF = 1 << 2;

// enum io_uring_register_op
export const IORING_REGISTER_BUFFERS = 0;
export const IORING_UNREGISTER_BUFFERS = 1;
export const IORING_REGISTER_FILES = 2;
export const IORING_UNREGISTER_FILES = 3;
export const IORING_REGISTER_EVENTFD = 4;
export const IORING_UNREGISTER_EVENTFD = 5;
export const IORING_REGISTER_FILES_UPDATE = 6;
export const IORING_REGISTER_EVENTFD_ASYNC = 7;
export const IORING_REGISTER_PROBE = 8;
export const IORING_REGISTER_PERSONALITY = 9;
export const IORING_UNREGISTER_PERSONALITY = 10;
export const IORING_REGISTER_RESTRICTIONS = 11;
export const IORING_REGISTER_ENABLE_RINGS = 12;
export const IORING_REGISTER_FILES2 = 13;
export const IORING_REGISTER_FILES_UPDATE2 = 14;
export const IORING_REGISTER_BUFFERS2 = 15;
export const IORING_REGISTER_BUFFERS_UPDATE = 16;
export const IORING_REGISTER_IOWQ_AFF = 17;
export const IORING_UNREGISTER_IOWQ_AFF = 18;
export const IORING_REGISTER_IOWQ_MAX_WORKERS = 19;
export const IORING_REGISTER_RING_FDS = 20;
export const IORING_UNREGISTER_RING_FDS = 21;
export const IORING_REGISTER_PBUF_RING = 22;
export const IORING_UNREGISTER_PBUF_RING = 23;
export const IORING_REGISTER_SYNC_CANCEL = 24;
export const IORING_REGISTER_FILE_ALLOC_RANGE = 25;
export const IORING_REGISTER_PBUF_STATUS = 26;
export const IORING_REGISTER_NAPI = 27;
export const IORING_UNREGISTER_NAPI = 28;
export const IORING_REGISTER_CLOCK = 29;
export const IORING_REGISTER_CLONE_BUFFERS = 30;
export const IORING_REGISTER_SEND_MSG_RING = 31;
export const IORING_REGISTER_RESIZE_RINGS = 33;
export const IORING_REGISTER_MEM_REGION = 34;
export const IORING_REGISTER_USE_REGISTERED_RING = 0x80000000;

// io_uring_rsrc_register->flags
export const IORING_RSRC_REGISTER_SPARSE = 1 << 0;
// An fd slot value in IORING_REGISTER_FILES_UPDATE that leaves the slot alone
export const IORING_REGISTER_FILES_SKIP = -2;

// io_uring_buf_reg->flags (IORING_REGISTER_PBUF_RING)
export const IOU_PBUF_RING_MMAP = 1;
export const IOU_PBUF_RING_INC = 2;

// IORING_OP_URING_CMD cmd_op values when the file is a socket
export const SOCKET_URING_OP_SIOCINQ = 0;
export const SOCKET_URING_OP_SIOCOUTQ = 1;
export const SOCKET_URING_OP_SETSOCKOPT = 3;
