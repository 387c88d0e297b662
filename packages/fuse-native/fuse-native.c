// libfuse 3's high-level (path-based) API: see README.md for why not the
// low-level one. 312: fuse_loop_cfg_* (a thread cap of our choosing).
#define FUSE_USE_VERSION 312

#include <uv.h>
#include <node_api.h>
#include <napi-macros.h>

#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <assert.h>

#include <fuse.h>
#include <fuse_opt.h>
#include <fuse_common.h>
#include <fuse_lowlevel.h>
#include <errno.h>
#include <stddef.h>

#include <unistd.h>
#include <sys/wait.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>
#include <sys/stat.h>
#include <malloc.h>
#include <sys/mount.h>

static int IS_ARRAY_BUFFER_DETACH_SUPPORTED = 0;

napi_status napi_detach_arraybuffer(napi_env env, napi_value buf);

#define FUSE_NATIVE_CALLBACK(fn, blk)\
  napi_env env = ft->env;\
  napi_handle_scope scope;\
  napi_open_handle_scope(env, &scope);\
  napi_value ctx;\
  napi_get_reference_value(env, ft->ctx, &ctx);\
  napi_value callback;\
  napi_get_reference_value(env, fn, &callback);\
  blk\
  napi_close_handle_scope(env, scope);

#define FUSE_NATIVE_HANDLER(name, blk)\
  fuse_thread_locals_t *l = get_thread_locals();\
  wq_barrier(l->fuse);\
  l->op = op_##name;\
  l->op_fn = fuse_native_dispatch_##name;\
  capture_caller(l);\
  blk\
  uv_async_send(&(l->async));\
  uv_sem_wait(&(l->sem));\
  return l->res;

#define FUSE_METHOD(name, callbackArgs, signalArgs, signature, callBlk, callbackBlk, signalBlk)\
  static void fuse_native_dispatch_##name (uv_async_t* handle, fuse_thread_locals_t* l, fuse_thread_t* ft) {\
    uint32_t op = op_##name;\
    FUSE_NATIVE_CALLBACK(ft->handlers[op], {\
      napi_value argv[callbackArgs + 2];\
      napi_get_reference_value(env, l->self, &(argv[0]));\
      napi_create_uint32(env, l->op, &(argv[1]));\
      callbackBlk\
      NAPI_MAKE_CALLBACK(env, NULL, ctx, callback, callbackArgs + 2, argv, NULL)\
    })\
  }\
  NAPI_METHOD(fuse_native_signal_##name) {\
    NAPI_ARGV(signalArgs + 2)\
    NAPI_ARGV_BUFFER_CAST(fuse_thread_locals_t *, l, 0);\
    NAPI_ARGV_INT32(res, 1);\
    signalBlk\
    l->res = res;\
    uv_sem_post(&(l->sem));\
    return NULL;\
  }\
  static int fuse_native_##name signature {\
    FUSE_NATIVE_HANDLER(name, callBlk)\
  }

#define FUSE_METHOD_VOID(name, callbackArgs, signalArgs, signature, callBlk, callbackBlk)\
  FUSE_METHOD(name, callbackArgs, signalArgs, signature, callBlk, callbackBlk, {})

