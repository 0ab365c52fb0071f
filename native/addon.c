/*
 * What Node.js cannot do cheaply or at all, for the kernel layer and the delegate runner:
 * - setns(2) / unshare(2) on the calling (main) thread: the kernel layer switches the main thread briefly
 *   to create a netlink socket bound to a pod's netns and switches straight back (src/net/netns.ts).
 * - the interface names in a pod's netns, read there in one call (the meta plugin's check before ADD).
 * - exec of a plugin through posix_spawn: glibc spawns with CLONE_VM|CLONE_VFORK, so its cost does not grow
 *   with the caller's memory, unlike libuv's fork() (5 ms in a daemon of 120 MB, 10 ms at 320 MB, against
 *   ~0.5 ms here). The child starts on the calling thread (it inherits that thread's netns, as a libuv child
 *   would); one short-lived thread per child then feeds stdin, collects stdout/stderr, enforces the deadline
 *   and reaps it, and hands the outcome back to the event loop.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <node_api.h>

static napi_value make_errno_error(napi_env env, int err, const char *what) {
  const char *name = strerrorname_np(err);
  char text[512];
  napi_value code, msg, error;
  snprintf(text, sizeof text, "%s%s%s", what ? what : "", what ? ": " : "", strerror(err));
  napi_create_string_utf8(env, name ? name : "EUNKNOWN", NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg);
  napi_create_error(env, code, msg, &error);
  return error;
}

static napi_value throw_errno(napi_env env, int err) {
  napi_throw(env, make_errno_error(env, err, NULL));
  return NULL;
}

/* setns(fd, nstype): switches the calling (main) thread; throws an Error whose code is the errno name. */
static napi_value js_setns(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd = -1, nstype = 0;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_int32(env, argv[1], &nstype) != napi_ok) {
    napi_throw_type_error(env, NULL, "setns(fd: number, nstype: number)");
    return NULL;
  }
  if (setns(fd, nstype) != 0) return throw_errno(env, errno);
  return NULL;
}

/* unshare(flags): gives the calling (main) thread new namespaces, e.g. a fresh netns; throws like setns. */
static napi_value js_unshare(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t flags = 0;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_int32(env, argv[0], &flags) != napi_ok) {
    napi_throw_type_error(env, NULL, "unshare(flags: number)");
    return NULL;
  }
  if (unshare(flags) != 0) return throw_errno(env, errno);
  return NULL;
}

/*
 * linkNames(path): the names of the interfaces in the netns at `path`, read in it by the calling thread
 * (setns there, if_nameindex, setns back). One call instead of an open, two setns and a /proc read from
 * JS on the per-pod path. If the thread cannot return to its own netns the process aborts: every later
 * operation would act on the wrong netns.
 */
static napi_value js_link_names(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  char path[4096];
  size_t len = 0;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], path, sizeof path, &len) != napi_ok || len >= sizeof path - 1) {
    napi_throw_type_error(env, NULL, "linkNames(path: string)");
    return NULL;
  }
  int target = open(path, O_RDONLY | O_CLOEXEC);
  if (target < 0) {
    napi_throw(env, make_errno_error(env, errno, "open netns"));
    return NULL;
  }
  int home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (home < 0) {
    int e = errno;
    close(target);
    napi_throw(env, make_errno_error(env, e, "open own netns"));
    return NULL;
  }
  if (setns(target, CLONE_NEWNET) != 0) {
    int e = errno;
    close(target);
    close(home);
    napi_throw(env, make_errno_error(env, e, "setns"));
    return NULL;
  }
  struct if_nameindex *names = if_nameindex();
  int list_errno = errno;
  if (setns(home, CLONE_NEWNET) != 0) {
    fprintf(stderr, "plexus: cannot return to the host netns: %s\n", strerror(errno));
    abort();
  }
  close(target);
  close(home);
  if (!names) {
    napi_throw(env, make_errno_error(env, list_errno, "list interfaces"));
    return NULL;
  }
  napi_value out, name;
  napi_create_array(env, &out);
  uint32_t i = 0;
  for (struct if_nameindex *n = names; n->if_index != 0 && n->if_name; n++, i++) {
    napi_create_string_utf8(env, n->if_name, NAPI_AUTO_LENGTH, &name);
    napi_set_element(env, out, i, name);
  }
  if_freenameindex(names);
  return out;
}

/* ---- spawn ---- */

