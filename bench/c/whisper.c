/* The floor for ZRE whisper throughput: what Zyre C itself sits on, without Zyre. A DEALER sends, one way, the
 * frames a ZRE WHISPER takes on the wire (36/ZRE: the message frame — signature 0xAAA1, id 2 WHISPER, version
 * 2, a 16-bit sequence — then the content frame); the ROUTER receives them with the peer's routing id in front
 * (three frames), and checks the signature and the sequence as a ZRE node would.
 *   whisper recv ENDPOINT COUNT SIZE   binds a ROUTER; after COUNT messages prints
 *                                      {"event":"result","msgs":N,"seconds":S,"rss":B,"bad":K}
 *   whisper send ENDPOINT COUNT SIZE   connects a DEALER and sends COUNT whispers of SIZE content bytes
 * Built by bench/zre.ts with: cc -O2 -o whisper whisper.c -lzmq
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>
#include "bench.h"

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: whisper send|recv ENDPOINT COUNT SIZE\n");
    return 2;
  }
  long count = atol(argv[3]);
  size_t size = (size_t)atol(argv[4]);
  void *ctx = zmq_ctx_new();
  if (strcmp(argv[1], "recv") == 0) {
    void *s = zmq_socket(ctx, ZMQ_ROUTER);
    int hwm = 1000; /* libzmq's default, as Zyre leaves it */
    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (zmq_bind(s, argv[2]) != 0) { perror("bind"); return 1; }
    printf("{\"event\":\"ready\"}\n");
    fflush(stdout);
    zmq_msg_t id, head, body;
    zmq_msg_init(&id);
    zmq_msg_init(&head);
    zmq_msg_init(&body);
    long n = 0, bad = 0;
    unsigned expect = 1;
    double t0 = 0;
    while (n < count) {
      if (zmq_msg_recv(&id, s, 0) < 0 || zmq_msg_recv(&head, s, 0) < 0 || zmq_msg_recv(&body, s, 0) < 0) break;
      const unsigned char *h = zmq_msg_data(&head);
      if (zmq_msg_size(&head) != 6 || h[0] != 0xAA || h[1] != 0xA1 || h[2] != 2 || ((h[4] << 8) | h[5]) != (expect & 0xffff)) bad++;
      expect++;
      if (n == 0) t0 = now();
      n++;
    }
    printf("{\"event\":\"result\",\"msgs\":%ld,\"seconds\":%f,\"rss\":%ld,\"bad\":%ld}\n", n, now() - t0, rss_bytes(), bad);
    fflush(stdout);
    zmq_close(s);
  } else {
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int hwm = 1000;
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    if (zmq_connect(s, argv[2]) != 0) { perror("connect"); return 1; }
    unsigned char head[6] = { 0xAA, 0xA1, 2, 2, 0, 0 };
    char *content = malloc(size ? size : 1);
    memset(content, 'a', size);
    for (long i = 1; i <= count; i++) {
      head[4] = (i >> 8) & 0xff;
      head[5] = i & 0xff;
      zmq_send(s, head, sizeof head, ZMQ_SNDMORE);
      zmq_send(s, content, size, 0); /* blocks at the high-water mark: nothing is dropped */
    }
    int linger = 10000;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(s);
    free(content);
  }
  zmq_ctx_term(ctx);
  return 0;
}