#define FUSE_UINT64_TO_INTS_ARGV(n, pos)\
  uint32_t low##pos = n % 4294967296;\
  uint32_t high##pos = (n - low##pos) / 4294967296;\
  napi_create_uint32(env, low##pos, &(argv[pos]));\
  napi_create_uint32(env, high##pos, &(argv[pos + 1]));


// Opcodes

static const uint32_t op_init = 0;
static const uint32_t op_error = 1;
static const uint32_t op_access = 2;
static const uint32_t op_statfs = 3;
static const uint32_t op_fgetattr = 4;
static const uint32_t op_getattr = 5;
static const uint32_t op_flush = 6;
static const uint32_t op_fsync = 7;
static const uint32_t op_fsyncdir = 8;
static const uint32_t op_readdir = 9;
static const uint32_t op_truncate = 10;
static const uint32_t op_ftruncate = 11;
static const uint32_t op_utimens = 12;
static const uint32_t op_readlink = 13;
static const uint32_t op_chown = 14;
static const uint32_t op_chmod = 15;
static const uint32_t op_mknod = 16;
static const uint32_t op_setxattr = 17;
static const uint32_t op_getxattr = 18;
static const uint32_t op_listxattr = 19;
static const uint32_t op_removexattr = 20;
static const uint32_t op_open = 21;
static const uint32_t op_opendir = 22;
static const uint32_t op_read = 23;
static const uint32_t op_write = 24;
static const uint32_t op_release = 25;
static const uint32_t op_releasedir = 26;
static const uint32_t op_create = 27;
static const uint32_t op_unlink = 28;
static const uint32_t op_rename = 29;
static const uint32_t op_link = 30;
static const uint32_t op_symlink = 31;
static const uint32_t op_mkdir = 32;
static const uint32_t op_rmdir = 33;
// Not a libfuse operation: a WRITE already answered (see "Early write replies").
static const uint32_t op_write_queued = 34;

// Attribute table (tsfs): getattr answered inside the libfuse worker thread
// for paths the JS side has cached, so a cached stat costs no hand-off to the
// Node thread (measured ~120 us CPU per hand-off on a 2-vCPU VM; ls -lR of
// 10,000 files is 20,000 getattr/lookup calls). JS mirrors every change of
// its own cache here (set/delete/clear), so this table never knows more than
// JS; a miss simply falls through to JS. Expiry times are
// CLOCK_MONOTONIC milliseconds: JS gets the same clock as Fuse.monotonicNow()
// (index.js), so a wall-clock step (NTP, a VM resume) neither keeps stale
// entries alive nor drops fresh ones.

#define ATTR_MAX_ENTRIES (1 << 20)

struct attr_entry {
  struct attr_entry *next;
  uint32_t hash;
  double expires;
  struct stat st;
  char path[];
};

struct attr_table {
  pthread_rwlock_t lock;
  struct attr_entry **buckets;
  uint32_t nbuckets;
  uint32_t count;
  uint32_t clears; // times the table was emptied (the cap, a clear)
};

// Guards ft->attrs itself: the fuse thread frees the table when its loop
// ends (no worker can read it then), while JS may still call attr_*.
static pthread_mutex_t attr_tables_mut = PTHREAD_MUTEX_INITIALIZER;

static uint32_t attr_hash (const char *s) {
  uint32_t h = 2166136261u; // FNV-1a
  while (*s) { h ^= (unsigned char) *s++; h *= 16777619u; }
  return h;
}

static double attr_now_ms () {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec * 1000.0 + (double) ts.tv_nsec / 1e6;
}

static struct attr_table* attr_table_new () {
  struct attr_table *t = calloc(1, sizeof(struct attr_table));
  if (t == NULL) return NULL;
  t->nbuckets = 4096;
  t->buckets = calloc(t->nbuckets, sizeof(struct attr_entry *));
  if (t->buckets == NULL) { free(t); return NULL; }
  pthread_rwlock_init(&t->lock, NULL);
  return t;
}

// Caller holds the write lock.
static void attr_table_clear_locked (struct attr_table *t) {
  for (uint32_t i = 0; i < t->nbuckets; i++) {
    struct attr_entry *e = t->buckets[i];
    while (e != NULL) { struct attr_entry *n = e->next; free(e); e = n; }
    t->buckets[i] = NULL;
  }
  t->count = 0;
  t->clears++;
}

// Caller holds the write lock.
static void attr_table_grow_locked (struct attr_table *t) {
  uint32_t n = t->nbuckets * 2;
  struct attr_entry **b = calloc(n, sizeof(struct attr_entry *));
  if (b == NULL) return; // keep the longer chains
  for (uint32_t i = 0; i < t->nbuckets; i++) {
    struct attr_entry *e = t->buckets[i];
    while (e != NULL) {
      struct attr_entry *next = e->next;
      e->next = b[e->hash & (n - 1)];
      b[e->hash & (n - 1)] = e;
      e = next;
    }
  }
  free(t->buckets);
  t->buckets = b;
  t->nbuckets = n;
}

// Caller holds the write lock.
static void attr_table_del_locked (struct attr_table *t, const char *path, uint32_t h) {
  struct attr_entry **pp = &t->buckets[h & (t->nbuckets - 1)];
  while (*pp != NULL) {
    struct attr_entry *e = *pp;
    if (e->hash == h && strcmp(e->path, path) == 0) {
      *pp = e->next;
      free(e);
      t->count--;
      return;
    }
    pp = &e->next;
  }
}

// Caller holds a lock of t.
static struct attr_entry* attr_table_find_locked (struct attr_table *t, const char *key) {
  uint32_t h = attr_hash(key);
  for (struct attr_entry *e = t->buckets[h & (t->nbuckets - 1)]; e != NULL; e = e->next) {
    if (e->hash == h && strcmp(e->path, key) == 0) return e;
  }
  return NULL;
}

static int attr_table_get (struct attr_table *t, const char *path, struct stat *st) {
  if (t == NULL) return 0;
  pthread_rwlock_rdlock(&t->lock);
  struct attr_entry *e = attr_table_find_locked(t, path);
  int hit = e != NULL && e->expires > attr_now_ms();
  if (hit) *st = e->st;
  pthread_rwlock_unlock(&t->lock);
  return hit;
}

static struct attr_entry* attr_entry_new (const char *prefix, const char *rest, const struct stat *st, double expires) {
  size_t pl = strlen(prefix), rl = strlen(rest);
  struct attr_entry *e = malloc(sizeof(struct attr_entry) + pl + rl + 1);
  if (e == NULL) return NULL;
  memcpy(e->path, prefix, pl);
  memcpy(e->path + pl, rest, rl + 1);
  e->hash = attr_hash(e->path);
  e->expires = expires;
  e->st = *st;
  return e;
}

// Caller holds the write lock; e replaces any entry of the same path.
static void attr_table_put_locked (struct attr_table *t, struct attr_entry *e) {
  attr_table_del_locked(t, e->path, e->hash);
  // A bounded accelerator: past the cap start over (a miss only costs a trip to JS).
  if (t->count >= ATTR_MAX_ENTRIES) attr_table_clear_locked(t);
  if (t->count >= t->nbuckets * 2) attr_table_grow_locked(t);
  struct attr_entry **b = &t->buckets[e->hash & (t->nbuckets - 1)];
  e->next = *b;
  *b = e;
  t->count++;
}

static void attr_table_set (struct attr_table *t, const char *path, const struct stat *st, double expires) {
  struct attr_entry *e = attr_entry_new(path, "", st, expires);
  if (e == NULL) return;
  pthread_rwlock_wrlock(&t->lock);
  attr_table_put_locked(t, e);
  pthread_rwlock_unlock(&t->lock);
}

// Negative lookups (tsfs): a name missing from a directory listing JS holds
// (complete, within its TTL, kept current for this mount's own creates,
// renames and removals) does not exist, and JS answers ENOENT without a
// round trip. Answering it here also saves the hand-off to the Node thread:
// every file a program creates is first looked up and found missing. JS
// mirrors each listing into the attribute table under two kinds of key: the
// listed directory ("\1" + path, with the listing's expiry) and each name in
// it ("\2" + full path, no expiry of its own). A name is absent here only if
// its directory's listing is fresh and the name is not in it, which is
// exactly JS's rule, so this table never answers ENOENT where JS would not:
// JS adds a name here before its own listing takes it, and a dropped
// listing's directory goes before its names. Names left over from an older
// listing only send a lookup to JS. libfuse's hidden names (.fuse_hidden*,
// files unlinked while open) always go to JS, which may still reach the file
// by a handle.
#define LISTED_KEY '\1'
#define NAME_KEY '\2'
#define NAME_NO_EXPIRY 1e300

// key = kind + path[0..len)
static int listing_key (char *key, size_t size, char kind, const char *path, size_t len) {
  if (len + 2 > size) return 0;
  key[0] = kind;
  memcpy(key + 1, path, len);
  key[len + 1] = '\0';
  return 1;
}

static int listing_says_absent (struct attr_table *t, const char *path) {
  if (t == NULL || path[0] != '/') return 0;
  const char *slash = strrchr(path, '/');
  if (slash[1] == '\0' || strncmp(slash + 1, ".fuse_hidden", 12) == 0) return 0;
  char dir[4098], name[4098];
  if (!listing_key(dir, sizeof(dir), LISTED_KEY, path, slash == path ? 1 : (size_t) (slash - path))) return 0;
  if (!listing_key(name, sizeof(name), NAME_KEY, path, strlen(path))) return 0;
  // One read lock for both: a listing dropped between them must not leave
  // the name looked up after it missing.
  pthread_rwlock_rdlock(&t->lock);
  struct attr_entry *d = attr_table_find_locked(t, dir);
  int absent = d != NULL && d->expires > attr_now_ms() && attr_table_find_locked(t, name) == NULL;
  pthread_rwlock_unlock(&t->lock);
  return absent;
}

// names: the listing's names separated by '/' (no name holds one).
// Caller holds the write lock.
static void listing_names_locked (struct attr_table *t, const char *dir, const char *names, size_t len, int add) {
  static const struct stat none;
  size_t dl = strlen(dir);
  const char *sep = (dl > 0 && dir[dl - 1] == '/') ? "" : "/";
  char key[4098];
  for (size_t i = 0; i < len;) {
    const char *end = memchr(names + i, '/', len - i);
    size_t nl = end == NULL ? len - i : (size_t) (end - (names + i));
    if (nl > 0 && dl + strlen(sep) + nl + 2 <= sizeof(key)) {
      snprintf(key, sizeof(key), "%c%s%s%.*s", NAME_KEY, dir, sep, (int) nl, names + i);
      if (add) {
        struct attr_entry *e = attr_entry_new(key, "", &none, NAME_NO_EXPIRY);
        if (e != NULL) attr_table_put_locked(t, e);
      } else {
        attr_table_del_locked(t, key, attr_hash(key));
      }
    }
    i += nl + 1;
  }
}

// Directory listings, kept per open directory.
//
// libfuse's high-level API can take a listing two ways. Given offsets, it
// passes each entry straight into the kernel's buffer and, for READDIRPLUS,
// with a node and attributes, so the kernel needs no LOOKUP per name within
// entry_timeout. Given none, it keeps the listing itself and sends entries
// without attributes. Offsets mean one readdir call per kernel buffer
// (about 4 KiB, a few dozen entries), so the listing JS gives at offset 0 is
// kept here, on the directory's handle, and the later calls are answered
// from it in the worker thread without JS. rewinddir (offset 0) asks JS again.

#define DIR_NAME_ONLY 0 // no stat: the kernel learns the type by LOOKUP
#define DIR_TYPE 1      // stat for d_type only
#define DIR_ATTRS 2     // stat fit to be the name's attributes (READDIRPLUS)

struct dir_snap_entry {
  struct stat st;
  int kind;
  char name[];
};

struct dir_snap {
  struct dir_snap_entry **e;
  uint32_t n;
  uint32_t cap;
  int valid;  // filled by JS since the last offset-0 call
  int failed; // out of memory while filling
};

static void dir_snap_clear (struct dir_snap *s) {
  for (uint32_t i = 0; i < s->n; i++) free(s->e[i]);
  s->n = 0;
  s->valid = 0;
  s->failed = 0;
}

static void dir_snap_free (struct dir_snap *s) {
  if (s == NULL) return;
  dir_snap_clear(s);
  free(s->e);
  free(s);
}

static int dir_snap_add (struct dir_snap *s, const char *name, const struct stat *st, int kind) {
  if (s->n == s->cap) {
    uint32_t cap = s->cap ? s->cap * 2 : 64;
    struct dir_snap_entry **e = realloc(s->e, cap * sizeof(*e));
    if (e == NULL) return -1;
    s->e = e;
    s->cap = cap;
  }
  size_t len = strlen(name);
  struct dir_snap_entry *d = malloc(sizeof(struct dir_snap_entry) + len + 1);
  if (d == NULL) return -1;
  d->st = *st;
  d->kind = kind;
  memcpy(d->name, name, len + 1);
  s->e[s->n++] = d;
  return 0;
}

// Data structures

// Early write replies (see below): the copies a mount's WRITEs left for JS.
struct wq_item {
  struct wq_item *next;
  uint64_t seq;
  uint64_t fh;
  off_t offset;
  size_t len;
  char *path;
  char data[];
};

struct write_queue {
  pthread_mutex_t mut;
  pthread_cond_t cond;      // room made, or an item taken by JS
  struct wq_item *head;     // oldest; with JS when busy
  struct wq_item *tail;
  size_t bytes;             // data bytes reserved or queued
  size_t max_bytes;         // 0: every WRITE goes to JS synchronously
  uint64_t queued_seq;      // last item queued
  uint64_t done_seq;        // every item up to this one JS has taken
  int busy;
  uint64_t *failed;         // handles whose queued write JS refused
  uint32_t nfailed;
  uint32_t failed_cap;
  uv_async_t async;
  int inited;
};

typedef struct {
  napi_env env;
  pthread_t thread;
  pthread_attr_t attr;
  napi_ref ctx;
  napi_ref malloc;

  // Operation handlers
  napi_ref handlers[35];

  struct fuse *fuse;
  struct fuse_conn_info_opts *conn_opts;
  char mnt[1024];
  char mntopts[1024];
  int mounted;
  uint32_t flags; // FN_* below, from JS at mount

  // The context (uid, gid, pid, umask) of the request whose JS handler is
  // being called: written on the Node thread right before each call, read
  // by Fuse#callerContext() through a Uint32Array over this struct.
  uint32_t caller[4];

  // What the kernel and libfuse agreed at init (for tests and logs).
  uint32_t negotiated[4]; // max_write, max_readahead, max_read, want

  uv_async_t async;
  uv_mutex_t mut;
  uv_sem_t sem;

  struct attr_table *attrs;
  uint8_t implemented[35];

  // Hard links (below): names with nlink > 1 whose attributes the kernel
  // may still hold, and the thread that tells the kernel to drop them.
  struct attr_table *links;
  struct links_notifier *notifier;
  double links_ttl_ms;
  uint64_t links_until_ms; // the last note's expiry (atomic): until then, writes are not answered early

  struct write_queue wq;
} fuse_thread_t;

typedef struct {
  napi_ref self;

  // Opcode
  uint32_t op;
  void *op_fn;

  // Payloads
  const char *path;
  const char *dest;
  char *linkname;
  struct fuse_file_info *info;
  const void *buf;
  off_t offset;
  size_t len;
  mode_t mode;
  dev_t dev;
  uid_t uid;
  gid_t gid;
  size_t atime;
  size_t mtime;
  int32_t res;

  // Extended attributes
  const char *name;
  const char *value;
  char *list;
  size_t size;
  uint32_t position;
  int flags;

  // Stat + Statfs
  struct stat *stat;
  struct statvfs *statvfs;

  // Readdir
  fuse_fill_dir_t readdir_filler;
  struct dir_snap *snap;

  // Caller of the current request (fuse_get_context() in the worker thread)
  uint32_t caller[4];

  // Internal bookkeeping
  fuse_thread_t *fuse;
  uv_sem_t sem;
  uv_async_t async;

} fuse_thread_locals_t;

static pthread_key_t thread_locals_key;
static fuse_thread_locals_t* get_thread_locals();

// Early write replies
//
// tsfs answers a WRITE once it has queued it to the server (write-behind),
// so what the caller of write(2) waits for is the hop to the Node thread and
// back: two wakeups of sleeping threads and the JS between them, most of a
// 4 KiB rewrite's time (docs/performance.md). With write_behind set, the
// worker thread copies the data, answers the kernel at once and leaves the
// copy here; the Node thread hands the copies to JS's write one at a time,
// in the order they came, each when JS has queued the one before.
//
// What a reply from here promises is what a reply from JS promised:
// - Order. Every other request waits (wq_barrier) until JS has taken every
//   write queued before it arrived, so a request that follows a write's
//   reply (a read, a stat answered from the attribute table, flush, close,
//   a rename) meets JS in the state that reply left, as before. Writes
//   queued after it are not waited for, so a steady writer starves no one.
// - Errors. A queued write that JS refuses cannot fail its write(2); JS keeps
//   the failure on the handle and reports it at flush, fsync and release
//   (tsfs does: src/fs/handles.ts), and that handle's later writes go to JS
//   synchronously, so they fail at once as before.
// - Memory: at most max_bytes of copies per mount; a write that would pass
//   it waits for room.
// - Hard links: while the mount has names noted in its links table, writes
//   take the synchronous way, which waits for the invalidations they cause
//   (see "Hard links").

// All mounts together: copies held at once are also bounded by
// wq_global_max (set_write_behind_budget; 0: no bound), so the memory they
// take does not grow with the number of busy mounts. A write that finds no
// room in it goes to JS synchronously instead of waiting here: waiting
// would hold a libfuse worker for another mount's server, and the
// synchronous way is always correct, only slower.
static size_t wq_global_max = 0;
static size_t wq_global_bytes = 0; // atomic

static void wq_global_release (size_t len) {
  __atomic_sub_fetch(&wq_global_bytes, len, __ATOMIC_RELAXED);
}

static void wq_barrier (fuse_thread_t *ft) {
  struct write_queue *q = &ft->wq;
  if (q->max_bytes == 0) return;
  pthread_mutex_lock(&q->mut);
  uint64_t mark = q->queued_seq;
  while (q->done_seq < mark) pthread_cond_wait(&q->cond, &q->mut);
  pthread_mutex_unlock(&q->mut);
}

static int wq_failed_index_locked (struct write_queue *q, uint64_t fh) {
  for (uint32_t i = 0; i < q->nfailed; i++) if (q->failed[i] == fh) return (int) i;
  return -1;
}

// A worker thread: queue a copy of one WRITE. Returns len once queued, or
// -1 when this write must go to JS synchronously.
static int wq_push (fuse_thread_t *ft, const char *path, const char *buf, size_t len, off_t offset, uint64_t fh) {
  struct write_queue *q = &ft->wq;
  if (len > q->max_bytes) return -1;
  size_t global_max = __atomic_load_n(&wq_global_max, __ATOMIC_RELAXED);
  if (__atomic_add_fetch(&wq_global_bytes, len, __ATOMIC_RELAXED) > global_max && global_max > 0) {
    wq_global_release(len);
    return -1;
  }
  pthread_mutex_lock(&q->mut);
  if (wq_failed_index_locked(q, fh) >= 0) {
    pthread_mutex_unlock(&q->mut);
    wq_global_release(len);
    return -1;
  }
  while (q->bytes > 0 && q->bytes + len > q->max_bytes) pthread_cond_wait(&q->cond, &q->mut);
  q->bytes += len;
  pthread_mutex_unlock(&q->mut);

  size_t pl = strlen(path) + 1;
  struct wq_item *it = malloc(sizeof(struct wq_item) + len + pl);
  if (it == NULL) {
    wq_global_release(len);
    pthread_mutex_lock(&q->mut);
    q->bytes -= len;
    pthread_cond_broadcast(&q->cond);
    pthread_mutex_unlock(&q->mut);
    return -1;
  }
  it->next = NULL;
  it->fh = fh;
  it->offset = offset;
  it->len = len;
  memcpy(it->data, buf, len);
  it->path = it->data + len;
  memcpy(it->path, path, pl);

  pthread_mutex_lock(&q->mut);
  it->seq = ++q->queued_seq;
  int first = q->head == NULL;
  if (q->tail != NULL) q->tail->next = it;
  else q->head = it;
  q->tail = it;
  pthread_mutex_unlock(&q->mut);
  // Behind an item JS has, this one is handed on when JS signals that one:
  // no wakeup of the Node thread needed.
  if (first) uv_async_send(&q->async);
  return (int) len;
}

// release: a handle number may be given again to the next open.
static void wq_forget_handle (fuse_thread_t *ft, uint64_t fh) {
  struct write_queue *q = &ft->wq;
  if (q->max_bytes == 0) return;
  pthread_mutex_lock(&q->mut);
  int i = wq_failed_index_locked(q, fh);
  if (i >= 0) q->failed[i] = q->failed[--q->nfailed];
  pthread_mutex_unlock(&q->mut);
}

static int links_noted (fuse_thread_t *ft);

// Hard links under entry_timeout > 0.
//
// libfuse's path-based API gives every name its own kernel inode, so the
// size, times and link count the kernel caches for one name of a
// hard-linked file do not change when the file is written, truncated,
// linked or unlinked through another name: a stat, or an open and read,
// of the other name within attr_timeout would see the old file. Each name
// with nlink > 1 whose attributes went to the kernel (lookup, getattr,
// READDIRPLUS) is noted here with the time the kernel may keep them. When
// JS changes such a file it calls invalidate_linked, and every noted name
// but the changed one is invalidated in the kernel (attributes and pages),
// so the next access asks again. Only such names are noted, so every
// other name keeps the kernel's entry and attribute caching.
//
// The kernel notification runs on a thread of its own per mount, never on
// the Node thread or inside the request that made the change: dropping a
// name's pages waits for the page locks that a reader or writer of that
// name holds while its own request waits for an answer. Two writers of
// one file through two names would each wait for the other.
//
// Ordering: a reply that ends a change from the caller's view (close,
// fsync, setattr, link, unlink, rename) waits until every notification
// queued before it has been delivered, so the next stat of another name
// sees the change. A WRITE reply waits too, but at most
// LINKS_WRITE_WAIT_MS: that bound is what breaks the cycle of the two
// writers above.

#define LINKS_WRITE_WAIT_MS 50

struct pending_inval {
  struct pending_inval *next;
  char path[];
};

struct links_notifier {
  pthread_mutex_t mut;
  pthread_cond_t wake;     // work queued, or stop
  pthread_cond_t settled;  // delivered caught up with queued
  struct pending_inval *head;
  uint64_t queued;         // batches queued so far
  uint64_t delivered;      // batches delivered so far
  int stop;
  int started;
  pthread_t thread;
  struct fuse *fuse;
};

static void pending_free (struct pending_inval *p) {
  while (p != NULL) { struct pending_inval *n = p->next; free(p); p = n; }
}

static void * links_notify_thread (void *data) {
  struct links_notifier *n = (struct links_notifier *) data;
  pthread_mutex_lock(&n->mut);
  while (!n->stop) {
    if (n->head == NULL) { pthread_cond_wait(&n->wake, &n->mut); continue; }
    struct pending_inval *batch = n->head;
    uint64_t upto = n->queued;
    n->head = NULL;
    pthread_mutex_unlock(&n->mut);
    // -ENOENT (the name was unlinked or forgotten meanwhile) needs nothing.
    for (struct pending_inval *p = batch; p != NULL; p = p->next) fuse_invalidate_path(n->fuse, p->path);
    pending_free(batch);
    pthread_mutex_lock(&n->mut);
    n->delivered = upto;
    pthread_cond_broadcast(&n->settled);
  }
  pending_free(n->head);
  n->head = NULL;
  n->delivered = n->queued;
  pthread_cond_broadcast(&n->settled);
  pthread_mutex_unlock(&n->mut);
  return NULL;
}

static struct links_notifier * links_notifier_new (struct fuse *fuse) {
  struct links_notifier *n = calloc(1, sizeof(struct links_notifier));
  if (n == NULL) return NULL;
  pthread_mutex_init(&n->mut, NULL);
  pthread_cond_init(&n->wake, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&n->settled, &ca);
  pthread_condattr_destroy(&ca);
  n->fuse = fuse;
  return n;
}

// The FUSE thread, after its loop: no request is in flight and the kernel
// connection is gone, so a notification still running returns at once.
static void links_notifier_free (struct links_notifier *n) {
  if (n == NULL) return;
  pthread_mutex_lock(&n->mut);
  n->stop = 1;
  int started = n->started;
  pthread_cond_broadcast(&n->wake);
  pthread_mutex_unlock(&n->mut);
  if (started) pthread_join(n->thread, NULL);
  pending_free(n->head);
  pthread_cond_destroy(&n->wake);
  pthread_cond_destroy(&n->settled);
  pthread_mutex_destroy(&n->mut);
  free(n);
}

// A worker thread, before replying: wait for the notifications queued so
// far (at most max_ms when max_ms >= 0).
static void links_settle (fuse_thread_t *ft, int max_ms) {
  struct links_notifier *n = ft->notifier;
  if (n == NULL) return;
  pthread_mutex_lock(&n->mut);
  uint64_t target = n->queued;
  if (max_ms < 0) {
    while (n->delivered < target && !n->stop) pthread_cond_wait(&n->settled, &n->mut);
  } else if (n->delivered < target) {
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += (long) max_ms * 1000000L;
    until.tv_sec += until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    while (n->delivered < target && !n->stop) {
      if (pthread_cond_timedwait(&n->settled, &n->mut, &until) == ETIMEDOUT) break;
    }
  }
  pthread_mutex_unlock(&n->mut);
}

// A worker thread, or the Node thread for READDIRPLUS: attributes of path
// are on their way to the kernel.
static void links_note (fuse_thread_t *ft, const char *path, const struct stat *st) {
  if (S_ISDIR(st->st_mode) || st->st_nlink < 2 || ft->links == NULL) return;
  double expires = attr_now_ms() + ft->links_ttl_ms;
  attr_table_set(ft->links, path, st, expires);
  uint64_t until = (uint64_t) expires + 1;
  uint64_t seen = __atomic_load_n(&ft->links_until_ms, __ATOMIC_RELAXED);
  while (seen < until && !__atomic_compare_exchange_n(&ft->links_until_ms, &seen, until, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
}

// Some name of this mount may have other names whose attributes the
// kernel holds (see "Early write replies"): a note in the links table not
// yet expired, or an invalidation queued and not yet delivered. Once
// invalidate_linked has emptied the table and its invalidations are
// delivered, writes are answered early again; they used to stay
// synchronous until the last note's expiry, so every write for 2 s after a
// walk of a hard-linked tree crossed to JS.
static int links_noted (fuse_thread_t *ft) {
  if (attr_now_ms() >= (double) __atomic_load_n(&ft->links_until_ms, __ATOMIC_RELAXED)) return 0;
  struct attr_table *t = ft->links;
  struct links_notifier *n = ft->notifier;
  if (t == NULL || n == NULL) return 1;
  // The table's lock first, as invalidate_linked takes them: it empties the
  // table and queues the invalidations under this lock.
  pthread_rwlock_rdlock(&t->lock);
  int noted = t->count > 0;
  if (!noted) {
    pthread_mutex_lock(&n->mut);
    noted = n->delivered < n->queued;
    pthread_mutex_unlock(&n->mut);
  }
  pthread_rwlock_unlock(&t->lock);
  return noted;
}

// src was renamed to dest: the kernel moved its inodes (and those under it)
// to the new names, so the notes follow them. Expired notes go on the way.
static void links_renamed (fuse_thread_t *ft, const char *src, const char *dest) {
  struct attr_table *t = ft->links;
  if (t == NULL) return;
  size_t sl = strlen(src);
  double now = attr_now_ms();
  struct attr_entry *moved = NULL;
  pthread_rwlock_wrlock(&t->lock);
  for (uint32_t i = 0; t->count > 0 && i < t->nbuckets; i++) {
    struct attr_entry **pp = &t->buckets[i];
    while (*pp != NULL) {
      struct attr_entry *e = *pp;
      int under = strncmp(e->path, src, sl) == 0 && (e->path[sl] == '\0' || e->path[sl] == '/');
      if (e->expires <= now || under) {
        *pp = e->next;
        t->count--;
        if (e->expires <= now) free(e);
        else { e->next = moved; moved = e; }
        continue;
      }
      pp = &e->next;
    }
  }
  while (moved != NULL) {
    struct attr_entry *e = moved;
    moved = e->next;
    struct attr_entry *r = attr_entry_new(dest, e->path + sl, &e->st, e->expires);
    if (r != NULL) attr_table_put_locked(t, r);
    free(e);
  }
  pthread_rwlock_unlock(&t->lock);
}

// Mount flags from JS (fuse_native_mount's last argument).
#define FN_READDIR_PLUS 1 // readdir's stats fill READDIRPLUS entries

static void capture_caller (fuse_thread_locals_t *l) {
  struct fuse_context *c = fuse_get_context();
  l->caller[0] = c->uid;
  l->caller[1] = c->gid;
  l->caller[2] = c->pid;
  l->caller[3] = c->umask;
}

// Helpers
// TODO: Extract into a separate file.

static uint64_t uint32s_to_uint64 (uint32_t **ints) {
  uint64_t low = *((*ints)++);
  uint64_t high = *((*ints)++);
  return high * 4294967296 + low;
}

static void uint32s_to_timespec (struct timespec* ts, uint32_t** ints) {
  uint64_t ms = uint32s_to_uint64(ints);
  ts->tv_sec = ms / 1000;
  ts->tv_nsec = (ms % 1000) * 1000000;
}

static uint64_t timespec_to_uint64 (const struct timespec* ts) {
  uint64_t ms = (ts->tv_sec * 1000) + (ts->tv_nsec / 1000000);
  return ms;
}

// libfuse passes UTIME_OMIT/UTIME_NOW in tv_nsec; as plain milliseconds both
// would read as ~1073 ms after the epoch. OMIT becomes UINT64_MAX (JS sees
// 2^64), NOW becomes the current time.
static uint64_t utimens_to_uint64 (const struct timespec* ts) {
  if (ts->tv_nsec == UTIME_OMIT) return UINT64_MAX;
  if (ts->tv_nsec == UTIME_NOW) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return timespec_to_uint64(&now);
  }
  return timespec_to_uint64(ts);
}

static void populate_stat (uint32_t *ints, struct stat* stat) {
  stat->st_mode = *ints++;
  stat->st_uid = *ints++;
  stat->st_gid = *ints++;
  stat->st_size = uint32s_to_uint64(&ints);
  stat->st_dev = *ints++;
  stat->st_nlink = *ints++;
  stat->st_ino = *ints++;
  stat->st_rdev = *ints++;
  stat->st_blksize = *ints++;
  stat->st_blocks = uint32s_to_uint64(&ints);
#ifdef __APPLE__
  uint32s_to_timespec(&stat->st_atimespec, &ints);
  uint32s_to_timespec(&stat->st_mtimespec, &ints);
  uint32s_to_timespec(&stat->st_ctimespec, &ints);
#else
  uint32s_to_timespec(&stat->st_atim, &ints);
  uint32s_to_timespec(&stat->st_mtim, &ints);
  uint32s_to_timespec(&stat->st_ctim, &ints);
#endif
}

static void populate_statvfs (uint32_t *ints, struct statvfs* statvfs) {
  statvfs->f_bsize = *ints++;
  statvfs->f_frsize = *ints++;
  statvfs->f_blocks = *ints++;
  statvfs->f_bfree = *ints++;
  statvfs->f_bavail = *ints++;
  statvfs->f_files = *ints++;
  statvfs->f_ffree = *ints++;
  statvfs->f_favail = *ints++;
  statvfs->f_fsid = *ints++;
  statvfs->f_flag = *ints++;
  statvfs->f_namemax = *ints++;
}

// Methods

FUSE_METHOD(statfs, 1, 1, (const char * path, struct statvfs *statvfs), {
  l->path = path;
  l->statvfs = statvfs;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
}, {
  NAPI_ARGV_BUFFER_CAST(uint32_t*, ints, 2)
  populate_statvfs(ints, l->statvfs);
})

FUSE_METHOD(getattr, 1, 1, (const char *path, struct stat *stat), {
  struct attr_table *attrs = ((fuse_thread_t *) fuse_get_context()->private_data)->attrs;
  if (attr_table_get(attrs, path, stat)) return 0;
  if (listing_says_absent(attrs, path)) return -ENOENT;
  l->path = path;
  l->stat = stat;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
}, {
  NAPI_ARGV_BUFFER_CAST(uint32_t*, ints, 2)
  populate_stat(ints, l->stat);
})

// An fstat is answered from the attribute table as a stat is: JS drops a
// path's entry when a write to it is queued and caches none while writes are
// unanswered, so an entry here is what JS's fgetattr would answer after
// settling the handle. libfuse asks this after every create (lookup_path
// with the new handle), so a file made costs one hand-off less. A file
// unlinked while open has only its hidden name, which the table never holds.
FUSE_METHOD(fgetattr, 2, 1, (const char *path, struct stat *stat, struct fuse_file_info *info), {
  if (path != NULL && attr_table_get(((fuse_thread_t *) fuse_get_context()->private_data)->attrs, path, stat)) return 0;
  l->path = path;
  l->stat = stat;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[3]));
  } else {
    napi_create_uint32(env, 0, &(argv[3]));
  }
}, {
  NAPI_ARGV_BUFFER_CAST(uint32_t*, ints, 2)
  populate_stat(ints, l->stat);
})