struct buf {
  char *data;
  size_t len, cap;
};

static int buf_read(struct buf *b, int fd) {
  for (;;) {
    if (b->cap - b->len < 16384) {
      size_t cap = b->cap ? b->cap * 2 : 65536;
      char *data = realloc(b->data, cap);
      if (!data) return -ENOMEM;
      b->data = data;
      b->cap = cap;
    }
    ssize_t n = read(fd, b->data + b->len, b->cap - b->len);
    if (n > 0) {
      b->len += (size_t)n;
      continue;
    }
    if (n == 0) return 0; /* EOF */
    if (errno == EINTR) continue;
    return errno == EAGAIN ? 1 : -errno;
  }
}

struct child {
  pid_t pid;
  int pidfd;                 /* readable once the child has exited; -1 if the kernel has none */
  int in_fd, out_fd, err_fd; /* our ends of its stdin, stdout, stderr */
  char *input;
  size_t input_len, input_off;
  int timeout_ms; /* 0: none */
  int timed_out;
  int status;
  struct buf out, err;
  napi_threadsafe_function done;
};

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

/*
 * Feeds stdin and drains stdout/stderr until the child has exited and its pipes are empty. A grandchild
 * that keeps the pipes open (a daemonizing plugin) does not hold us up: once the pidfd says the child is
 * gone, whatever is readable is taken and the pipes are closed.
 */
static void *watch_child(void *arg) {
  struct child *c = arg;
  double deadline = c->timeout_ms ? now_ms() + c->timeout_ms : 0;
  int exited = 0;
  if (!c->input_len) close_fd(&c->in_fd);
  /* Until the pipes are drained and, where a pidfd tells us, the child has exited (the deadline holds
     even for a child that closed its stdout and stderr early). */
  while (c->out_fd >= 0 || c->err_fd >= 0 || (c->pidfd >= 0 && !exited)) {
    struct pollfd p[4];
    int n = 0, i_in = -1, i_out = -1, i_err = -1, i_pid = -1;
    if (c->in_fd >= 0) { p[n] = (struct pollfd){c->in_fd, POLLOUT, 0}; i_in = n++; }
    if (c->out_fd >= 0) { p[n] = (struct pollfd){c->out_fd, POLLIN, 0}; i_out = n++; }
    if (c->err_fd >= 0) { p[n] = (struct pollfd){c->err_fd, POLLIN, 0}; i_err = n++; }
    if (c->pidfd >= 0 && !exited) { p[n] = (struct pollfd){c->pidfd, POLLIN, 0}; i_pid = n++; }
    int wait = -1;
    if (deadline && !c->timed_out) {
      double left = deadline - now_ms();
      wait = left > 0 ? (int)left + 1 : 0;
    }
    int r = poll(p, n, wait);
    if (r < 0 && errno != EINTR) break;
    if (r == 0 && deadline && !c->timed_out && now_ms() >= deadline) {
      c->timed_out = 1;
      kill(c->pid, SIGKILL);
      continue;
    }
    if (r <= 0) continue;
    if (i_in >= 0 && p[i_in].revents) {
      if (p[i_in].revents & (POLLERR | POLLHUP)) {
        close_fd(&c->in_fd); /* it exited or closed stdin without reading it all (e.g. VERSION) */
      } else {
        ssize_t w = write(c->in_fd, c->input + c->input_off, c->input_len - c->input_off);
        if (w > 0) c->input_off += (size_t)w;
        else if (w < 0 && errno != EAGAIN && errno != EINTR) close_fd(&c->in_fd);
        if (c->input_off >= c->input_len) close_fd(&c->in_fd);
      }
    }
    if (i_out >= 0 && p[i_out].revents && buf_read(&c->out, c->out_fd) <= 0) close_fd(&c->out_fd);
    if (i_err >= 0 && p[i_err].revents && buf_read(&c->err, c->err_fd) <= 0) close_fd(&c->err_fd);
    if (i_pid >= 0 && p[i_pid].revents) {
      exited = 1;
      if (c->out_fd >= 0) buf_read(&c->out, c->out_fd);
      if (c->err_fd >= 0) buf_read(&c->err, c->err_fd);
      close_fd(&c->out_fd);
      close_fd(&c->err_fd);
    }
  }
  close_fd(&c->in_fd);
  close_fd(&c->out_fd);
  close_fd(&c->err_fd);
  int reaped;
  while ((reaped = waitpid(c->pid, &c->status, 0)) < 0 && errno == EINTR) {
  }
  /* Not ours to reap (SIGCHLD ignored: the kernel reaped it): its outcome is unknown, never success. */
  if (reaped < 0) c->status = -1;
  close_fd(&c->pidfd);
  napi_threadsafe_function done = c->done; /* deliver() frees c, perhaps before the next line */
  napi_call_threadsafe_function(done, c, napi_tsfn_blocking);
  napi_release_threadsafe_function(done, napi_tsfn_release);
  return NULL;
}

