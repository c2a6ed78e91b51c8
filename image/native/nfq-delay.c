/*
 * nfq-delay: holds every packet of one netfilter queue for a fixed time, then lets it go, in order — a delay line
 * for `starling simulate --delay` on kernels without netem (sch_netem), through the kernel's NFQUEUE target.
 *
 *   nfq-delay QUEUE DELAY_MS [PID]
 *
 * Run in the namespace whose packets are queued (`iptables -A OUTPUT -o eth0 -j NFQUEUE --queue-num QUEUE
 * --queue-bypass`: with nothing bound to the queue, packets pass undelayed). Only packet metadata crosses to
 * user space (NFQNL_COPY_META), large (GSO) packets are not split (NFQA_CFG_F_GSO), and every packet held
 * the same time means a verdict for the oldest due one accepts all before it (one batch verdict). The queue
 * holds at most MAX_HELD packets; past that the kernel drops them and counts them (queue_dropped in
 * /proc/net/netfilter/nfnetlink_queue), as a full link would. Ends when its stdin closes (its parent ended,
 * even by SIGKILL), when process PID ends (the host whose namespace this is: the namespace should end with it,
 * and this process would keep it), or on SIGTERM; its packets still held are then accepted. Exit 2 on bad arguments, 1 when
 * the queue cannot be bound, with the reason on stderr.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_HELD 65536

/* The held packets, oldest first: a ring of (id, due time). */
static uint32_t ids[MAX_HELD];
static uint64_t due[MAX_HELD];
static unsigned head, count;
static uint64_t delay_ns;
static volatile sig_atomic_t stop;

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa, void *data) {
  (void)msg;
  (void)data;
  struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
  if (!ph) return 0;
  uint32_t id = ntohl(ph->packet_id);
  if (count == MAX_HELD) return nfq_set_verdict(qh, id, NF_ACCEPT, 0, NULL); /* cannot happen: the kernel's queue is as long */
  unsigned at = (head + count) % MAX_HELD;
  ids[at] = id;
  due[at] = now_ns() + delay_ns;
  count++;
  return 0;
}

/* Accepts every held packet due by `t` (all of them when `all`), with one verdict for the newest of those. */
static void release(struct nfq_q_handle *qh, uint64_t t, int all) {
  unsigned n = 0;
  while (n < count && (all || due[(head + n) % MAX_HELD] <= t)) n++;
  if (n == 0) return;
  uint32_t last = ids[(head + n - 1) % MAX_HELD];
  nfq_set_verdict_batch(qh, last, NF_ACCEPT);
  head = (head + n) % MAX_HELD;
  count -= n;
}

static void on_signal(int s) {
  (void)s;
  stop = 1;
}

int main(int argc, char **argv) {
  char *end;
  if (argc != 3 && argc != 4) {
    fprintf(stderr, "usage: nfq-delay QUEUE DELAY_MS [PID]\n");
    return 2;
  }
  long queue = strtol(argv[1], &end, 10);
  if (*end || queue < 0 || queue > 65535) {
    fprintf(stderr, "nfq-delay: QUEUE must be 0..65535, not '%s'\n", argv[1]);
    return 2;
  }
  long ms = strtol(argv[2], &end, 10);
  if (*end || ms < 1 || ms > 10000) {
    fprintf(stderr, "nfq-delay: DELAY_MS must be 1..10000, not '%s'\n", argv[2]);
    return 2;
  }
  delay_ns = (uint64_t)ms * 1000000u;
  int pidfd = -1;
  if (argc == 4) {
    long pid = strtol(argv[3], &end, 10);
    if (*end || pid < 1) {
      fprintf(stderr, "nfq-delay: PID must be a process id, not '%s'\n", argv[3]);
      return 2;
    }
    pidfd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
    if (pidfd < 0) {
      fprintf(stderr, "nfq-delay: cannot watch process %ld: %s\n", pid, strerror(errno));
      return 1;
    }
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  struct nfq_handle *h = nfq_open();
  if (!h) {
    fprintf(stderr, "nfq-delay: cannot open netfilter queue handling: %s\n", strerror(errno));
    return 1;
  }
  struct nfq_q_handle *qh = nfq_create_queue(h, (uint16_t)queue, on_packet, NULL);
  if (!qh) {
    fprintf(stderr, "nfq-delay: cannot bind queue %ld (another program on it, or no NFQUEUE in this kernel): %s\n", queue, strerror(errno));
    nfq_close(h);
    return 1;
  }
  if (nfq_set_mode(qh, NFQNL_COPY_META, 0) < 0 || nfq_set_queue_maxlen(qh, MAX_HELD) < 0) {
    fprintf(stderr, "nfq-delay: cannot configure queue %ld: %s\n", queue, strerror(errno));
    return 1;
  }
  nfq_set_queue_flags(qh, NFQA_CFG_F_GSO, NFQA_CFG_F_GSO); /* older kernels: packets are split, still delayed */
  int fd = nfq_fd(h);
  /* A large receive buffer: a burst arrives while earlier packets wait. */
  int rcvbuf = 8 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf);
  char buf[65536] __attribute__((aligned));
  fprintf(stderr, "nfq-delay: queue %ld, %ld ms\n", queue, ms);

  while (!stop) {
    int timeout = -1;
    if (count) {
      uint64_t t = now_ns(), d = due[head];
      timeout = d <= t ? 0 : (int)((d - t + 999999) / 1000000);
    }
    struct pollfd p[3] = {{.fd = fd, .events = POLLIN}, {.fd = 0, .events = POLLIN}, {.fd = pidfd, .events = POLLIN}};
    int r = poll(p, pidfd < 0 ? 2 : 3, timeout);
    if (r < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (p[1].revents) {
      char c;
      ssize_t n = read(0, &c, 1);
      if (n <= 0) break; /* the parent ended */
    }
    if (pidfd >= 0 && p[2].revents) break; /* the host ended */
    if (p[0].revents & POLLIN) {
      for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0) {
          if (errno == ENOBUFS) continue; /* the socket overran: the packets it lost are accepted with the next batch verdict */
          break;
        }
        nfq_handle_packet(h, buf, (int)n);
      }
    }
    release(qh, now_ns(), 0);
  }
  release(qh, 0, 1);
  nfq_destroy_queue(qh);
  nfq_close(h);
  return 0;
}
