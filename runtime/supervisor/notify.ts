/**
 * systemd notifications (sd_notify): READY=1 once started, WATCHDOG=1 at half of WATCHDOG_USEC while the
 * supervisor is healthy, STATUS= lines. Without NOTIFY_SOCKET, nothing is sent.
 *
 * Node has no unix datagram sockets. The built CLI (bundle, executable) sends each notification from its own
 * process through a tiny addon (image/native/sd_notify.c): no process spawned every watchdog interval, and
 * nothing needed from the systemd package. Without the addon (run from TypeScript, or where it fails to load)
 * it runs `systemd-notify` with NOTIFY_SOCKET passed through. That helper's message comes from another pid
 * (hence NotifyAccess=all in the unit) and is attributed to the unit only while the helper lives: systemd-notify
 * from v246 waits for that (BARRIER=1); older ones can lose a message (a lost READY fails the start, a lost
 * WATCHDOG gets the service killed).
 */
import { execFile } from 'node:child_process';
import { loadOptionalNative } from '../native.ts';

type SdNotify = { notify(socket: string, message: string): void };
let addon: SdNotify | null | undefined;
/** The addon, loaded once; null when this build has none. */
function sdNotify(): SdNotify | null {
  if (addon === undefined) addon = (loadOptionalNative('sd_notify') as SdNotify | undefined) ?? null;
  return addon;
}

export class Notifier {
  private timer: NodeJS.Timeout | undefined;
  /** Notifications that could not be sent (systemd-notify missing or failing). */
  failures = 0;
  lastError: string | undefined;

  /** `command`: the fallback helper; `useAddon` false forces it (tests). */
  constructor(private readonly env: NodeJS.ProcessEnv = process.env, private readonly command = 'systemd-notify', private readonly useAddon = true) {}

  /** How notifications leave: 'addon' (from this process) or 'systemd-notify' (a helper process). */
  get via(): 'addon' | 'systemd-notify' {
    return this.useAddon && sdNotify() ? 'addon' : 'systemd-notify';
  }

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
    // One assignment per line: a newline inside a value would start another.
    lines = lines.map((l) => l.replace(/\n/g, ' '));
    const sd = this.useAddon ? sdNotify() : null;
    if (sd) {
      try {
        sd.notify(this.env.NOTIFY_SOCKET!, lines.join('\n'));
        return Promise.resolve(true);
      } catch (e) {
        this.failures++;
        this.lastError = (e as Error).message;
        return Promise.resolve(false);
      }
    }
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
    return this.send('READY=1', `STATUS=${status}`);
  }

  status(text: string): Promise<boolean> {
    return this.send(`STATUS=${text}`);
  }

  /** Pings the watchdog every half interval while `healthy()` says so (a stuck supervisor stops pinging). */
  /**
   * Sends WATCHDOG=1 at half of WATCHDOG_USEC from a timer: while the event loop turns. A blocked loop sends
   * nothing, and systemd restarts the process; services' health is reported by STATUS=, not here.
   */
  startWatchdog(): void {
    const interval = this.watchdogInterval();
    if (!this.enabled || !interval) return;
    this.timer = setInterval(() => void this.send('WATCHDOG=1'), interval);
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