static void free_child(struct child *c) {
  free(c->input);
  free(c->out.data);
  free(c->err.data);
  free(c);
}

/* Back on the event loop: callback(null, {status, signal, timedOut, stdout, stderr}). */
static void deliver(napi_env env, napi_value callback, void *context, void *data) {
  (void)context;
  struct child *c = data;
  if (env && callback) {
    napi_value result, undef, null_value, v, argv[2];
    napi_create_object(env, &result);
    napi_get_undefined(env, &undef);
    napi_get_null(env, &null_value);
    if (c->status != -1 && WIFEXITED(c->status)) napi_create_int32(env, WEXITSTATUS(c->status), &v);
    else v = null_value;
    napi_set_named_property(env, result, "status", v);
    if (c->status != -1 && WIFSIGNALED(c->status)) napi_create_int32(env, WTERMSIG(c->status), &v);
    else v = null_value;
    napi_set_named_property(env, result, "signal", v);
    napi_get_boolean(env, c->timed_out, &v);
    napi_set_named_property(env, result, "timedOut", v);
    napi_create_buffer_copy(env, c->out.len, c->out.len ? c->out.data : "", NULL, &v);
    napi_set_named_property(env, result, "stdout", v);
    napi_create_buffer_copy(env, c->err.len, c->err.len ? c->err.data : "", NULL, &v);
    napi_set_named_property(env, result, "stderr", v);
    argv[0] = null_value;
    argv[1] = result;
    napi_call_function(env, undef, callback, 2, argv, NULL);
  }
  free_child(c);
}

static char *get_string(napi_env env, napi_value value) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, value, NULL, 0, &len) != napi_ok) return NULL;
  char *s = malloc(len + 1);
  if (s) napi_get_value_string_utf8(env, value, s, len + 1, &len);
  return s;
}

static void free_strings(char **v) {
  if (!v) return;
  for (char **p = v; *p; p++) free(*p);
  free(v);
}

/* A JS string[] as a NULL-terminated vector; NULL if it is not one. */
static char **get_string_array(napi_env env, napi_value value) {
  bool is_array = false;
  uint32_t n = 0;
  if (napi_is_array(env, value, &is_array) != napi_ok || !is_array) return NULL;
  napi_get_array_length(env, value, &n);
  char **v = calloc(n + 1, sizeof *v);
  if (!v) return NULL;
  for (uint32_t i = 0; i < n; i++) {
    napi_value item;
    napi_get_element(env, value, i, &item);
    if (!(v[i] = get_string(env, item))) {
      free_strings(v);
      return NULL;
    }
  }
  return v;
}

/*
 * spawn(path, argv: string[], env: string[], stdin: Buffer, timeoutMs, callback(err, result)).
 * Throws (synchronously) when the child cannot be started, with the errno name as `code` (ENOENT, EACCES,
 * ETXTBSY, ...); otherwise calls back once the child has exited.
 */