FUSE_METHOD_VOID(access, 2, 0, (const char *path, int mode), {
  l->path = path;
  l->mode = mode;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
})

FUSE_METHOD(open, 2, 1, (const char *path, struct fuse_file_info *info), {
  l->path = path;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->flags, &(argv[3]));
  } else {
    napi_create_uint32(env, 0, &(argv[3]));
  }
}, {
  NAPI_ARGV_INT32(fd, 2)
  if (fd != 0) {
    l->info->fh = fd;
  }
})

FUSE_METHOD(opendir, 3, 1, (const char *path, struct fuse_file_info *info), {
  l->path = path;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[3]));
    napi_create_uint32(env, l->info->flags, &(argv[4]));
  } else {
    napi_create_uint32(env, 0, &(argv[3]));
    napi_create_uint32(env, 0, &(argv[4]));
  }
}, {
  NAPI_ARGV_INT32(fd, 2)
  if (fd != 0) {
    l->info->fh = fd;
  }
})

FUSE_METHOD(create, 3, 1, (const char *path, mode_t mode, struct fuse_file_info *info), {
  l->path = path;
  l->mode = mode;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
  napi_create_uint32(env, l->info != NULL ? l->info->flags : 0, &(argv[4]));
}, {
  NAPI_ARGV_INT32(fd, 2)
  if (fd != 0) {
    l->info->fh = fd;
  }
})

