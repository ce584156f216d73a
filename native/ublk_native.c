/*
 * ublk_native: the few syscalls and memory primitives Node lacks, nothing more.
 * It knows io_uring only as three syscall numbers and ublk not at all; every
 * struct is built and parsed in TypeScript (src/uring/layout.ts).
 *
 * Hot-path entry points (enter, register) return -errno instead of throwing.
 */
#define _GNU_SOURCE
#include <node_api.h>
#include <uv.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/resource.h>
#include <time.h>

#define ARGS(n)                                                   \
  size_t argc = (n);                                              \
  napi_value argv[(n)];                                           \
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);           \
  for (size_t i_ = argc; i_ < (n); i_++) napi_get_undefined(env, &argv[i_])

static napi_value num(napi_env env, double v) {
  napi_value r;
  napi_create_double(env, v, &r);
  return r;
}

static uint32_t u32(napi_env env, napi_value v) {
  uint32_t r = 0;
  napi_get_value_uint32(env, v, &r);
  return r;
}

static int32_t i32(napi_env env, napi_value v) {
  int32_t r = 0;
  napi_get_value_int32(env, v, &r);
  return r;
}

static int64_t i64(napi_env env, napi_value v) {
  int64_t r = 0;
  napi_get_value_int64(env, v, &r);
  return r;
}

/* Throws Error{code: 'EINVAL', errno: -22}, the shape src/native.ts expects. */
static napi_value throw_errno(napi_env env, int err, const char *what) {
  const char *name = strerrorname_np(err);
  char msg[256];
  napi_value code, text, e;
  snprintf(msg, sizeof msg, "%s: %s (%s)", what, strerror(err), name ? name : "?");
  napi_create_string_utf8(env, name ? name : "EUNKNOWN", NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &text);
  napi_create_error(env, code, text, &e);
  napi_set_named_property(env, e, "errno", num(env, -err));
  napi_throw(env, e);
  return NULL;
}

/* First byte of an ArrayBuffer or view (napi already adds a view's byteOffset). */
static void *bytes_of(napi_env env, napi_value v, size_t *len) {
  static const uint8_t esize[] = {1, 1, 1, 2, 2, 4, 4, 4, 8, 8, 8};
  bool is = false;
  void *data = NULL;
  size_t n = 0;
  napi_typedarray_type t;
  if (napi_is_arraybuffer(env, v, &is) == napi_ok && is) {
    napi_get_arraybuffer_info(env, v, &data, &n);
  } else if (napi_is_typedarray(env, v, &is) == napi_ok && is) {
    napi_get_typedarray_info(env, v, &t, &n, &data, NULL, NULL);
    n *= (size_t)t < sizeof esize ? esize[t] : 1;
  } else if (napi_is_dataview(env, v, &is) == napi_ok && is) {
    napi_get_dataview_info(env, v, &n, &data, NULL, NULL);
  }
  if (len) *len = n;
  return data;
}

static napi_value js_setup(napi_env env, napi_callback_info info) {
  ARGS(2);
  size_t len = 0;
  void *params = bytes_of(env, argv[1], &len);
  if (!params || len < 120) return throw_errno(env, EINVAL, "io_uring_setup params");
  long fd = syscall(__NR_io_uring_setup, u32(env, argv[0]), params);
  if (fd < 0) return throw_errno(env, errno, "io_uring_setup");
  return num(env, (double)fd);
}

static napi_value js_enter(napi_env env, napi_callback_info info) {
  ARGS(4);
  long r = syscall(__NR_io_uring_enter, i32(env, argv[0]), u32(env, argv[1]),
                   u32(env, argv[2]), u32(env, argv[3]), NULL, 0);
  return num(env, r < 0 ? -errno : (double)r);
}

/* io_uring_enter(2) with an extended argument (IORING_ENTER_EXT_ARG: the
 * bytes of a struct io_uring_getevents_arg); returns the result or -errno. */
