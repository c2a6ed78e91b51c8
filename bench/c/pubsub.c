/* The physical reference: one 100-byte message per sample, libzmq PUB -> SUB, no batching.
 *   pubsub sub ENDPOINT COUNT      binds a SUB, receives COUNT messages, prints {"event":"result","msgs":N,"seconds":S,"rss":B}
 *   pubsub pub ENDPOINT COUNT      connects a PUB, sends COUNT messages of 100 bytes (then a 1-byte end mark)
 * Built by bench/telemetry.ts with: cc -O2 -o pubsub pubsub.c -lzmq
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>
#include "bench.h"

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: pubsub pub|sub ENDPOINT COUNT\n");
    return 2;
  }
  long count = atol(argv[3]);
  void *ctx = zmq_ctx_new();
  char buf[128];
  if (strcmp(argv[1], "sub") == 0) {
    void *s = zmq_socket(ctx, ZMQ_SUB);
    zmq_setsockopt(s, ZMQ_SUBSCRIBE, "", 0);
    if (zmq_bind(s, argv[2]) != 0) { perror("bind"); return 1; }
    printf("{\"event\":\"ready\"}\n");
    fflush(stdout);
    long n = 0;
    double t0 = 0;
    for (;;) {
      int len = zmq_recv(s, buf, sizeof buf, 0);
      if (len < 0) break;
      if (len == 1) break; /* end mark */
      if (n == 0) t0 = now();
      n++;
    }
    printf("{\"event\":\"result\",\"msgs\":%ld,\"seconds\":%f,\"rss\":%ld}\n", n, now() - t0, rss_bytes());
    zmq_close(s);
  } else {
    void *s = zmq_socket(ctx, ZMQ_PUB);
    int hwm = 0; /* unlimited: measure the pipe, not drops */
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    if (zmq_connect(s, argv[2]) != 0) { perror("connect"); return 1; }
    usleep(300000); /* let the subscription arrive */
    memset(buf, 'a', 100);
    for (long i = 0; i < count; i++) zmq_send(s, buf, 100, 0);
    zmq_send(s, "E", 1, 0);
    printf("{\"event\":\"sent\",\"sent\":%ld,\"rss\":%ld}\n", count, rss_bytes());
    int linger = 5000;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(s);
  }
  zmq_ctx_term(ctx);
  return 0;
}