FUSE_METHOD_VOID(utimens, 5, 0, (const char *path, const struct timespec tv[2]), {
  l->path = path;
  l->atime = utimens_to_uint64(&tv[0]);
  l->mtime = utimens_to_uint64(&tv[1]);
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  FUSE_UINT64_TO_INTS_ARGV(l->atime, 3)
  FUSE_UINT64_TO_INTS_ARGV(l->mtime, 5)
})

FUSE_METHOD_VOID(release, 2, 0, (const char *path, struct fuse_file_info *info), {
  l->path = path;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[3]));
  } else {
    napi_create_uint32(env, 0, &(argv[3]));
  }
})

FUSE_METHOD_VOID(releasedir, 2, 0, (const char *path, struct fuse_file_info *info), {
  l->path = path;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[3]));
  } else {
    napi_create_uint32(env, 0, &(argv[3]));
  }
})

FUSE_METHOD(read, 6, 2, (const char *path, char *buf, size_t len, off_t offset, struct fuse_file_info *info), {
  l->path = path;
  l->buf = buf;
  l->len = len;
  l->offset = offset;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->info->fh, &(argv[3]));
  napi_create_external_buffer(env, l->len, (char *) l->buf, NULL, NULL, &(argv[4]));
  napi_create_uint32(env, l->len, &(argv[5]));
  FUSE_UINT64_TO_INTS_ARGV(l->offset, 6)
}, {
  if (IS_ARRAY_BUFFER_DETACH_SUPPORTED == 1) assert(napi_detach_arraybuffer(env, argv[3]) == napi_ok);
})

FUSE_METHOD(write, 6, 2, (const char *path, const char *buf, size_t len, off_t offset, struct fuse_file_info *info), {
  l->path = path;
  l->buf = buf;
  l->len = len;
  l->offset = offset;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->info->fh, &(argv[3]));
  napi_create_external_buffer(env, l->len, (char *) l->buf, NULL, NULL, &(argv[4]));
  napi_create_uint32(env, l->len, &(argv[5]));
  FUSE_UINT64_TO_INTS_ARGV(l->offset, 6)
}, {
  if (IS_ARRAY_BUFFER_DETACH_SUPPORTED == 1) assert(napi_detach_arraybuffer(env, argv[3]) == napi_ok);
})

FUSE_METHOD(readdir, 1, 3, (const char *path, void *buf, fuse_fill_dir_t filler, off_t offset, struct fuse_file_info *info, enum fuse_readdir_flags flags), {
  l->flags = flags;
  l->buf = buf;
  l->path = path;
  l->offset = offset;
  l->info = info;
  l->readdir_filler = filler;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
}, {
  uint32_t stats_length = 0;
  uint32_t names_length = 0;
  napi_value raw_names = argv[2];
  napi_value raw_stats = argv[3];
  if (res >= 0) {
    napi_get_array_length(env, raw_stats, &stats_length);
    napi_get_array_length(env, raw_names, &names_length);
  }
  if (res < 0) {
    // nothing to list
  } else if (l->snap != NULL) {
    // Kept for the worker thread, which fills the kernel's buffers from it.
    uint8_t *plus = NULL;
    size_t plus_length = 0;
    napi_typedarray_type pt;
    napi_value pab;
    size_t pofs;
    if (napi_get_typedarray_info(env, argv[4], &pt, &plus_length, (void **) &plus, &pab, &pofs) != napi_ok || pt != napi_uint8_array) plus_length = 0;
    NAPI_FOR_EACH(raw_names, raw_name) {
      NAPI_UTF8(name, 1024, raw_name)
      struct stat st;
      int kind = DIR_NAME_ONLY;
      memset(&st, 0, sizeof(st));
      if (names_length == stats_length) {
        napi_value raw_stat;
        napi_get_element(env, raw_stats, i, &raw_stat);
        NAPI_BUFFER_CAST(uint32_t*, stats_array, raw_stat);
        populate_stat(stats_array, &st);
        kind = (i < plus_length && plus[i]) ? DIR_ATTRS : DIR_TYPE;
      }
      if (dir_snap_add(l->snap, name, &st, kind) != 0) { l->snap->failed = 1; break; }
    }
  } else {
    // libfuse keeps the whole listing and answers every offset from it
    // ("filled" mode), which can carry no attributes: READDIRPLUS entries
    // from it have no inode, so no FUSE_FILL_DIR_PLUS here.
    NAPI_FOR_EACH(raw_names, raw_name) {
      NAPI_UTF8(name, 1024, raw_name)
      struct stat st;
      struct stat *stp = NULL;
      if (names_length == stats_length) {
        napi_value raw_stat;
        napi_get_element(env, raw_stats, i, &raw_stat);
        NAPI_BUFFER_CAST(uint32_t*, stats_array, raw_stat);
        populate_stat(stats_array, &st);
        stp = &st;
      }
      if (l->readdir_filler((char *) l->buf, name, stp, 0, 0) == 1) break;
    }
  }
})

#ifdef __APPLE__

FUSE_METHOD(setxattr, 5, 1, (const char *path, const char *name, const char *value, size_t size, int flags, uint32_t position), {
  l->path = path;
  l->name = name;
  l->value = value;
  l->size = size;
  l->flags = flags;
  l->position = position;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->name, NAPI_AUTO_LENGTH, &(argv[3]));
  napi_create_external_buffer(env, l->size, (char *) l->value, NULL, NULL, &(argv[4]));
  napi_create_uint32(env, l->position, &(argv[5]));
  napi_create_uint32(env, l->flags, &(argv[6]));
}, {
  if (IS_ARRAY_BUFFER_DETACH_SUPPORTED == 1) assert(napi_detach_arraybuffer(env, argv[2]) == napi_ok);
})

