/*
 * setns(2) and unshare(2) for Node.js. Node cannot switch a thread's network namespace on its own;
 * the kernel layer switches the main thread briefly to create a netlink socket bound
 * to a pod's netns and switches straight back (see src/net/netns.ts).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <string.h>
#include <node_api.h>

static napi_value throw_errno(napi_env env, int err) {
  const char *name = strerrorname_np(err);
  napi_value code, msg, error;
  napi_create_string_utf8(env, name ? name : "EUNKNOWN", NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, strerror(err), NAPI_AUTO_LENGTH, &msg);
  napi_create_error(env, code, msg, &error);
  napi_throw(env, error);
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

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  napi_value fn, unshare_fn, flag;
  napi_create_function(env, "setns", NAPI_AUTO_LENGTH, js_setns, NULL, &fn);
  napi_set_named_property(env, exports, "setns", fn);
  napi_create_function(env, "unshare", NAPI_AUTO_LENGTH, js_unshare, NULL, &unshare_fn);
  napi_set_named_property(env, exports, "unshare", unshare_fn);
  napi_create_int32(env, CLONE_NEWNET, &flag);
  napi_set_named_property(env, exports, "CLONE_NEWNET", flag);
  return exports;
}
