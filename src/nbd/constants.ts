// Numbers of the NBD protocol (NetworkBlockDevice/nbd, doc/proto.md), by the
// names the specification gives them.

/** 'NBDMAGIC': the first 8 bytes a server sends. */
export const NBDMAGIC = 0x4e42444d41474943n;
/** 'IHAVEOPT': newstyle negotiation, and the prefix of every option the client sends. */
export const IHAVEOPT = 0x49484156454f5054n;
/** The oldstyle negotiation's second magic, which we do not speak. */
export const CLISERV_MAGIC = 0x00420281861253n;
/** Prefix of every option reply. */
export const OPT_REPLY_MAGIC = 0x3e889045565a9n;

// Handshake flags (server) and client flags.
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

// Options.
export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;

// Option reply types; errors have bit 31 set.
export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_FLAG_ERROR = 0x80000000;
export const NBD_REP_ERR_UNSUP = NBD_REP_FLAG_ERROR + 1;
export const NBD_REP_ERR_POLICY = NBD_REP_FLAG_ERROR + 2;
export const NBD_REP_ERR_INVALID = NBD_REP_FLAG_ERROR + 3;
export const NBD_REP_ERR_PLATFORM = NBD_REP_FLAG_ERROR + 4;
export const NBD_REP_ERR_TLS_REQD = NBD_REP_FLAG_ERROR + 5;
export const NBD_REP_ERR_UNKNOWN = NBD_REP_FLAG_ERROR + 6;
export const NBD_REP_ERR_SHUTDOWN = NBD_REP_FLAG_ERROR + 7;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = NBD_REP_FLAG_ERROR + 8;
export const NBD_REP_ERR_TOO_BIG = NBD_REP_FLAG_ERROR + 9;

export const REP_ERROR_NAMES: Record<number, string> = {
  [NBD_REP_ERR_UNSUP]: 'unsupported option', [NBD_REP_ERR_POLICY]: 'refused by policy',
  [NBD_REP_ERR_INVALID]: 'invalid request', [NBD_REP_ERR_PLATFORM]: 'not supported on the server\'s platform',
  [NBD_REP_ERR_TLS_REQD]: 'TLS required', [NBD_REP_ERR_UNKNOWN]: 'no such export',
  [NBD_REP_ERR_SHUTDOWN]: 'server shutting down', [NBD_REP_ERR_BLOCK_SIZE_REQD]: 'block size negotiation required',
  [NBD_REP_ERR_TOO_BIG]: 'request too big',
};

// NBD_REP_INFO types.
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_BLOCK_SIZE = 3;

// Transmission flags.
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;

// Transmission: requests and simple replies.
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;
export const REQUEST_BYTES = 28;
export const SIMPLE_REPLY_BYTES = 16;

export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_WRITE_ZEROES = 6;

export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;

/** A request the server did not do because it is going away: the client is to disconnect (and, here, send it again). */
export const NBD_ESHUTDOWN = 108;
/**
 * Error values of replies that fail their request: the specification takes
 * them from Linux, so they are our errnos (NBD_ESHUTDOWN fails none: it ends the connection).
 */
export const NBD_ERRNOS: ReadonlySet<number> = new Set([1 /* EPERM */, 5 /* EIO */, 12 /* ENOMEM */, 22 /* EINVAL */,
  28 /* ENOSPC */, 75 /* EOVERFLOW */, 95 /* ENOTSUP */]);

/** Default port of the IANA registration. */
export const NBD_DEFAULT_PORT = 10809;