FUSE_METHOD(getxattr, 4, 1, (const char *path, const char *name, char *value, size_t size, uint32_t position), {
  l->path = path;
  l->name = name;
  l->value = value;
  l->size = size;
  l->position = position;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->name, NAPI_AUTO_LENGTH, &(argv[3]));
  napi_create_external_buffer(env, l->size, (char *) l->value, NULL, NULL, &(argv[4]));
  napi_create_uint32(env, l->position, &(argv[5]));
}, {
  if (IS_ARRAY_BUFFER_DETACH_SUPPORTED == 1) assert(napi_detach_arraybuffer(env, argv[2]) == napi_ok);
})

#else

FUSE_METHOD(setxattr, 5, 1, (const char *path, const char *name, const char *value, size_t size, int flags), {
  l->path = path;
  l->name = name;
  l->value = value;
  l->size = size;
  l->flags = flags;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->name, NAPI_AUTO_LENGTH, &(argv[3]));
  napi_create_external_buffer(env, l->size, (char *) l->value, NULL, NULL, &(argv[4]));
  napi_create_uint32(env, 0, &(argv[5])); // normalize apis between mac and linux
  napi_create_uint32(env, l->flags, &(argv[6]));
}, {
  if (IS_ARRAY_BUFFER_DETACH_SUPPORTED == 1) assert(napi_detach_arraybuffer(env, argv[2]) == napi_ok);
})

FUSE_METHOD(getxattr, 4, 1, (const char *path, const char *name, char *value, size_t size), {
  l->path = path;
  l->name = name;
  l->value = value;
  l->size = size;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->name, NAPI_AUTO_LENGTH, &(argv[3]));
  napi_create_external_buffer(env, l->size, (char *) l->value, NULL, NULL, &(argv[4]));
  napi_create_uint32(env, 0, &(argv[5]));
}, {
  if (IS_ARRAY_BUFFER_DETACH_SUPPORTED == 1) assert(napi_detach_arraybuffer(env, argv[2]) == napi_ok);
})

#endif

FUSE_METHOD(listxattr, 2, 1, (const char *path, char *list, size_t size), {
  l->path = path;
  l->list = list;
  l->size = size;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_external_buffer(env, l->size, l->list, NULL, NULL, &(argv[3]));
}, {
  if (IS_ARRAY_BUFFER_DETACH_SUPPORTED == 1) assert(napi_detach_arraybuffer(env, argv[2]) == napi_ok);
})

FUSE_METHOD_VOID(removexattr, 2, 0, (const char *path, const char *name), {
  l->path = path;
  l->name = name;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->name, NAPI_AUTO_LENGTH, &(argv[3]));
})

FUSE_METHOD_VOID(flush, 2, 0, (const char *path, struct fuse_file_info *info), {
  l->path = path;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[3]));
  } else {
    napi_create_uint32(env, 0, &(argv[3]));
  }
})

FUSE_METHOD_VOID(fsync, 3, 0, (const char *path, int datasync, struct fuse_file_info *info), {
  l->path = path;
  l->mode = datasync;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[4]));
  } else {
    napi_create_uint32(env, 0, &(argv[4]));
  }
})

FUSE_METHOD_VOID(fsyncdir, 3, 0, (const char *path, int datasync, struct fuse_file_info *info), {
  l->path = path;
  l->mode = datasync;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[4]));
  } else {
    napi_create_uint32(env, 0, &(argv[4]));
  }
})


FUSE_METHOD_VOID(truncate, 3, 0, (const char *path, off_t size), {
  l->path = path;
  l->offset = size;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  FUSE_UINT64_TO_INTS_ARGV(l->offset, 3)
})

FUSE_METHOD_VOID(ftruncate, 4, 0, (const char *path, off_t size, struct fuse_file_info *info), {
  l->path = path;
  l->offset = size;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[3]));
  } else {
    napi_create_uint32(env, 0, &(argv[3]));
  }
  FUSE_UINT64_TO_INTS_ARGV(l->offset, 4)
})

FUSE_METHOD(readlink, 1, 1, (const char *path, char *linkname, size_t len), {
  l->path = path;
  l->linkname = linkname;
  l->len = len;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
}, {
  NAPI_ARGV_UTF8(linkname, l->len, 2)
  strncpy(l->linkname, linkname, l->len);
})

FUSE_METHOD_VOID(chown, 3, 0, (const char *path, uid_t uid, gid_t gid), {
  l->path = path;
  l->uid = uid;
  l->gid = gid;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->uid, &(argv[3]));
  napi_create_uint32(env, l->gid, &(argv[4]));
})

FUSE_METHOD_VOID(chmod, 2, 0, (const char *path, mode_t mode), {
  l->path = path;
  l->mode = mode;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
})

FUSE_METHOD_VOID(mknod, 3, 0, (const char *path, mode_t mode, dev_t dev), {
  l->path = path;
  l->mode = mode;
  l->dev = dev;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
  napi_create_uint32(env, l->dev, &(argv[4]));
})

FUSE_METHOD_VOID(unlink, 1, 0, (const char *path), {
  l->path = path;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
})

FUSE_METHOD_VOID(rename, 2, 0, (const char *path, const char *dest), {
  l->path = path;
  l->dest = dest;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->dest, NAPI_AUTO_LENGTH, &(argv[3]));
})

FUSE_METHOD_VOID(link, 2, 0, (const char *path, const char *dest), {
  l->path = path;
  l->dest = dest;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->dest, NAPI_AUTO_LENGTH, &(argv[3]));
})

FUSE_METHOD_VOID(symlink, 2, 0, (const char *path, const char *dest), {
  l->path = path;
  l->dest = dest;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->dest, NAPI_AUTO_LENGTH, &(argv[3]));
})

FUSE_METHOD_VOID(mkdir, 2, 0, (const char *path, mode_t mode), {
  l->path = path;
  l->mode = mode;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
})

FUSE_METHOD_VOID(rmdir, 1, 0, (const char *path), {
  l->path = path;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
})

static void fuse_native_dispatch_init (uv_async_t* handle, fuse_thread_locals_t* l, fuse_thread_t* ft) {\
  FUSE_NATIVE_CALLBACK(ft->handlers[op_init], {
    napi_value argv[2];

    napi_get_reference_value(env, l->self, &(argv[0]));
    napi_create_uint32(env, l->op, &(argv[1]));

    NAPI_MAKE_CALLBACK(env, NULL, ctx, callback, 2, argv, NULL);
  })
}

NAPI_METHOD(fuse_native_signal_init) {
  NAPI_ARGV(2)
  NAPI_ARGV_BUFFER_CAST(fuse_thread_locals_t *, l, 0);
  NAPI_ARGV_INT32(res, 1);
  l->res = res;
  uv_sem_post(&(l->sem));
  return NULL;
}

static void * fuse_native_init (struct fuse_conn_info *conn, struct fuse_config *cfg) {
  fuse_thread_locals_t *l = get_thread_locals();
  fuse_thread_t *ft = l->fuse;

  // -o max_write, readdirplus=, splice_*, writeback_cache... (parsed at mount)
  if (ft->conn_opts != NULL) fuse_apply_conn_info_opts(ft->conn_opts, conn);
  ft->negotiated[0] = conn->max_write;
  ft->negotiated[1] = conn->max_readahead;
  ft->negotiated[2] = conn->max_read;
  ft->negotiated[3] = conn->want;
  // How long the kernel may keep a reply's attributes, plus a margin for
  // the reply's way to the kernel after the note is taken.
  ft->links_ttl_ms = cfg->attr_timeout * 1000.0 + 1000.0;

  l->op = op_init;
  l->op_fn = fuse_native_dispatch_init;
  capture_caller(l);

  uv_async_send(&(l->async));
  uv_sem_wait(&(l->sem));

  return ft;
}

// libfuse 3 signatures over the 2.x-shaped methods above, so the JS side
// keeps fuse-native's interface: an fi means the kernel named an open file
// (fstat, ftruncate), which fuse-native's JS handlers know as fgetattr and
// ftruncate; chmod, chown and utimens ignore it as libfuse 2 did.

static fuse_thread_t * current_ft () {
  return (fuse_thread_t *) fuse_get_context()->private_data;
}

static int fuse3_getattr (const char *path, struct stat *st, struct fuse_file_info *fi) {
  fuse_thread_t *ft = current_ft();
  int r = (fi != NULL && ft->implemented[op_fgetattr]) ? fuse_native_fgetattr(path, st, fi) : fuse_native_getattr(path, st);
  if (r == 0) links_note(ft, path, st);
  return r;
}

// The calls below end a change from the caller's view: each waits for the
// hard-link notifications its change queued (see links_settle).

static int fuse3_truncate (const char *path, off_t size, struct fuse_file_info *fi) {
  int r = (fi != NULL && current_ft()->implemented[op_ftruncate]) ? fuse_native_ftruncate(path, size, fi) : fuse_native_truncate(path, size);
  links_settle(current_ft(), -1);
  return r;
}

static int fuse3_chmod (const char *path, mode_t mode, struct fuse_file_info *fi) {
  int r = fuse_native_chmod(path, mode);
  links_settle(current_ft(), -1);
  return r;
}

static int fuse3_chown (const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi) {
  int r = fuse_native_chown(path, uid, gid);
  links_settle(current_ft(), -1);
  return r;
}

static int fuse3_utimens (const char *path, const struct timespec tv[2], struct fuse_file_info *fi) {
  int r = fuse_native_utimens(path, tv);
  links_settle(current_ft(), -1);
  return r;
}

static int fuse3_flush (const char *path, struct fuse_file_info *fi) {
  int r = fuse_native_flush(path, fi);
  links_settle(current_ft(), -1);
  return r;
}

static int fuse3_fsync (const char *path, int datasync, struct fuse_file_info *fi) {
  int r = fuse_native_fsync(path, datasync, fi);
  links_settle(current_ft(), -1);
  return r;
}

static int fuse3_link (const char *path, const char *dest) {
  int r = fuse_native_link(path, dest);
  links_settle(current_ft(), -1);
  return r;
}

static int fuse3_unlink (const char *path) {
  int r = fuse_native_unlink(path);
  links_settle(current_ft(), -1);
  return r;
}

static int fuse3_write (const char *path, const char *buf, size_t len, off_t offset, struct fuse_file_info *fi) {
  fuse_thread_t *ft = current_ft();
  if (ft->wq.max_bytes > 0 && fi != NULL && path != NULL && !links_noted(ft)) {
    int q = wq_push(ft, path, buf, len, offset, fi->fh);
    if (q >= 0) return q;
  }
  int r = fuse_native_write(path, buf, len, offset, fi);
  links_settle(ft, LINKS_WRITE_WAIT_MS);
  return r;
}

static int fuse3_release (const char *path, struct fuse_file_info *fi) {
  int r = fuse_native_release(path, fi);
  if (fi != NULL) wq_forget_handle(current_ft(), fi->fh);
  return r;
}

// A directory handle carries its listing (see "Directory listings") when JS
// has no opendir of its own to put in fi->fh.
static int fuse3_opendir (const char *path, struct fuse_file_info *fi) {
  if (current_ft()->implemented[op_opendir]) return fuse_native_opendir(path, fi);
  fi->fh = (uint64_t) (uintptr_t) calloc(1, sizeof(struct dir_snap)); // NULL: libfuse keeps the listing
  return 0;
}

