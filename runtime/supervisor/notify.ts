/**
 * systemd notifications (sd_notify): READY=1 once started, WATCHDOG=1 at half of WATCHDOG_USEC while the
 * supervisor is healthy, STATUS= lines. Node has no unix datagram sockets, so each notification is sent by
 * `systemd-notify` (from the systemd package, on every systemd machine) with NOTIFY_SOCKET passed through;
 * the unit must say NotifyAccess=all, since the datagram comes from that helper's pid. One short-lived process
 * per WATCHDOG interval (seconds apart) is the price. Without NOTIFY_SOCKET, nothing is sent.
 */
import { execFile } from 'node:child_process';

export class Notifier {
  private timer: NodeJS.Timeout | undefined;
  /** Notifications that could not be sent (systemd-notify missing or failing). */
  failures = 0;
  lastError: string | undefined;

  constructor(private readonly env: NodeJS.ProcessEnv = process.env, private readonly command = 'systemd-notify') {}

  get enabled(): boolean {
    return Boolean(this.env.NOTIFY_SOCKET);
  }

  /** The watchdog interval systemd asked for, halved (ms), or undefined when there is none for us. */
  watchdogInterval(): number | undefined {
    const usec = Number(this.env.WATCHDOG_USEC);
    const pid = this.env.WATCHDOG_PID;
    if (!usec || (pid && Number(pid) !== process.pid)) return undefined;
    return Math.max(1, Math.floor(usec / 2000));
  }

  /** Sends `KEY=VALUE` lines; resolves false (counted) on failure, never rejects. */
  send(...lines: string[]): Promise<boolean> {
    if (!this.enabled) return Promise.resolve(false);
    return new Promise((resolve) => {
      execFile(this.command, [...lines], { env: { NOTIFY_SOCKET: this.env.NOTIFY_SOCKET, PATH: this.env.PATH ?? '/usr/bin:/bin' }, timeout: 5000 }, (err) => {
        if (err) {
          this.failures++;
          this.lastError = err.message;
        }
        resolve(!err);
      });
    });
  }

  ready(status: string): Promise<boolean> {
    return this.send('--ready', `--status=${status}`);
  }

  status(text: string): Promise<boolean> {
    return this.send(`--status=${text}`);
  }

  /** Pings the watchdog every half interval while `healthy()` says so (a stuck supervisor stops pinging). */
  startWatchdog(healthy: () => boolean): void {
    const interval = this.watchdogInterval();
    if (!this.enabled || !interval) return;
    this.timer = setInterval(() => {
      if (healthy()) void this.send('WATCHDOG=1');
    }, interval);
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
