/*
 * sd_notify for Starling: sends one datagram to $NOTIFY_SOCKET from the calling process itself.
 *
 * Node has no unix datagram sockets; without this each notification is a `systemd-notify` process (one every
 * watchdog interval), whose message systemd attributes to the unit only while that helper still lives (it
 * waits for it from systemd v246 on; older ones can lose a READY or WATCHDOG). Sent from the main process, the
 * message is always attributed and nothing is spawned. Node-API only: one build serves every Node version.
 *
 *   notify(socketPath: string, message: string): void   throws an Error with errno's text on failure
 *
 * socketPath is a filesystem path, or '@name' for an abstract socket (as systemd writes it).
 *
 * And the other libc call a long-running supervisor wants that Node does not expose:
 *
 *   trim(): boolean   malloc_trim(0): hands the free pages inside glibc's heaps back to the kernel; true when
 *                     some were. glibc itself returns only the top of a heap, so memory freed below a live
 *                     allocation (a burst of HTTP responses, say) otherwise stays in the RSS for good.
 */
#include <errno.h>
#include <malloc.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <node_api.h>

static napi_value notify(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2) {
    napi_throw_type_error(env, NULL, "notify(socketPath, message)");
    return NULL;
  }
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  size_t pathLen = 0;
  if (napi_get_value_string_utf8(env, argv[0], addr.sun_path, sizeof addr.sun_path, &pathLen) != napi_ok ||
      pathLen == 0 || pathLen >= sizeof addr.sun_path - 1) {
    napi_throw_type_error(env, NULL, "socketPath: a non-empty string shorter than 107 bytes");
    return NULL;
  }
  if (addr.sun_path[0] == '@') addr.sun_path[0] = 0; /* abstract namespace */
  socklen_t addrLen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + pathLen + (addr.sun_path[0] ? 1 : 0));

  char message[4096];
  size_t messageLen = 0;
  if (napi_get_value_string_utf8(env, argv[1], message, sizeof message, &messageLen) != napi_ok || messageLen >= sizeof message - 1) {
    napi_throw_type_error(env, NULL, "message: a string shorter than 4095 bytes");
    return NULL;
  }

  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    napi_throw_error(env, NULL, strerror(errno));
    return NULL;
  }
  ssize_t sent = sendto(fd, message, messageLen, MSG_NOSIGNAL, (struct sockaddr *)&addr, addrLen);
  int err = errno;
  close(fd);
  if (sent < 0) {
    napi_throw_error(env, NULL, strerror(err));
    return NULL;
  }
  return NULL;
}

static napi_value trim(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value released;
  if (napi_get_boolean(env, malloc_trim(0) == 1, &released) != napi_ok) return NULL;
  return released;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "notify", NAPI_AUTO_LENGTH, notify, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "notify", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "trim", NAPI_AUTO_LENGTH, trim, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "trim", fn) != napi_ok) return NULL;
  return exports;
}