static napi_value js_enter_arg(napi_env env, napi_callback_info info) {
  ARGS(5);
  size_t len = 0;
  void *arg = bytes_of(env, argv[4], &len);
  long r = syscall(__NR_io_uring_enter, i32(env, argv[0]), u32(env, argv[1]),
                   u32(env, argv[2]), u32(env, argv[3]), arg, len);
  return num(env, r < 0 ? -errno : (double)r);
}

static napi_value js_register(napi_env env, napi_callback_info info) {
  ARGS(4);
  napi_valuetype t;
  void *arg = NULL;
  napi_typeof(env, argv[2], &t);
  if (t != napi_null && t != napi_undefined && !(arg = bytes_of(env, argv[2], NULL)))
    return num(env, -EINVAL);
  long r = syscall(__NR_io_uring_register, i32(env, argv[0]), u32(env, argv[1]), arg,
                   u32(env, argv[3]));
  return num(env, r < 0 ? -errno : (double)r);
}

/*
 * A mapping is handed to JS as an external ArrayBuffer. The struct is both the
 * finalizer hint and a napi_wrap on the buffer, so munmap() can find it; addr
 * is cleared once unmapped so the finalizer never unmaps twice.
 */
struct mapping {
  void *addr;
  size_t len;
};

static void mapping_finalize(napi_env env, void *data, void *hint) {
  struct mapping *m = hint;
  (void)env, (void)data;
  if (m->addr) munmap(m->addr, m->len);
  free(m);
}

static napi_value wrap_mapping(napi_env env, void *addr, size_t len) {
  struct mapping *m = malloc(sizeof *m);
  napi_value ab;
  if (!m) {
    munmap(addr, len);
    return throw_errno(env, ENOMEM, "mmap");
  }
  m->addr = addr;
  m->len = len;
  if (napi_create_external_arraybuffer(env, addr, len, mapping_finalize, m, &ab) != napi_ok) {
    munmap(addr, len);
    free(m);
    return NULL; /* napi left an exception pending */
  }
  napi_wrap(env, ab, m, NULL, NULL, NULL);
  return ab;
}

static napi_value js_mmap(napi_env env, napi_callback_info info) {
  ARGS(5);
  size_t len = (size_t)i64(env, argv[0]);
  void *p = mmap(NULL, len, i32(env, argv[1]), i32(env, argv[2]), i32(env, argv[3]),
                 (off_t)i64(env, argv[4]));
  return p == MAP_FAILED ? throw_errno(env, errno, "mmap") : wrap_mapping(env, p, len);
}

/* Anonymous private mmap: page-aligned and zero-filled by the kernel. */
static napi_value js_alloc(napi_env env, napi_callback_info info) {
  ARGS(1);
  size_t len = (size_t)i64(env, argv[0]);
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? throw_errno(env, errno, "alloc") : wrap_mapping(env, p, len);
}

/* copyBytes(dst, dstAt, src, srcAt, n): memmove between two buffers or views,
 * bounds checked: a copy between parts of buffers without the views
 * (subarray) JavaScript would allocate for it. */
static napi_value js_copy_bytes(napi_env env, napi_callback_info info) {
  ARGS(5);
  size_t dlen = 0, slen = 0;
  char *d = bytes_of(env, argv[0], &dlen), *s = bytes_of(env, argv[2], &slen);
  double da = 0, sa = 0, n = 0;
  napi_get_value_double(env, argv[1], &da);
  napi_get_value_double(env, argv[3], &sa);
  napi_get_value_double(env, argv[4], &n);
  if (!(da >= 0 && sa >= 0 && n >= 0) || da + n > (double)dlen || sa + n > (double)slen || (n > 0 && (!d || !s))) {
    napi_throw_range_error(env, NULL, "copyBytes: range outside a buffer");
    return NULL;
  }
  if (n > 0) memmove(d + (size_t)da, s + (size_t)sa, (size_t)n);
  return NULL;
}

/* pread / pwrite(fd, buffer, at, length, offsetLo, offsetHi): pread(2) /
 * pwrite(2) of bytes at..at+length of a buffer or view (bounds checked), at
 * the 64-bit file offset offsetHi:offsetLo (a JS number holds 53 bits;
 * offsetLo is taken modulo 2^32, so `x | 0` may be passed, which stays a
 * small integer and allocates nothing); bytes moved or -errno, retried on
 * EINTR. For syscalls that never wait, which io_uring would hand to another
 * thread (a file without FMODE_NOWAIT). */