static napi_value js_spawn(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char *path = argc == 6 ? get_string(env, argv[0]) : NULL;
  char **args = argc == 6 ? get_string_array(env, argv[1]) : NULL;
  char **envp = argc == 6 ? get_string_array(env, argv[2]) : NULL;
  void *input = NULL;
  size_t input_len = 0;
  bool is_buffer = false;
  int32_t timeout_ms = 0;
  napi_valuetype cb_type = napi_undefined;
  if (argc == 6) {
    napi_is_buffer(env, argv[3], &is_buffer);
    napi_typeof(env, argv[5], &cb_type);
  }
  if (!path || !args || !envp || !is_buffer || napi_get_value_int32(env, argv[4], &timeout_ms) != napi_ok ||
      timeout_ms < 0 || cb_type != napi_function) {
    free(path);
    free_strings(args);
    free_strings(envp);
    napi_throw_type_error(env, NULL, "spawn(path, argv: string[], env: string[], stdin: Buffer, timeoutMs >= 0, callback)");
    return NULL;
  }
  napi_get_buffer_info(env, argv[3], &input, &input_len);

  struct child *c = calloc(1, sizeof *c);
  int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
  int failure = 0;
  const char *failed_at = NULL;
  if (!c || (input_len && !(c->input = malloc(input_len)))) {
    failure = ENOMEM;
    failed_at = "spawn";
  } else if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) {
    failure = errno;
    failed_at = "pipe";
  }
  if (!failure) {
    memcpy(c->input, input, input_len);
    c->input_len = input_len;
    c->timeout_ms = timeout_ms;
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in[0], 0);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_adddup2(&actions, err[1], 2);
    posix_spawnattr_init(&attr);
    /* Node ignores SIGPIPE and blocks nothing we want the plugin to inherit: start it clean, as libuv does. */
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    failure = posix_spawn(&c->pid, path, &actions, &attr, args, envp);
    if (failure) failed_at = "spawn";
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
  }
  close_fd(&in[0]);
  close_fd(&out[1]);
  close_fd(&err[1]);
  free(path);
  free_strings(args);
  free_strings(envp);
  if (failure) {
    close_fd(&in[1]);
    close_fd(&out[0]);
    close_fd(&err[0]);
    if (c) free_child(c);
    napi_throw(env, make_errno_error(env, failure, failed_at));
    return NULL;
  }
  c->in_fd = in[1];
  c->out_fd = out[0];
  c->err_fd = err[0];
  fcntl(c->in_fd, F_SETFL, O_NONBLOCK);
  fcntl(c->out_fd, F_SETFL, O_NONBLOCK);
  fcntl(c->err_fd, F_SETFL, O_NONBLOCK);
#ifdef SYS_pidfd_open
  c->pidfd = (int)syscall(SYS_pidfd_open, c->pid, 0);
#else
  c->pidfd = -1;
#endif
  if (c->pidfd >= 0) fcntl(c->pidfd, F_SETFD, FD_CLOEXEC);

  napi_value name;
  napi_create_string_utf8(env, "plexus.spawn", NAPI_AUTO_LENGTH, &name);
  pthread_t thread;
  pthread_attr_t tattr;
  pthread_attr_init(&tattr);
  pthread_attr_setdetachstate(&tattr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&tattr, 256 * 1024);
  if (napi_create_threadsafe_function(env, argv[5], NULL, name, 0, 1, NULL, NULL, NULL, deliver, &c->done) != napi_ok ||
      (failure = pthread_create(&thread, &tattr, watch_child, c)) != 0) {
    /* Cannot watch it: do not leave it running unwatched. */
    kill(c->pid, SIGKILL);
    while (waitpid(c->pid, NULL, 0) < 0 && errno == EINTR) {
    }
    close_fd(&c->in_fd);
    close_fd(&c->out_fd);
    close_fd(&c->err_fd);
    close_fd(&c->pidfd);
    if (c->done) napi_release_threadsafe_function(c->done, napi_tsfn_abort);
    free_child(c);
    pthread_attr_destroy(&tattr);
    napi_throw(env, make_errno_error(env, failure ? failure : EAGAIN, "spawn watcher"));
    return NULL;
  }
  pthread_attr_destroy(&tattr);
  napi_value pid;
  napi_create_int32(env, c->pid, &pid);
  return pid;
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  napi_value fn, flag;
  napi_create_function(env, "setns", NAPI_AUTO_LENGTH, js_setns, NULL, &fn);
  napi_set_named_property(env, exports, "setns", fn);
  napi_create_function(env, "unshare", NAPI_AUTO_LENGTH, js_unshare, NULL, &fn);
  napi_set_named_property(env, exports, "unshare", fn);
  napi_create_function(env, "linkNames", NAPI_AUTO_LENGTH, js_link_names, NULL, &fn);
  napi_set_named_property(env, exports, "linkNames", fn);
  napi_create_function(env, "spawn", NAPI_AUTO_LENGTH, js_spawn, NULL, &fn);
  napi_set_named_property(env, exports, "spawn", fn);
  napi_create_int32(env, CLONE_NEWNET, &flag);
  napi_set_named_property(env, exports, "CLONE_NEWNET", flag);
  return exports;
}
