/*
 * plexus-shim: the per-pod executable in daemon mode, as a small static binary (a Node start costs
 * 10x a Go plugin's exec). It does what src/cmd/plexus-shim.ts does, and nothing more:
 *  - VERSION is answered here (runtimes probe it before every ADD and DEL, daemon up or not);
 *  - otherwise env + stdin go to the daemon (POST /cni, see src/daemon/protocol.ts) and its reply is
 *    printed: stderr, stdout, exit code;
 *  - when the daemon cannot answer in time, the result is CNI error 11 (try again later): never a
 *    fallback to another network.
 * Installed under another name (plexus-ipam, whereabouts) it is the IPAM plugin a delegate execs: the
 * request goes to POST /ipam instead, and the socket comes from PLEXUS_DAEMON_SOCKET, which the
 * daemon sets for the delegates it runs (an IPAM's stdin is the delegate's conf, which has no
 * daemonSocket).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

extern char **environ;

#define DEFAULT_SOCKET "/run/plexus/plexus.sock"
/* The daemon's request limit (MAX_BODY in src/daemon/server.ts): larger can never succeed. */
#define MAX_REQUEST (4 * 1024 * 1024)
static const char *VERSIONS = "[\"0.1.0\",\"0.2.0\",\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]";

struct buf { char *data; size_t len, cap; };

static void put(struct buf *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    b->cap = (b->len + n + 1) * 2;
    b->data = realloc(b->data, b->cap);
    if (!b->data) { perror("plexus-shim"); exit(1); }
  }
  memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = 0;
}
static void puts_(struct buf *b, const char *s) { put(b, s, strlen(s)); }

/* A JSON string, escaped. */
static void put_json(struct buf *b, const char *s) {
  char esc[8];
  puts_(b, "\"");
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') { esc[0] = '\\'; esc[1] = (char)c; put(b, esc, 2); }
    else if (c < 0x20) { snprintf(esc, sizeof esc, "\\u%04x", c); puts_(b, esc); }
    else put(b, (const char *)&c, 1);
  }
  puts_(b, "\"");
}