/* Whether [at, at + len), given as JS numbers, lies in a buffer of `size`
 * bytes at p (NaN and negative numbers do not). */
static bool in_buffer(const char *p, size_t size, double at, double len) {
  return at >= 0 && len >= 0 && at + len <= (double)size && (len == 0 || p);
}

/* One pread(2) / pwrite(2), retried on EINTR: bytes moved or -errno. */
static double rw_once(int fd, char *p, size_t len, off_t off, bool write) {
  ssize_t r;
  do {
    r = write ? pwrite(fd, p, len, off) : pread(fd, p, len, off);
  } while (r < 0 && errno == EINTR);
  return r < 0 ? -errno : (double)r;
}

static napi_value rw_at(napi_env env, napi_callback_info info, bool write) {
  ARGS(6);
  size_t size = 0;
  char *p = bytes_of(env, argv[1], &size);
  double at = 0, len = 0;
  napi_get_value_double(env, argv[2], &at);
  napi_get_value_double(env, argv[3], &len);
  if (!in_buffer(p, size, at, len)) {
    napi_throw_range_error(env, NULL, write ? "pwrite: range outside the buffer" : "pread: range outside the buffer");
    return NULL;
  }
  off_t off = (off_t)(((uint64_t)u32(env, argv[5]) << 32) | u32(env, argv[4]));
  return num(env, rw_once(i32(env, argv[0]), p + (size_t)at, (size_t)len, off, write));
}

static napi_value js_pread(napi_env env, napi_callback_info info) { return rw_at(env, info, false); }
static napi_value js_pwrite(napi_env env, napi_callback_info info) { return rw_at(env, info, true); }

/*
 * rwMany(fd, buffer, table, n, write): n pread(2)s or pwrite(2)s between
 * `buffer` and fd, described by a Float64Array of triples (byte in buffer,
 * length, file offset); each triple's first number is replaced by its
 * result (bytes, or -errno). One call for a batch: each call into the addon
 * costs more than a small copy (e.g. the 4 KiB READ replies of one recv).
 */
static napi_value js_rw_many(napi_env env, napi_callback_info info) {
  ARGS(5);
  size_t size = 0, tlen = 0;
  char *p = bytes_of(env, argv[1], &size);
  napi_typedarray_type t;
  double *tab = NULL;
  bool is = false;
  if (napi_is_typedarray(env, argv[2], &is) != napi_ok || !is ||
      napi_get_typedarray_info(env, argv[2], &t, &tlen, (void **)&tab, NULL, NULL) != napi_ok || t != napi_float64_array) {
    napi_throw_type_error(env, NULL, "rwMany: the table must be a Float64Array");
    return NULL;
  }
  uint32_t n = u32(env, argv[3]);
  bool write = false;
  napi_get_value_bool(env, argv[4], &write);
  if ((size_t)n * 3 > tlen) {
    napi_throw_range_error(env, NULL, "rwMany: more entries than the table holds");
    return NULL;
  }
  int fd = i32(env, argv[0]);
  for (uint32_t i = 0; i < n; i++) {
    double at = tab[3 * i], len = tab[3 * i + 1], off = tab[3 * i + 2];
    if (!(off >= 0) || !in_buffer(p, size, at, len)) {
      napi_throw_range_error(env, NULL, "rwMany: range outside the buffer");
      return NULL;
    }
    tab[3 * i] = rw_once(fd, p + (size_t)at, (size_t)len, (off_t)off, write);
  }
  return NULL;
}

/* madvise(addr of the buffer + offset, len, advice): 0 or -errno. */
static napi_value js_madvise(napi_env env, napi_callback_info info) {
  ARGS(4);
  size_t size = 0;
  char *p = bytes_of(env, argv[0], &size);
  if (!p) {
    napi_throw_type_error(env, NULL, "madvise: expected an ArrayBuffer");
    return NULL;
  }
  size_t off = (size_t)i64(env, argv[1]), len = (size_t)i64(env, argv[2]);
  if (off > size || len > size - off) {
    napi_throw_range_error(env, NULL, "madvise: range outside the buffer");
    return NULL;
  }
  return num(env, madvise(p + off, len, i32(env, argv[3])) < 0 ? -errno : 0);
}