static int fuse3_releasedir (const char *path, struct fuse_file_info *fi) {
  fuse_thread_t *ft = current_ft();
  if (ft->implemented[op_opendir]) return ft->implemented[op_releasedir] ? fuse_native_releasedir(path, fi) : 0;
  dir_snap_free((struct dir_snap *) (uintptr_t) fi->fh);
  return 0;
}

static int fuse3_readdir (const char *path, void *buf, fuse_fill_dir_t filler, off_t offset, struct fuse_file_info *fi, enum fuse_readdir_flags flags) {
  fuse_thread_t *ft = current_ft();
  struct dir_snap *s = (fi != NULL && !ft->implemented[op_opendir]) ? (struct dir_snap *) (uintptr_t) fi->fh : NULL;
  if (s == NULL) return fuse_native_readdir(path, buf, filler, offset, fi, flags);
  if (offset == 0 || !s->valid) {
    dir_snap_clear(s);
    fuse_thread_locals_t *l = get_thread_locals();
    l->snap = s;
    int r = fuse_native_readdir(path, buf, filler, offset, fi, flags);
    l->snap = NULL;
    if (r < 0) return r;
    if (s->failed) { dir_snap_clear(s); return -ENOMEM; }
    s->valid = 1;
  }
  int plus_ok = (flags & FUSE_READDIR_PLUS) && (ft->flags & FN_READDIR_PLUS);
  size_t dl = strlen(path);
  for (uint32_t i = offset < 0 ? 0 : (uint32_t) offset; i < s->n; i++) {
    struct dir_snap_entry *e = s->e[i];
    int plus = plus_ok && e->kind == DIR_ATTRS;
    if (plus) {
      // Attributes on their way to the kernel (see "Hard links").
      char full[4096];
      if (snprintf(full, sizeof(full), "%s%s%s", path, (dl > 0 && path[dl - 1] == '/') ? "" : "/", e->name) < (int) sizeof(full)) links_note(ft, full, &e->st);
    }
    // The offset given with an entry is where the next one starts.
    if (filler(buf, e->name, e->kind == DIR_NAME_ONLY ? NULL : &e->st, (off_t) i + 1, plus ? FUSE_FILL_DIR_PLUS : 0) == 1) break;
  }
  return 0;
}

// renameat2 flags (RENAME_NOREPLACE, RENAME_EXCHANGE) have no SFTP
// equivalent; EINVAL is what the kernel answered for them under libfuse 2,
// and what makes coreutils' mv fall back to a plain rename.
static int fuse3_rename (const char *path, const char *dest, unsigned int flags) {
  if (flags != 0) return -EINVAL;
  int r = fuse_native_rename(path, dest);
  if (r == 0) links_renamed(current_ft(), path, dest);
  links_settle(current_ft(), -1);
  return r;
}

// The Node thread: hand the oldest queued write to JS, unless JS has one.
static void wq_dispatch (uv_async_t *handle) {
  fuse_thread_t *ft = (fuse_thread_t *) handle->data;
  struct write_queue *q = &ft->wq;
  pthread_mutex_lock(&q->mut);
  struct wq_item *it = (q->busy || q->head == NULL) ? NULL : q->head;
  if (it != NULL) q->busy = 1;
  pthread_mutex_unlock(&q->mut);
  if (it == NULL) return;

  FUSE_NATIVE_CALLBACK(ft->handlers[op_write_queued], {
    napi_value argv[8];
    // The "native handler" JS gives back to the signal: this mount.
    napi_create_external_buffer(env, sizeof(fuse_thread_t), ft, NULL, NULL, &(argv[0]));
    napi_create_uint32(env, op_write_queued, &(argv[1]));
    napi_create_string_utf8(env, it->path, NAPI_AUTO_LENGTH, &(argv[2]));
    napi_create_uint32(env, (uint32_t) it->fh, &(argv[3]));
    napi_create_external_buffer(env, it->len, it->data, NULL, NULL, &(argv[4]));
    napi_create_uint32(env, it->len, &(argv[5]));
    napi_create_uint32(env, (uint32_t) (((uint64_t) it->offset) % 4294967296), &(argv[6]));
    napi_create_uint32(env, (uint32_t) (((uint64_t) it->offset) / 4294967296), &(argv[7]));
    NAPI_MAKE_CALLBACK(env, NULL, ctx, callback, 8, argv, NULL)
  })
}

// JS took the oldest queued write (res: bytes, or -errno if it refused it).
NAPI_METHOD(fuse_native_signal_write_queued) {
  NAPI_ARGV(4)
  NAPI_ARGV_BUFFER_CAST(fuse_thread_t *, ft, 0);
  NAPI_ARGV_INT32(res, 1);
  // The data is freed below: JS must not read it after this (as with a
  // WRITE's buffer, which libfuse reuses once answered).
  if (IS_ARRAY_BUFFER_DETACH_SUPPORTED == 1) napi_detach_arraybuffer(env, argv[3]);
  struct write_queue *q = &ft->wq;
  pthread_mutex_lock(&q->mut);
  struct wq_item *it = q->head;
  if (it == NULL || !q->busy) {
    pthread_mutex_unlock(&q->mut);
    napi_throw_error(env, NULL, "write_queued signalled with no write given to JS");
    return NULL;
  }
  q->head = it->next;
  if (q->head == NULL) q->tail = NULL;
  q->bytes -= it->len;
  wq_global_release(it->len);
  q->done_seq = it->seq;
  q->busy = 0;
  if ((res < 0 || (size_t) res != it->len) && wq_failed_index_locked(q, it->fh) < 0) {
    if (q->nfailed == q->failed_cap) {
      uint32_t cap = q->failed_cap ? q->failed_cap * 2 : 8;
      uint64_t *f = realloc(q->failed, cap * sizeof(uint64_t));
      if (f != NULL) { q->failed = f; q->failed_cap = cap; }
    }
    if (q->nfailed < q->failed_cap) q->failed[q->nfailed++] = it->fh;
  }
  int more = q->head != NULL;
  pthread_cond_broadcast(&q->cond);
  pthread_mutex_unlock(&q->mut);
  free(it);
  if (more) wq_dispatch(&q->async);
  return NULL;
}

// write_queue_length(thread): writes answered early that JS has not taken yet.
NAPI_METHOD(fuse_native_write_queue_length) {
  NAPI_ARGV(1)
  NAPI_ARGV_BUFFER_CAST(fuse_thread_t *, ft, 0);
  struct write_queue *q = &ft->wq;
  uint32_t n = 0;
  if (q->inited) {
    pthread_mutex_lock(&q->mut);
    n = (uint32_t) (q->queued_seq - q->done_seq);
    pthread_mutex_unlock(&q->mut);
  }
  NAPI_RETURN_UINT32(n)
}

// trim_memory(): hand the free pages of every malloc arena back to the
// kernel. glibc returns freed memory only from the top of an arena; the
// 1 MiB request copies made on libfuse's threads and the packet buffers
// freed after a V8 collection leave holes below the top that stay resident
// (docs/performance.md, "Daemon memory"). malloc_trim(0) releases those
// holes page by page (madvise), whatever their position.
NAPI_METHOD(fuse_native_trim_memory) {
  int released = malloc_trim(0);
  NAPI_RETURN_UINT32(released ? 1 : 0)
}

// detach(mnt, cb): a lazy unmount (what `fusermount3 -uz` does for root),
// run on libuv's thread pool; cb gets 0 or a negative errno. The daemon is
// root in its plugin, and forking fusermount3 from the Node thread cost
// 50-95 ms per unmount at 1.4 GiB of RSS (fork copies the page tables), which
// 256 simultaneous Unmounts turned into a 13 s stall of the event loop
// (docs/scaling.md). libfuse's loop thread sees the connection end and exits
// as it did after fusermount3. UMOUNT_NOFOLLOW: a symlink planted at the
// mountpoint path is not followed to some other mount.
typedef struct {
  napi_async_work work;
  napi_ref cb;
  int err;
  char mnt[];
} detach_req_t;

static void detach_execute (napi_env env, void *data) {
  detach_req_t *r = (detach_req_t *) data;
  r->err = umount2(r->mnt, MNT_DETACH | UMOUNT_NOFOLLOW) == 0 ? 0 : errno;
}

static void detach_complete (napi_env env, napi_status status, void *data) {
  detach_req_t *r = (detach_req_t *) data;
  napi_value cb, global, argv[1];
  napi_get_reference_value(env, r->cb, &cb);
  napi_get_global(env, &global);
  napi_create_int32(env, status == napi_ok ? -r->err : -ECANCELED, &argv[0]);
  napi_delete_reference(env, r->cb);
  napi_delete_async_work(env, r->work);
  free(r);
  napi_call_function(env, global, cb, 1, argv, NULL);
}

NAPI_METHOD(fuse_native_detach) {
  NAPI_ARGV(2)
  size_t len;
  NAPI_STATUS_THROWS(napi_get_value_string_utf8(env, argv[0], NULL, 0, &len))
  detach_req_t *r = malloc(sizeof(detach_req_t) + len + 1);
  if (r == NULL) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  napi_get_value_string_utf8(env, argv[0], r->mnt, len + 1, &len);
  r->err = 0;
  napi_create_reference(env, argv[1], 1, &r->cb);
  napi_value name;
  napi_create_string_utf8(env, "fuse-native:detach", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, detach_execute, detach_complete, r, &r->work);
  napi_queue_async_work(env, r->work);
  return NULL;
}

// set_write_behind_budget(bytes): the bound on early-reply copies of all
// mounts together (see "Early write replies"); 0 removes it. Returns the
// bytes held now.
NAPI_METHOD(fuse_native_set_write_behind_budget) {
  NAPI_ARGV(1)
  NAPI_ARGV_UINT32(bytes, 0)
  __atomic_store_n(&wq_global_max, (size_t) bytes, __ATOMIC_RELAXED);
  NAPI_RETURN_UINT32((uint32_t) __atomic_load_n(&wq_global_bytes, __ATOMIC_RELAXED))
}

// Top-level dispatcher

static void fuse_native_dispatch (uv_async_t* handle) {
  fuse_thread_locals_t *l = (fuse_thread_locals_t *) handle->data;
  fuse_thread_t *ft = l->fuse;
  void (*fn)(uv_async_t *, fuse_thread_locals_t *, fuse_thread_t *) = l->op_fn;

  memcpy(ft->caller, l->caller, sizeof(ft->caller));
  fn(handle, l, ft);
}

