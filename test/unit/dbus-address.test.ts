// Where the system bus's socket is missing, the supervisor does not load dbus-next at all (1.2 MB of heap
// and 10 ms); where it may be there, or cannot be checked without connecting, it tries as before.
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportSupervisor, missingBusSockets, networkConnectivity } from '../../runtime/supervisor/dbus.ts';
import { LogRing } from '../../runtime/supervisor/log.ts';
import { Supervisor } from '../../runtime/supervisor/supervisor.ts';

const saved = process.env.DBUS_SYSTEM_BUS_ADDRESS;
afterEach(() => {
  if (saved === undefined) delete process.env.DBUS_SYSTEM_BUS_ADDRESS;
  else process.env.DBUS_SYSTEM_BUS_ADDRESS = saved;
});

describe('the system bus address', () => {
  it('is missing only when every address is a unix:path= whose file is not there', () => {
    const dir = mkdtempSync(join(tmpdir(), 'starling-bus-'));
    try {
      const there = join(dir, 'socket');
      writeFileSync(there, '');
      process.env.DBUS_SYSTEM_BUS_ADDRESS = 'unix:path=/nonexistent/a';
      expect(missingBusSockets()).toEqual(['/nonexistent/a']);
      process.env.DBUS_SYSTEM_BUS_ADDRESS = 'unix:path=/nonexistent/a;unix:guid=1,path=/nonexistent/b';
      expect(missingBusSockets()).toEqual(['/nonexistent/a', '/nonexistent/b']);
      process.env.DBUS_SYSTEM_BUS_ADDRESS = `unix:path=/nonexistent/a;unix:path=${there}`;
      expect(missingBusSockets()).toBeUndefined();
      process.env.DBUS_SYSTEM_BUS_ADDRESS = 'unix:abstract=/tmp/dbus-x';
      expect(missingBusSockets()).toBeUndefined();
      process.env.DBUS_SYSTEM_BUS_ADDRESS = 'tcp:host=127.0.0.1,port=1';
      expect(missingBusSockets()).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a missing socket is a clear refusal to export, and no connectivity, without trying to connect', async () => {
    process.env.DBUS_SYSTEM_BUS_ADDRESS = 'unix:path=/nonexistent/system_bus_socket';
    const log = new LogRing(10, null);
    const sup = new Supervisor([], log);
    await expect(exportSupervisor(sup, log)).rejects.toThrow('system bus: no socket at /nonexistent/system_bus_socket');
    expect(await networkConnectivity(100)).toBeUndefined();
  });
});