/* The mapping behind an ArrayBuffer from mmap()/alloc(); `take` also removes the wrap. */
static struct mapping *get_mapping(napi_env env, napi_value ab, const char *what, bool take) {
  struct mapping *m = NULL;
  napi_status st = take ? napi_remove_wrap(env, ab, (void **)&m) : napi_unwrap(env, ab, (void **)&m);
  if (st != napi_ok || !m) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s: not an ArrayBuffer from mmap()/alloc()", what);
    napi_throw_type_error(env, NULL, msg);
    return NULL;
  }
  return m;
}

static napi_value js_munmap(napi_env env, napi_callback_info info) {
  ARGS(1);
  struct mapping *m;
  bool detached = false;
  napi_is_detached_arraybuffer(env, argv[0], &detached);
  if (detached) return NULL; /* already unmapped: munmap is idempotent */
  /* Remove the wrap first: after detach the finalizer may free m at any time. */
  if (!(m = get_mapping(env, argv[0], "munmap", true))) return NULL;
  if (m->addr && munmap(m->addr, m->len) < 0) return throw_errno(env, errno, "munmap");
  m->addr = NULL;
  napi_detach_arraybuffer(env, argv[0]);
  return NULL;
}

/*
 * Leaves the mapping in place for the rest of the process: neither the
 * finalizer nor munmap() (which still detaches the buffer) will unmap it. For
 * memory whose address the kernel may still use after the thread that made it
 * is gone.
 */
static napi_value js_keep_mapped(napi_env env, napi_callback_info info) {
  ARGS(1);
  struct mapping *m;
  bool detached = false;
  napi_is_detached_arraybuffer(env, argv[0], &detached);
  if (detached) return NULL;
  if (!(m = get_mapping(env, argv[0], "keepMapped", false))) return NULL;
  m->addr = NULL;
  return NULL;
}

static napi_value js_address_of(napi_env env, napi_callback_info info) {
  ARGS(1);
  void *p = bytes_of(env, argv[0], NULL);
  if (!p) napi_throw_type_error(env, NULL, "addressOf: expected an ArrayBuffer or view");
  return p ? num(env, (double)(uintptr_t)p) : NULL;
}

/* clockMs(out: Float64Array, i): out[i] = CLOCK_MONOTONIC in ms. Written
 * into an array because a double returned to JavaScript is a heap number:
 * performance.now() allocates about 100 bytes per call in Node 20, and a
 * spinning serving thread reads the clock thousands of times a second. */