static void fuse_native_async_init (uv_async_t* handle) {
  fuse_thread_t *ft = (fuse_thread_t *) handle->data;
  fuse_thread_locals_t *l;

  FUSE_NATIVE_CALLBACK(ft->malloc, {
    napi_value argv[1];
    napi_create_uint32(ft->env, (uint32_t) sizeof(fuse_thread_locals_t), &(argv[0]));

    napi_value buf;
    NAPI_MAKE_CALLBACK(ft->env, NULL, ctx, callback, 1, argv, &buf);

    size_t l_len;

    napi_get_buffer_info(env, buf, (void **) &l, &l_len);
    napi_create_reference(env, buf, 1, &(l->self));
  })


  int err = uv_async_init(uv_default_loop(), &(l->async), (uv_async_cb) fuse_native_dispatch);
  assert(err >= 0);

  uv_unref((uv_handle_t *) &(l->async));

  uv_sem_init(&(l->sem), 0);
  l->async.data = l;
  ft->async.data = l;
  l->fuse = ft;

  uv_sem_post(&(ft->sem));
}

static fuse_thread_locals_t* get_thread_locals () {
  struct fuse_context *ctx = fuse_get_context();
  fuse_thread_t *ft = (fuse_thread_t *) ctx->private_data;

  void *data = pthread_getspecific(thread_locals_key);

  if (data != NULL) {
    return (fuse_thread_locals_t *) data;
  }

  // Need to lock the mutation of l->async.
  uv_mutex_lock(&(ft->mut));
  ft->async.data = ft;

  // Notify the main thread to uv_async_init l->async.
  uv_async_send(&(ft->async));
  uv_sem_wait(&(ft->sem));

  fuse_thread_locals_t *l = (fuse_thread_locals_t*) ft->async.data;

  pthread_setspecific(thread_locals_key, (void *) l);
  uv_mutex_unlock(&(ft->mut));

  return l;
}

// Worker threads: each request blocks one until JS answers, so the cap is
// how many requests can wait on JS (or the server) at once. libfuse 3's
// default is 10; libfuse 2 had none.
#define FUSE_NATIVE_MAX_THREADS 64

// Idle workers a mount keeps (libfuse 3's default is 10). Each keeps its
// stack and the pages of its request buffer that its largest request
// filled, for the mount's life: a mount that once had 8 writers kept 10.
// A sequential writer overlaps WRITE, FLUSH and RELEASE on 2-3 workers;
// 2 idle made threads come and go per request (small files used a third
// more CPU, stop 13), 4 did not (docs/performance.md, "Idle libfuse
// workers per mount").
#define FUSE_NATIVE_IDLE_THREADS 4

static void* start_fuse_thread (void *data) {
  fuse_thread_t *ft = (fuse_thread_t *) data;
  struct fuse_loop_config *cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_max_threads(cfg, FUSE_NATIVE_MAX_THREADS);
  fuse_loop_cfg_set_idle_threads(cfg, FUSE_NATIVE_IDLE_THREADS);
  fuse_loop_mt(ft->fuse, cfg);
  fuse_loop_cfg_destroy(cfg);

  pthread_mutex_lock(&attr_tables_mut);
  struct links_notifier *n = ft->notifier;
  struct attr_table *links = ft->links;
  ft->notifier = NULL;
  ft->links = NULL;
  pthread_mutex_unlock(&attr_tables_mut);
  links_notifier_free(n);
  if (links != NULL) {
    attr_table_clear_locked(links);
    pthread_rwlock_destroy(&links->lock);
    free(links->buckets);
    free(links);
  }

  fuse_unmount(ft->fuse);
  fuse_destroy(ft->fuse);
  free(ft->conn_opts);
  ft->conn_opts = NULL;

  pthread_mutex_lock(&attr_tables_mut);
  struct attr_table *t = ft->attrs;
  ft->attrs = NULL;
  pthread_mutex_unlock(&attr_tables_mut);
  if (t != NULL) {
    attr_table_clear_locked(t);
    pthread_rwlock_destroy(&t->lock);
    free(t->buckets);
    free(t);
  }

  return NULL;
}

NAPI_METHOD(fuse_native_mount) {
  NAPI_ARGV(9)

  NAPI_ARGV_UTF8(mnt, 1024, 0);
  NAPI_ARGV_UTF8(mntopts, 1024, 1);
  NAPI_ARGV_BUFFER_CAST(fuse_thread_t *, ft, 2);
  napi_create_reference(env, argv[3], 1, &(ft->ctx));
  napi_create_reference(env, argv[4], 1, &(ft->malloc));
  napi_value handlers = argv[5];
  NAPI_ARGV_BUFFER_CAST(uint32_t *, implemented, 6)
  NAPI_ARGV_UINT32(flags, 7)
  NAPI_ARGV_UINT32(write_behind, 8)
  ft->flags = flags;
  for (int i = 0; i < 35; i++) ft->implemented[i] = implemented[i] != 0;

  for (int i = 0; i < 35; i++) {
    ft->handlers[i] = NULL;
  }

  NAPI_FOR_EACH(handlers, handler) {
    napi_create_reference(env, handler, 1, &ft->handlers[i]);
  }

  ft->env = env;

  struct fuse_operations ops = { };
  if (implemented[op_access]) ops.access = fuse_native_access;
  if (implemented[op_truncate] || implemented[op_ftruncate]) ops.truncate = fuse3_truncate;
  if (implemented[op_getattr] || implemented[op_fgetattr]) ops.getattr = fuse3_getattr;
  if (implemented[op_flush]) ops.flush = fuse3_flush;
  if (implemented[op_fsync]) ops.fsync = fuse3_fsync;
  if (implemented[op_fsyncdir]) ops.fsyncdir = fuse_native_fsyncdir;
  if (implemented[op_readdir]) ops.readdir = fuse3_readdir;
  if (implemented[op_readlink]) ops.readlink = fuse_native_readlink;
  if (implemented[op_chown]) ops.chown = fuse3_chown;
  if (implemented[op_chmod]) ops.chmod = fuse3_chmod;
  if (implemented[op_mknod]) ops.mknod = fuse_native_mknod;
  if (implemented[op_setxattr]) ops.setxattr = fuse_native_setxattr;
  if (implemented[op_getxattr]) ops.getxattr = fuse_native_getxattr;
  if (implemented[op_listxattr]) ops.listxattr = fuse_native_listxattr;
  if (implemented[op_removexattr]) ops.removexattr = fuse_native_removexattr;
  if (implemented[op_statfs]) ops.statfs = fuse_native_statfs;
  if (implemented[op_open]) ops.open = fuse_native_open;
  ops.opendir = fuse3_opendir;
  if (implemented[op_read]) ops.read = fuse_native_read;
  if (implemented[op_write]) ops.write = fuse3_write;
  if (implemented[op_release]) ops.release = fuse3_release;
  ops.releasedir = fuse3_releasedir;
  if (implemented[op_create]) ops.create = fuse_native_create;
  // libfuse 3 always passes UTIME_OMIT/UTIME_NOW (libfuse 2 needed
  // flag_utime_omit_ok, or it dropped touch -m and touch -a).
  if (implemented[op_utimens]) ops.utimens = fuse3_utimens;
  if (implemented[op_unlink]) ops.unlink = fuse3_unlink;
  if (implemented[op_rename]) ops.rename = fuse3_rename;
  if (implemented[op_link]) ops.link = fuse3_link;
  if (implemented[op_symlink]) ops.symlink = fuse_native_symlink;
  if (implemented[op_mkdir]) ops.mkdir = fuse_native_mkdir;
  if (implemented[op_rmdir]) ops.rmdir = fuse_native_rmdir;
  // init always: it records what the kernel negotiated and applies the
  // connection options; JS answers it without ops.init.
  ops.init = fuse_native_init;

  int _argc = (strcmp(mntopts, "-o") <= 0) ? 1 : 2;
  char *_argv[] = {
    (char *) "fuse_bindings_dummy",
    (char *) mntopts
  };

  struct fuse_args args = FUSE_ARGS_INIT(_argc, _argv);
  // Connection options (max_write, readdirplus=, splice_*...) come out of
  // args here and are applied in init; fuse_new rejects what it does not know.
  ft->conn_opts = fuse_parse_conn_info_opts(&args);
  struct fuse *fuse = ft->conn_opts == NULL ? NULL : fuse_new(&args, &ops, sizeof(struct fuse_operations), ft);
  if (fuse == NULL) {
    fuse_opt_free_args(&args);
    free(ft->conn_opts);
    ft->conn_opts = NULL;
    napi_throw_error(env, "fuse failed", "fuse failed: bad mount options (see stderr)");
    return NULL;
  }
  if (fuse_mount(fuse, mnt) != 0) {
    fuse_opt_free_args(&args);
    fuse_destroy(fuse);
    free(ft->conn_opts);
    ft->conn_opts = NULL;
    napi_throw_error(env, "fuse failed", "fuse failed: mount refused (see stderr)");
    return NULL;
  }
  fuse_opt_free_args(&args);

  uv_mutex_init(&(ft->mut));
  uv_sem_init(&(ft->sem), 0);

  strncpy(ft->mnt, mnt, 1024);
  strncpy(ft->mntopts, mntopts, 1024);
  ft->fuse = fuse;
  if (ft->attrs == NULL) ft->attrs = attr_table_new();
  if (ft->links == NULL) ft->links = attr_table_new();
  ft->notifier = links_notifier_new(fuse);
  ft->links_ttl_ms = 2000.0; // until init says

  if (!ft->wq.inited) {
    pthread_mutex_init(&ft->wq.mut, NULL);
    pthread_cond_init(&ft->wq.cond, NULL);
    // Never closed, as the per-thread handles: this struct lives in a
    // buffer the JS instance keeps for good.
    uv_async_init(uv_default_loop(), &ft->wq.async, wq_dispatch);
    uv_unref((uv_handle_t *) &ft->wq.async);
    ft->wq.async.data = ft;
    ft->wq.inited = 1;
  }
  ft->wq.max_bytes = write_behind;

  ft->mounted++;

  int err = uv_async_init(uv_default_loop(), &(ft->async), (uv_async_cb) fuse_native_async_init);

  if (err < 0) {
    napi_throw_error(env, "fuse failed", "fuse failed");
    return NULL;
  }

  pthread_attr_init(&(ft->attr));
  pthread_create(&(ft->thread), &(ft->attr), start_fuse_thread, ft);

  return NULL;
}

// Empty the table of ft, if it still has one (see attr_tables_mut).
static void attr_clear (fuse_thread_t *ft) {
  pthread_mutex_lock(&attr_tables_mut);
  if (ft->attrs != NULL) {
    pthread_rwlock_wrlock(&ft->attrs->lock);
    attr_table_clear_locked(ft->attrs);
    pthread_rwlock_unlock(&ft->attrs->lock);
  }
  pthread_mutex_unlock(&attr_tables_mut);
}

// attr_set(thread, path, statInts, expiresMs): cache one path's stat.
NAPI_METHOD(fuse_native_attr_set) {
  NAPI_ARGV(4)
  NAPI_ARGV_BUFFER_CAST(fuse_thread_t *, ft, 0);
  NAPI_ARGV_UTF8(path, 4096, 1);
  NAPI_ARGV_BUFFER_CAST(uint32_t *, ints, 2);
  double expires;
  napi_get_value_double(env, argv[3], &expires);
  struct stat st;
  memset(&st, 0, sizeof(st));
  populate_stat(ints, &st);
  pthread_mutex_lock(&attr_tables_mut);
  if (ft->attrs != NULL && ft->mounted) attr_table_set(ft->attrs, path, &st, expires);
  pthread_mutex_unlock(&attr_tables_mut);
  return NULL;
}