static void put_base64(struct buf *b, const unsigned char *in, size_t n) {
  static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  char o[4];
  for (size_t i = 0; i < n; i += 3) {
    unsigned v = in[i] << 16 | (i + 1 < n ? in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
    o[0] = t[v >> 18 & 63]; o[1] = t[v >> 12 & 63];
    o[2] = i + 1 < n ? t[v >> 6 & 63] : '=';
    o[3] = i + 2 < n ? t[v & 63] : '=';
    put(b, o, 4);
  }
}

/* Skips one JSON string starting at *p == '"'; returns the position after it, or NULL. */
static const char *skip_string(const char *p) {
  for (p++; *p; p++) {
    if (*p == '\\') { if (!*++p) return NULL; }
    else if (*p == '"') return p + 1;
  }
  return NULL;
}

/* Skips one JSON value (string, object, array or scalar); returns the position after it, or NULL. */
static const char *skip_value(const char *p) {
  if (*p == '"') return skip_string(p);
  if (*p == '{' || *p == '[') {
    int depth = 0;
    for (; *p; p++) {
      if (*p == '"') { p = skip_string(p); if (!p) return NULL; p--; }
      else if (*p == '{' || *p == '[') depth++;
      else if ((*p == '}' || *p == ']') && --depth == 0) return p + 1;
    }
    return NULL;
  }
  while (*p && *p != ',' && *p != '}' && *p != ']') p++;
  return p;
}

static const char *skip_ws(const char *p) {
  while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
  return p;
}

/* The string value of a TOP-LEVEL "key" of the config object (never one nested in runtimeConfig, args
   or a delegate: content a tenant controls must not choose the socket). NULL when absent or not a
   plain string. */
static char *conf_string(const char *json, const char *key) {
  const char *p = skip_ws(json);
  if (*p++ != '{') return NULL;
  size_t klen = strlen(key);
  for (;;) {
    p = skip_ws(p);
    if (*p != '"') return NULL;
    const char *kstart = p + 1, *kend = skip_string(p);
    if (!kend) return NULL;
    p = skip_ws(kend);
    if (*p++ != ':') return NULL;
    p = skip_ws(p);
    int match = (size_t)(kend - 1 - kstart) == klen && !strncmp(kstart, key, klen);
    if (match && *p == '"') {
      const char *vend = skip_string(p);
      if (!vend) return NULL;
      for (const char *c = p + 1; c < vend - 1; c++) if (*c == '\\') return NULL;
      return strndup(p + 1, (size_t)(vend - 1 - (p + 1)));
    }
    p = skip_value(p);
    if (!p) return NULL;
    p = skip_ws(p);
    if (*p == ',') { p++; continue; }
    return NULL;
  }
}

static const char *version_or(const char *v) {
  static const char *known[] = {"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"};
  for (size_t i = 0; v && i < sizeof known / sizeof *known; i++) if (!strcmp(v, known[i])) return v;
  return "1.1.0";
}

/* A request that can never succeed: a final error, not "try again" (the runtime would retry forever). */
static int final_error(const char *version, int code, const char *msg, const char *details) {
  struct buf out = {0};
  char c[16];
  snprintf(c, sizeof c, "%d", code);
  puts_(&out, "{\"cniVersion\":"); put_json(&out, version);
  puts_(&out, ",\"code\":"); puts_(&out, c); puts_(&out, ",\"msg\":"); put_json(&out, msg);
  puts_(&out, ",\"details\":"); put_json(&out, details); puts_(&out, "}");
  fwrite(out.data, 1, out.len, stdout);
  return 1;
}

static int try_again(const char *version, const char *msg, const char *details) {
  struct buf out = {0};
  puts_(&out, "{\"cniVersion\":"); put_json(&out, version);
  puts_(&out, ",\"code\":11,\"msg\":"); put_json(&out, msg);
  puts_(&out, ",\"details\":"); put_json(&out, details); puts_(&out, "}");
  fwrite(out.data, 1, out.len, stdout);
  return 1;
}

int main(int argc, char **argv) {
  (void)argc;
  const char *self = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
  int as_ipam = strcmp(self, "plexus-shim") != 0;
  /* A daemon that hangs up mid-request is an error to report, not a signal to die of (no output at all). */
  signal(SIGPIPE, SIG_IGN);
  struct buf in = {0};
  char chunk[65536];
  ssize_t n;
  while ((n = read(0, chunk, sizeof chunk)) > 0) put(&in, chunk, (size_t)n);
  if (!in.data) put(&in, "", 0);
  const char *version = version_or(conf_string(in.data, "cniVersion"));
  const char *command = getenv("CNI_COMMAND");
  if (command && !strcmp(command, "VERSION")) {
    printf("{\"cniVersion\":\"%s\",\"supportedVersions\":%s}", version, VERSIONS);
    return 0;
  }
  char *path = conf_string(in.data, "daemonSocket");
  if (!path && getenv("PLEXUS_DAEMON_SOCKET")) path = getenv("PLEXUS_DAEMON_SOCKET");
  if (!path) path = DEFAULT_SOCKET;
  long timeout_ms = getenv("PLEXUS_SHIM_TIMEOUT_MS") ? atol(getenv("PLEXUS_SHIM_TIMEOUT_MS")) : 120000;

  struct buf body = {0};
  puts_(&body, "{\"env\":{");
  for (char **e = environ; *e; e++) {
    char *eq = strchr(*e, '=');
    if (!eq) continue;
    char *name = strndup(*e, (size_t)(eq - *e));
    if (e != environ) puts_(&body, ",");
    put_json(&body, name); puts_(&body, ":"); put_json(&body, eq + 1);
    free(name);
  }
  puts_(&body, "},\"stdin\":\"");
  put_base64(&body, (const unsigned char *)in.data, in.len);
  puts_(&body, "\"}");
  if (body.len > MAX_REQUEST) {
    char details[160];
    snprintf(details, sizeof details, "the request is %zu bytes encoded (stdin %zu bytes), the daemon takes at most %d", body.len, in.len, MAX_REQUEST);
    return final_error(version, 7, "network configuration too large", details);
  }

  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (fd < 0 || strlen(path) >= sizeof addr.sun_path) return try_again(version, "plexus daemon is not reachable", path);
  strcpy(addr.sun_path, path);
  struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    char details[512];
    snprintf(details, sizeof details, "%s: %s", path, strerrorname_np(errno) ? strerrorname_np(errno) : strerror(errno));
    return try_again(version, "plexus daemon is not reachable", details);
  }
  struct buf req = {0};
  char head[256];
  snprintf(head, sizeof head, "POST %s HTTP/1.1\r\nHost: plexus\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n", as_ipam ? "/ipam" : "/cni", body.len);
  puts_(&req, head);
  put(&req, body.data, body.len);
  for (size_t off = 0; off < req.len;) {
    ssize_t w = write(fd, req.data + off, req.len - off);
    if (w <= 0) return try_again(version, "plexus daemon did not take the request", strerror(errno));
    off += (size_t)w;
  }
  /* Done once Content-Length bytes of body are in: the daemon may go on to report the pod's status before
     it gets round to closing the connection. */
  struct buf resp = {0};
  long content_length = -1;
  size_t head_len = 0;
  while ((n = read(fd, chunk, sizeof chunk)) > 0) {
    put(&resp, chunk, (size_t)n);
    if (!head_len) {
      char *end = strstr(resp.data, "\r\n\r\n");
      if (!end) continue;
      head_len = (size_t)(end - resp.data) + 4;
      for (char *line = strstr(resp.data, "\r\n"); line && line < end; line = strstr(line + 2, "\r\n"))
        if (!strncasecmp(line + 2, "content-length:", 15)) content_length = strtol(line + 17, NULL, 10);
    }
    if (content_length >= 0 && resp.len >= head_len + (size_t)content_length) break;
  }
  if (n < 0) return try_again(version, "plexus daemon did not answer in time", strerror(errno));
  if (content_length >= 0 && resp.len < head_len + (size_t)content_length) return try_again(version, "plexus daemon closed the connection mid-reply", path);
  if (!resp.data) return try_again(version, "plexus daemon closed the connection", path);
  char *sep = strstr(resp.data, "\r\n\r\n");
  int status = 0;
  if (!sep || sscanf(resp.data, "HTTP/1.%*d %d", &status) != 1) return try_again(version, "plexus daemon sent a malformed reply", path);
  *sep = 0;
  char *payload = sep + 4;
  size_t payload_len = resp.len - (size_t)(payload - resp.data);
  if (status == 413) return final_error(version, 7, "network configuration too large", payload);
  if (status == 400) return final_error(version, 5, "plexus daemon could not read the request", payload);
  if (status != 200) return try_again(version, "plexus daemon is not ready", payload);
  /* Header names are case-insensitive; Node writes them in lower case. */
  long exit_code = 1, stderr_len = 0;
  for (char *line = strstr(resp.data, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
    if (!strncasecmp(line + 2, "x-cni-exit-code:", 16)) exit_code = strtol(line + 18, NULL, 10);
    if (!strncasecmp(line + 2, "x-cni-stderr-length:", 20)) stderr_len = strtol(line + 22, NULL, 10);
  }
  if (stderr_len < 0 || (size_t)stderr_len > payload_len) stderr_len = 0;
  fwrite(payload, 1, (size_t)stderr_len, stderr);
  fwrite(payload + stderr_len, 1, payload_len - (size_t)stderr_len, stdout);
  return (int)exit_code;
}