static napi_value js_clock_ms(napi_env env, napi_callback_info info) {
  ARGS(2);
  size_t len = 0;
  double *out = bytes_of(env, argv[0], &len);
  uint32_t i = u32(env, argv[1]);
  struct timespec ts;
  if (!out || (size_t)(i + 1) * sizeof(double) > len) {
    napi_throw_range_error(env, NULL, "clockMs: expected a Float64Array and an index within it");
    return NULL;
  }
  clock_gettime(CLOCK_MONOTONIC, &ts);
  out[i] = (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
  return NULL;
}

/* threadPreemptions(): how often the kernel took the CPU from this thread
 * (getrusage RUSAGE_THREAD ru_nivcsw, involuntary context switches): a
 * spinning thread that is preempted holds a CPU someone else wants. */
static napi_value js_thread_preemptions(napi_env env, napi_callback_info info) {
  struct rusage ru;
  (void)info;
  if (getrusage(RUSAGE_THREAD, &ru) < 0) return throw_errno(env, errno, "getrusage");
  return num(env, (double)ru.ru_nivcsw);
}

static napi_value js_eventfd(napi_env env, napi_callback_info info) {
  ARGS(2);
  int fd = eventfd(u32(env, argv[0]), i32(env, argv[1]));
  return fd < 0 ? throw_errno(env, errno, "eventfd") : num(env, fd);
}

/* close(2) for fds made here (rings, eventfds, memfds): Node's fs.closeSync
 * warns in worker threads about fds it did not open itself. */
static napi_value js_close(napi_env env, napi_callback_info info) {
  ARGS(1);
  return num(env, close(i32(env, argv[0])) < 0 ? -errno : 0);
}

static napi_value js_memfd_create(napi_env env, napi_callback_info info) {
  ARGS(2);
  char name[250] = "";
  napi_get_value_string_utf8(env, argv[0], name, sizeof name, NULL);
  int fd = memfd_create(name, u32(env, argv[1]));
  return fd < 0 ? throw_errno(env, errno, "memfd_create") : num(env, fd);
}

static napi_value js_fallocate(napi_env env, napi_callback_info info) {
  ARGS(4);
  int r = fallocate(i32(env, argv[0]), i32(env, argv[1]), i64(env, argv[2]), i64(env, argv[3]));
  return num(env, r < 0 ? -errno : 0);
}

/*
 * Poller: a uv_poll_t on the calling thread's loop (each worker has its own).
 * Lifetime: the struct is shared by the JS object (wrap finalizer) and the uv
 * handle (close callback); whichever lets go last frees it. While started, the
 * JS object is held strongly so a running poll is never collected; the JS
 * callback lives as a property of that object, so no root keeps it alive.
 * An async cleanup hook closes the handle at env teardown: a worker whose
 * loop still has an open handle aborts in uv_loop_close.
 */
struct poller {
  uv_poll_t poll;
  napi_env env;
  napi_ref self, cb;
  napi_async_context actx;
  napi_async_cleanup_hook_handle hook;
  int fd, drain, started, closing, owners;
};

static void poller_release(struct poller *p) {
  if (--p->owners == 0) free(p);
}

static void on_closed(uv_handle_t *h) {
  struct poller *p = h->data;
  napi_remove_async_cleanup_hook(p->hook); /* tells a teardown we are done */
  poller_release(p);
}

/* Called only while the napi env is alive (JS call, finalizer, cleanup hook). */
static void poller_close(struct poller *p) {
  if (p->closing) return;
  p->closing = 1;
  p->started = 0;
  napi_delete_reference(p->env, p->self);
  napi_delete_reference(p->env, p->cb);
  napi_async_destroy(p->env, p->actx);
  uv_close((uv_handle_t *)&p->poll, on_closed);
}

static void on_teardown(napi_async_cleanup_hook_handle h, void *arg) {
  (void)h;
  poller_close(arg);
}

static void poller_finalize(napi_env env, void *data, void *hint) {
  (void)env, (void)hint;
  poller_close(data);
  poller_release(data);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  struct poller *p = h->data;
  napi_env env = p->env;
  napi_handle_scope scope;
  napi_value self, cb, arg, err;
  uint64_t count;
  (void)events;
  /* Level-triggered: the eventfd must be emptied or the loop spins. */
  if (p->drain && status == 0) while (read(p->fd, &count, 8) < 0 && errno == EINTR) {}
  napi_open_handle_scope(env, &scope);
  napi_get_reference_value(env, p->self, &self);
  napi_get_reference_value(env, p->cb, &cb);
  napi_create_int32(env, status, &arg);
  /* make_callback, not call_function: it drains microtasks/nextTicks after. */
  if (napi_make_callback(env, p->actx, self, cb, 1, &arg, NULL) == napi_pending_exception) {
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
  napi_close_handle_scope(env, scope);
}

static struct poller *this_poller(napi_env env, napi_callback_info info) {
  napi_value self;
  struct poller *p = NULL;
  napi_get_cb_info(env, info, NULL, NULL, &self, NULL);
  if (napi_unwrap(env, self, (void **)&p) != napi_ok || !p)
    napi_throw_type_error(env, NULL, "not a Poller");
  return p;
}

static napi_value poller_start(napi_env env, napi_callback_info info) {
  struct poller *p = this_poller(env, info);
  if (!p || p->started) return NULL;
  if (p->closing) return throw_errno(env, EBADF, "Poller.start after close");
  int r = uv_poll_start(&p->poll, UV_READABLE, on_poll);
  if (r < 0) return throw_errno(env, -r, "uv_poll_start");
  p->started = 1;
  napi_reference_ref(env, p->self, NULL);
  return NULL;
}

static napi_value poller_stop(napi_env env, napi_callback_info info) {
  struct poller *p = this_poller(env, info);
  if (!p || !p->started || p->closing) return NULL;
  uv_poll_stop(&p->poll);
  p->started = 0;
  napi_reference_unref(env, p->self, NULL);
  return NULL;
}

static napi_value poller_close_js(napi_env env, napi_callback_info info) {
  struct poller *p = this_poller(env, info);
  if (p) poller_close(p);
  return NULL;
}

/* ref()/unref(): the descriptor's data says which. */
static napi_value poller_set_ref(napi_env env, napi_callback_info info) {
  struct poller *p = this_poller(env, info);
  void *want_ref = NULL;
  napi_get_cb_info(env, info, NULL, NULL, NULL, &want_ref);
  if (p && !p->closing) (want_ref ? uv_ref : uv_unref)((uv_handle_t *)&p->poll);
  return NULL;
}

static napi_value js_create_poller(napi_env env, napi_callback_info info) {
  ARGS(3);
  struct uv_loop_s *loop;
  napi_valuetype t;
  napi_value obj, name;
  bool drain = false;
  napi_typeof(env, argv[2], &t);
  if (t != napi_function) {
    napi_throw_type_error(env, NULL, "createPoller: callback must be a function");
    return NULL;
  }
  napi_get_value_bool(env, argv[1], &drain);
  napi_get_uv_event_loop(env, &loop);
  struct poller *p = calloc(1, sizeof *p);
  if (!p) return throw_errno(env, ENOMEM, "createPoller");
  p->env = env;
  p->fd = i32(env, argv[0]);
  p->drain = drain;
  int r = uv_poll_init(loop, &p->poll, p->fd);
  if (r < 0) {
    free(p);
    return throw_errno(env, -r, "uv_poll_init");
  }
  p->poll.data = p;
  p->owners = 2; /* the JS object and the uv handle */
  napi_property_descriptor props[] = {
      {"start", NULL, poller_start, NULL, NULL, NULL, napi_default, NULL},
      {"stop", NULL, poller_stop, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, poller_close_js, NULL, NULL, NULL, napi_default, NULL},
      {"ref", NULL, poller_set_ref, NULL, NULL, NULL, napi_default, (void *)1},
      {"unref", NULL, poller_set_ref, NULL, NULL, NULL, napi_default, NULL},
      {"callback", NULL, NULL, NULL, NULL, argv[2], napi_default, NULL},
  };
  napi_create_object(env, &obj);
  napi_define_properties(env, obj, sizeof props / sizeof props[0], props);
  napi_wrap(env, obj, p, poller_finalize, NULL, NULL);
  napi_create_reference(env, obj, 0, &p->self);
  napi_create_reference(env, argv[2], 0, &p->cb);
  napi_create_string_utf8(env, "ublk.Poller", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, obj, name, &p->actx);
  napi_add_async_cleanup_hook(env, on_teardown, p, &p->hook);
  return obj;
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  static const struct { const char *name; napi_callback fn; } fns[] = {
      {"setup", js_setup},         {"enter", js_enter}, {"enterArg", js_enter_arg},
      {"register", js_register},   {"mmap", js_mmap},
      {"munmap", js_munmap},       {"keepMapped", js_keep_mapped},
      {"alloc", js_alloc},           {"madvise", js_madvise}, {"copyBytes", js_copy_bytes},
      {"addressOf", js_address_of}, {"eventfd", js_eventfd},
      {"clockMs", js_clock_ms}, {"threadPreemptions", js_thread_preemptions},
      {"memfdCreate", js_memfd_create}, {"fallocate", js_fallocate},
      {"pread", js_pread}, {"pwrite", js_pwrite}, {"rwMany", js_rw_many},
      {"createPoller", js_create_poller}, {"close", js_close},
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value f;
    napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f);
    napi_set_named_property(env, exports, fns[i].name, f);
  }
  return exports;
}