// attr_delete(thread, path)
NAPI_METHOD(fuse_native_attr_delete) {
  NAPI_ARGV(2)
  NAPI_ARGV_BUFFER_CAST(fuse_thread_t *, ft, 0);
  NAPI_ARGV_UTF8(path, 4096, 1);
  pthread_mutex_lock(&attr_tables_mut);
  if (ft->attrs != NULL) {
    pthread_rwlock_wrlock(&ft->attrs->lock);
    attr_table_del_locked(ft->attrs, path, attr_hash(path));
    pthread_rwlock_unlock(&ft->attrs->lock);
  }
  pthread_mutex_unlock(&attr_tables_mut);
  return NULL;
}

// One change to the listings mirrored in ft's table (see "Negative lookups"):
// - LISTING_SET: JS holds dir's complete listing until expires. The names go
//   in first, then the directory: a lookup in between finds the older
//   listing, if any, with more names, not fewer. If the cap empties the table
//   meanwhile, some names are gone, so the directory stays out too.
// - LISTING_DROP: JS no longer holds it; the directory goes first.
// - NAMES_ADD / NAMES_REMOVE: names joined the listing JS holds, or left it.
enum listing_change { LISTING_SET, LISTING_DROP, NAMES_ADD, NAMES_REMOVE };

static void listing_change (fuse_thread_t *ft, enum listing_change c, const char *dir, const char *names, size_t len, double expires) {
  static const struct stat none;
  char key[4098];
  if (!listing_key(key, sizeof(key), LISTED_KEY, dir, strlen(dir))) return;
  int adds = c == LISTING_SET || c == NAMES_ADD;
  struct attr_entry *e = c == LISTING_SET ? attr_entry_new(key, "", &none, expires) : NULL;
  pthread_mutex_lock(&attr_tables_mut);
  struct attr_table *t = ft->attrs;
  if (t != NULL && (ft->mounted || !adds)) {
    pthread_rwlock_wrlock(&t->lock);
    uint32_t clears = t->clears;
    if (c == LISTING_DROP) attr_table_del_locked(t, key, attr_hash(key));
    listing_names_locked(t, dir, names, len, adds);
    // Below the cap, putting the directory cannot empty the table itself.
    if (e != NULL && t->clears == clears && t->count < ATTR_MAX_ENTRIES) {
      attr_table_put_locked(t, e);
      e = NULL;
    }
    pthread_rwlock_unlock(&t->lock);
  }
  pthread_mutex_unlock(&attr_tables_mut);
  free(e);
}

// listing(thread, change, dir, namesBuffer, expiresMs): one listing_change;
// names joined by '/' (no name holds one).
NAPI_METHOD(fuse_native_listing) {
  NAPI_ARGV(5)
  NAPI_ARGV_BUFFER_CAST(fuse_thread_t *, ft, 0);
  NAPI_ARGV_UINT32(change, 1);
  NAPI_ARGV_UTF8(dir, 4096, 2);
  NAPI_ARGV_BUFFER(names, 3);
  double expires;
  napi_get_value_double(env, argv[4], &expires);
  if (change > NAMES_REMOVE) return NULL;
  listing_change(ft, (enum listing_change) change, dir, names, names_len, expires);
  return NULL;
}

// invalidate_linked(thread, exceptPath): a file with more than one name (or
// one not known to have a single name) changed. Queue the kernel
// invalidation of every noted multiply-linked name but exceptPath, whose
// own inode the kernel updates itself. Returns how many were queued.
NAPI_METHOD(fuse_native_invalidate_linked) {
  NAPI_ARGV(2)
  NAPI_ARGV_BUFFER_CAST(fuse_thread_t *, ft, 0);
  NAPI_ARGV_UTF8(except, 4096, 1);
  uint32_t queued = 0;
  pthread_mutex_lock(&attr_tables_mut);
  struct attr_table *t = ft->links;
  struct links_notifier *n = ft->notifier;
  if (t != NULL && n != NULL && ft->mounted) {
    struct pending_inval *list = NULL, *tail = NULL;
    double now = attr_now_ms();
    pthread_rwlock_wrlock(&t->lock);
    for (uint32_t i = 0; t->count > 0 && i < t->nbuckets; i++) {
      struct attr_entry **pp = &t->buckets[i];
      while (*pp != NULL) {
        struct attr_entry *e = *pp;
        if (strcmp(e->path, except) == 0) { pp = &e->next; continue; }
        *pp = e->next;
        t->count--;
        size_t len = strlen(e->path);
        struct pending_inval *p = e->expires > now ? malloc(sizeof(struct pending_inval) + len + 1) : NULL;
        if (p != NULL) {
          memcpy(p->path, e->path, len + 1);
          p->next = NULL;
          if (tail == NULL) list = p; else tail->next = p;
          tail = p;
          queued++;
        }
        free(e);
      }
    }
    // Queued before the table's lock is let go: links_noted never sees the
    // table emptied and the invalidations not yet pending.
    if (list != NULL) {
      pthread_mutex_lock(&n->mut);
      tail->next = n->head;
      n->head = list;
      n->queued++;
      if (!n->started) {
        if (pthread_create(&n->thread, NULL, links_notify_thread, n) == 0) n->started = 1;
        else { pending_free(n->head); n->head = NULL; n->delivered = n->queued; } // no waiter may hang on it
      }
      pthread_cond_signal(&n->wake);
      pthread_mutex_unlock(&n->mut);
    }
    pthread_rwlock_unlock(&t->lock);
  }
  pthread_mutex_unlock(&attr_tables_mut);
  napi_value res;
  napi_create_uint32(env, queued, &res);
  return res;
}

// The table's clock, for tests that check JS's Fuse.monotonicNow() against it.
NAPI_METHOD(fuse_native_monotonic_ms) {
  napi_value res;
  napi_create_double(env, attr_now_ms(), &res);
  return res;
}

// attr_clear(thread)
NAPI_METHOD(fuse_native_attr_clear) {
  NAPI_ARGV(1)
  NAPI_ARGV_BUFFER_CAST(fuse_thread_t *, ft, 0);
  attr_clear(ft);
  return NULL;
}

NAPI_METHOD(fuse_native_unmount) {
  NAPI_ARGV(2)
  NAPI_ARGV_UTF8(mnt, 1024, 0);
  NAPI_ARGV_BUFFER_CAST(fuse_thread_t *, ft, 1);

  if (ft != NULL && ft->mounted) {
    // TODO: Investigate why the FUSE thread is not always killed after fusermount.
    // pthread_join(ft->thread, NULL);
  }

  // TODO: fix the async holding the loop
  uv_unref((uv_handle_t *) &(ft->async));
  ft->mounted--;
  attr_clear(ft);

  return NULL;
}

NAPI_INIT() {
  const napi_node_version* version;
  assert(napi_get_node_version(env, &version) == napi_ok);

  if (version->major > 12 || (version->major == 12 && version->minor >= 16)) {
    IS_ARRAY_BUFFER_DETACH_SUPPORTED = 1;
  }

  pthread_key_create(&(thread_locals_key), NULL); // TODO: add destructor

  NAPI_EXPORT_SIZEOF(fuse_thread_t)
  NAPI_EXPORT_OFFSETOF(fuse_thread_t, caller)
  NAPI_EXPORT_OFFSETOF(fuse_thread_t, negotiated)
  NAPI_EXPORT_FUNCTION(fuse_native_monotonic_ms)

  NAPI_EXPORT_FUNCTION(fuse_native_mount)
  NAPI_EXPORT_FUNCTION(fuse_native_unmount)
  NAPI_EXPORT_FUNCTION(fuse_native_attr_set)
  NAPI_EXPORT_FUNCTION(fuse_native_attr_delete)
  NAPI_EXPORT_FUNCTION(fuse_native_attr_clear)
  NAPI_EXPORT_FUNCTION(fuse_native_listing)
  NAPI_EXPORT_FUNCTION(fuse_native_invalidate_linked)

  NAPI_EXPORT_FUNCTION(fuse_native_signal_getattr)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_init)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_access)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_statfs)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_fgetattr)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_getattr)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_flush)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_fsync)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_fsyncdir)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_readdir)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_truncate)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_ftruncate)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_utimens)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_readlink)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_chown)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_chmod)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_mknod)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_setxattr)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_getxattr)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_listxattr)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_removexattr)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_open)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_opendir)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_read)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_write)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_write_queued)
  NAPI_EXPORT_FUNCTION(fuse_native_write_queue_length)
  NAPI_EXPORT_FUNCTION(fuse_native_trim_memory)
  NAPI_EXPORT_FUNCTION(fuse_native_detach)
  NAPI_EXPORT_FUNCTION(fuse_native_set_write_behind_budget)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_release)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_releasedir)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_create)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_unlink)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_rename)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_link)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_symlink)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_mkdir)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_rmdir)

  NAPI_EXPORT_UINT32(op_getattr)
  NAPI_EXPORT_UINT32(op_init)
  NAPI_EXPORT_UINT32(op_error)
  NAPI_EXPORT_UINT32(op_access)
  NAPI_EXPORT_UINT32(op_statfs)
  NAPI_EXPORT_UINT32(op_fgetattr)
  NAPI_EXPORT_UINT32(op_getattr)
  NAPI_EXPORT_UINT32(op_flush)
  NAPI_EXPORT_UINT32(op_fsync)
  NAPI_EXPORT_UINT32(op_fsyncdir)
  NAPI_EXPORT_UINT32(op_readdir)
  NAPI_EXPORT_UINT32(op_truncate)
  NAPI_EXPORT_UINT32(op_ftruncate)
  NAPI_EXPORT_UINT32(op_utimens)
  NAPI_EXPORT_UINT32(op_readlink)
  NAPI_EXPORT_UINT32(op_chown)
  NAPI_EXPORT_UINT32(op_chmod)
  NAPI_EXPORT_UINT32(op_mknod)
  NAPI_EXPORT_UINT32(op_setxattr)
  NAPI_EXPORT_UINT32(op_getxattr)
  NAPI_EXPORT_UINT32(op_listxattr)
  NAPI_EXPORT_UINT32(op_removexattr)
  NAPI_EXPORT_UINT32(op_open)
  NAPI_EXPORT_UINT32(op_opendir)
  NAPI_EXPORT_UINT32(op_read)
  NAPI_EXPORT_UINT32(op_write)
  NAPI_EXPORT_UINT32(op_release)
  NAPI_EXPORT_UINT32(op_releasedir)
  NAPI_EXPORT_UINT32(op_create)
  NAPI_EXPORT_UINT32(op_unlink)
  NAPI_EXPORT_UINT32(op_rename)
  NAPI_EXPORT_UINT32(op_link)
  NAPI_EXPORT_UINT32(op_symlink)
  NAPI_EXPORT_UINT32(op_mkdir)
  NAPI_EXPORT_UINT32(op_rmdir)
  NAPI_EXPORT_UINT32(op_write_queued)
}
