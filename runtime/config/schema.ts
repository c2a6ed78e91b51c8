/**
 * The one schema of Starling's YAML configuration: every key, its type, default and meaning, as data.
 * `load.ts` validates a file against it (errors name file:line:col and what was expected) and fills defaults;
 * `starling check --schema` prints it as documentation.
 */

export type FieldSpec =
  | { type: 'string'; doc: string; required?: boolean; default?: string; pattern?: RegExp; patternDoc?: string; maxBytes?: number }
  | { type: 'number'; doc: string; required?: boolean; default?: number; min?: number; max?: number; integer?: boolean }
  | { type: 'boolean'; doc: string; required?: boolean; default?: boolean }
  | { type: 'duration'; doc: string; required?: boolean; default?: string; min?: number }
  | { type: 'enum'; doc: string; values: readonly string[]; required?: boolean; default?: string }
  | { type: 'object'; doc: string; fields: Record<string, FieldSpec>; required?: boolean }
  | { type: 'list'; doc: string; item: FieldSpec; required?: boolean }
  | { type: 'stringmap'; doc: string; required?: boolean }
  /** A list item chosen by one key (`platform`): the shared fields plus those of the chosen variant. */
  | { type: 'variant'; doc: string; key: string; shared: Record<string, FieldSpec>; variants: Record<string, Record<string, FieldSpec>> }
  /** A single-key map choosing one of several forms, e.g. a filter `{ moving_average: 5 }`. */
  | { type: 'oneof'; doc: string; options: Record<string, FieldSpec> };

import { MQTT_FIRST_PART, MQTT_LEVEL } from './names.ts';

/** Largest configuration file read, bytes: a config is a few KB; anything near this is a mistake. */
export const MAX_CONFIG_BYTES = 1024 * 1024;

const NAME = { type: 'string', required: true, pattern: /^[a-z0-9_]+$/, patternDoc: 'lower-case letters, digits and _', maxBytes: 64 } as const;

const FILTER: FieldSpec = {
  type: 'oneof',
  doc: 'a filter applied to each reading, in order',
  options: {
    moving_average: { type: 'number', integer: true, min: 1, max: 1000, doc: 'average of the last N readings' },
    delta: { type: 'number', min: 0, doc: 'publish only when the value moved by at least this much' },
    throttle: { type: 'duration', min: 1, doc: 'publish at most once per this period' },
  },
};

const SENSOR_SHARED: Record<string, FieldSpec> = {
  name: { ...NAME, doc: 'the sensor name; its topic is <prefix><name>' },
  interval: { type: 'duration', default: '10s', min: 10, doc: 'time between reads' },
  filters: { type: 'list', item: FILTER, doc: 'filters applied to each reading, in order' },
  simulate: { type: 'boolean', doc: 'use the simulated twin of this sensor (default: the top-level simulate)' },
};

export const SCHEMA: FieldSpec = {
  type: 'object',
  doc: 'a Starling device',
  fields: {
    node: {
      type: 'object',
      doc: 'the mesh node',
      fields: {
        name: { type: 'string', maxBytes: 255, pattern: MQTT_LEVEL, patternDoc: 'a name without /, +, # or control characters (it is one level of MQTT topics)', doc: 'node name on the mesh (default: 6 hex digits of its UUID)' },
        iface: { type: 'string', doc: 'interface name or IPv4 address (default: the first up, non-loopback, with broadcast)' },
        port: { type: 'number', integer: true, min: 1, max: 65535, default: 5670, doc: 'UDP beacon port' },
        headers: { type: 'stringmap', doc: 'extra HELLO headers' },
        groups: { type: 'list', item: { type: 'string', maxBytes: 255, doc: 'group' }, doc: 'ZRE groups to join (starling update push --to GROUP, starling send … GROUP)' },
        peers: { type: 'list', item: { type: 'string', pattern: /^tcp:\/\/\d+\.\d+\.\d+\.\d+:\d+$/, patternDoc: 'tcp://IPv4:PORT', doc: 'endpoint' }, doc: 'static peers' },
        evasive: { type: 'duration', default: '5s', min: 100, doc: 'a peer silent this long is pinged (Zyre\'s evasive timeout)' },
        expired: { type: 'duration', default: '30s', min: 200, doc: 'a peer silent this long has left (Zyre\'s expired timeout)' },
        gossip: {
          type: 'object',
          doc: 'gossip discovery instead of UDP beacons (zgossip, as Zyre\'s gossip mode), for networks without broadcast',
          fields: {
            bind: { type: 'string', pattern: /^tcp:\/\/\d+\.\d+\.\d+\.\d+:\d+$/, patternDoc: 'tcp://IPv4:PORT (an address, never a host name)', doc: 'serve gossip here' },
            connect: { type: 'list', item: { type: 'string', pattern: /^tcp:\/\/\d+\.\d+\.\d+\.\d+:\d+$/, patternDoc: 'tcp://IPv4:PORT', doc: 'seed' }, doc: 'seeds to connect to (two or three)' },
            ttl: { type: 'duration', default: '30s', min: 1000, doc: 'lease of our tuple: republished every third of it' },
          },
        },
      },
    },
    security: {
      type: 'object',
      doc: 'who may join, read and command (CURVE keys and an allowlist; README "Securing a mesh")',
      fields: {
        mode: { type: 'enum', values: ['curve', 'none'], default: 'curve', doc: 'curve: encrypted mesh and telemetry, only trusted keys join; none: plain ZRE, as Zyre and pyre without CURVE' },
        identity: { type: 'string', default: '/var/lib/starling/identity', doc: 'directory of this node\'s key pair (node.key, node.key_secret); made on first start' },
        trusted: { type: 'string', default: '/var/lib/starling/trusted', doc: 'directory of trusted public keys (zcert files; starling trust add)' },
        zap_domain: { type: 'string', default: 'global', maxBytes: 200, doc: 'ZAP domain of the mesh inbox' },
      },
    },
    telemetry: {
      type: 'object',
      doc: 'publishing samples',
      fields: {
        prefix: { type: 'string', default: '', maxBytes: 128, pattern: MQTT_FIRST_PART, patternDoc: 'text without +, #, control characters or a leading $ (it goes into MQTT topics), e.g. kitchen/', doc: 'prepended to every sensor name to form its topic, e.g. kitchen/' },
        epgm: { type: 'string', pattern: /^\d+\.\d+\.\d+\.\d+:\d+$/, patternDoc: 'GROUP:PORT, e.g. 239.192.7.1:5555', doc: 'also publish on this multicast group' },
        rate: { type: 'number', integer: true, min: 1, default: 10000, doc: 'epgm rate, kbit/s' },
      },
    },
    simulate: { type: 'boolean', default: false, doc: 'use every sensor\'s and line\'s simulated twin (for a laptop)' },
    sysfs: { type: 'string', default: '/sys', doc: 'root of sysfs (tests point it at a fixture tree)' },
    procfs: { type: 'string', default: '/proc', doc: 'root of procfs' },
    sensors: {
      type: 'list',
      doc: 'sensors to sample',
      item: {
        type: 'variant',
        key: 'platform',
        doc: 'one sensor',
        shared: SENSOR_SHARED,
        variants: {
          ds18b20: {
            address: { type: 'string', required: true, pattern: /^28-[0-9a-f]{12}$/, patternDoc: 'a 1-Wire id such as 28-0316a2795aff', doc: '1-Wire device id' },
          },
          iio: {
            device: { type: 'string', required: true, doc: 'iio:deviceN, or the device\'s name (its name file), e.g. bme280' },
            channel: { type: 'enum', values: ['temp', 'humidityrelative', 'pressure'], required: true, doc: 'which channel' },
          },
          hwmon: {
            chip: { type: 'string', required: true, doc: 'hwmonN, or the chip\'s name (its name file), e.g. cpu_thermal' },
            input: { type: 'string', default: 'temp1', pattern: /^(temp|in|fan|power|curr|humidity)\d+$/, patternDoc: 'temp1, in0, fan1, …', doc: 'which input' },
          },
          thermal: {
            zone: { type: 'string', default: 'thermal_zone0', doc: 'thermal_zoneN, or the zone\'s type, e.g. cpu-thermal' },
          },
          system: {
            metric: { type: 'enum', values: ['load1', 'load5', 'load15', 'mem_available', 'mem_used_percent', 'wifi_signal', 'wifi_quality'], required: true, doc: 'which figure' },
            interface: { type: 'string', default: 'wlan0', doc: 'Wi-Fi interface for wifi_*' },
          },
          sim: {
            waveform: { type: 'enum', values: ['sine', 'square', 'ramp', 'random_walk', 'constant'], default: 'sine', doc: 'shape' },
            min: { type: 'number', default: 0, doc: 'lowest value' },
            max: { type: 'number', default: 1, doc: 'highest value' },
            period: { type: 'duration', default: '60s', min: 1, doc: 'one cycle' },
            noise: { type: 'number', default: 0, min: 0, doc: 'uniform noise added, ± this much' },
            unit: { type: 'string', default: '', maxBytes: 255, doc: 'unit' },
            fail_rate: { type: 'number', default: 0, min: 0, max: 1, doc: 'probability that a read fails' },
            seed: { type: 'number', integer: true, default: 1, doc: 'random seed (runs repeat exactly)' },
          },
        },
      },
    },
    services: {
      type: 'list',
      doc: 'external programs the supervisor runs, started in this order after the device, stopped all at once within the shutdown deadline',
      item: {
        type: 'object',
        doc: 'one service',
        fields: {
          name: { ...NAME, doc: 'the service name (for status, restart and logs)' },
          command: { type: 'string', required: true, doc: 'the program to run (a path, or a name found on PATH)' },
          args: { type: 'list', item: { type: 'string', doc: 'argument' }, doc: 'its arguments' },
          env: { type: 'stringmap', doc: 'extra environment variables' },
          cwd: { type: 'string', doc: 'working directory' },
          restart: { type: 'enum', values: ['always', 'on-failure', 'never'], default: 'on-failure', doc: 'when to restart it after it exits' },
          backoff_min: { type: 'duration', default: '1s', min: 1, doc: 'first restart delay' },
          backoff_max: { type: 'duration', default: '5m', min: 1, doc: 'largest restart delay' },
          stable_after: { type: 'duration', default: '1m', min: 1, doc: 'a run this long resets the restart delay' },
          stop_timeout: { type: 'duration', default: '10s', min: 1, doc: 'SIGKILL this long after SIGTERM' },
          progress_interval: { type: 'duration', min: 1, doc: 'unhealthy when it printed no line for twice this long (default: healthy while running)' },
        },
      },
    },
    mqtt: {
      type: 'object',
      doc: 'the MQTT bridge (on when url is set)',
      fields: {
        url: { type: 'string', pattern: /^mqtts?:\/\/[^\s/]+(:\d+)?\/?$/, patternDoc: 'mqtt://HOST[:PORT] or mqtts://HOST[:PORT]', doc: 'the broker' },
        failover: { type: 'list', item: { type: 'string', pattern: /^mqtts?:\/\/[^\s/]+(:\d+)?\/?$/, patternDoc: 'mqtt://HOST[:PORT] or mqtts://HOST[:PORT]', doc: 'a broker' }, doc: 'brokers to fail over to, in order, when url (or the one in use) fails; the spool and its order are kept' },
        client_id: { type: 'string', maxBytes: 128, doc: 'MQTT client id (default starling-<node name>)' },
        username: { type: 'string', doc: 'user name' },
        password: { type: 'string', doc: 'password' },
        protocol: { type: 'number', integer: true, min: 4, max: 5, default: 4, doc: 'MQTT protocol level: 4 (3.1.1) or 5' },
        keepalive: { type: 'duration', default: '30s', min: 1000, doc: 'keepalive' },
        ca: { type: 'string', doc: 'CA certificate file (PEM) for mqtts' },
        cert: { type: 'string', doc: 'client certificate file (PEM)' },
        key: { type: 'string', doc: 'client key file (PEM)' },
        topic: { type: 'string', default: 'starling/{topic}', pattern: /^(?!\$)[^+#\u0000-\u001f\u007f-\u009f]*\{topic\}[^+#\u0000-\u001f\u007f-\u009f]*$/, patternDoc: 'a template containing {topic}, without +, #, control characters or a leading $, e.g. home/{topic}/state', maxBytes: 200, doc: 'MQTT state topic of each telemetry topic' },
        embedded: { type: 'boolean', default: false, doc: 'run an embedded MQTT 3.1.1 broker (aedes) when no url is given' },
        embedded_listen: { type: 'string', default: '127.0.0.1:1883', pattern: /^[\d.]+:\d+$/, patternDoc: 'IPv4:PORT', doc: 'where the embedded broker listens' },
        discovery: { type: 'boolean', default: true, doc: 'announce entities to Home Assistant' },
        discovery_prefix: { type: 'string', default: 'homeassistant', pattern: /^(?!\$)[^+#\u0000-\u001f\u007f-\u009f]+$/, patternDoc: 'a topic prefix without +, #, control characters or a leading $', maxBytes: 200, doc: 'Home Assistant discovery prefix' },
        spool: { type: 'string', default: '/var/lib/starling/spool', doc: 'store-and-forward directory' },
        spool_max_mb: { type: 'number', min: 1, max: 100_000, default: 64, doc: 'the spool\'s bound, MiB' },
        spool_fsync: { type: 'enum', values: ['always', 'interval', 'never'], default: 'interval', doc: 'how often spool writes are forced to the card' },
        mesh: { type: 'boolean', default: true, doc: 'bridge every publisher on the mesh (false: only this device)' },
        shape: { type: 'enum', values: ['sample', 'device'], default: 'sample', doc: 'sample: one JSON message per sample at its topic; device: one JSON state per device (topic a/b/c is field c of device a/b), each Home Assistant entity reading its field with a value_template, as Zigbee2MQTT does' },
      },
    },
    influx: {
      type: 'object',
      doc: 'an InfluxDB line-protocol sink over HTTP (on when url is set): InfluxDB 1.x (db), 2.x (bucket, org) or VictoriaMetrics (db); store-and-forward like the MQTT bridge',
      fields: {
        url: { type: 'string', pattern: /^https?:\/\/[^\s/@]+(:\d+)?\/?$/, patternDoc: 'http://HOST[:PORT] or https://HOST[:PORT] (no user or path: credentials go in token, username, password)', doc: 'the database server' },
        db: { type: 'string', pattern: /^[^\s&#?/]{1,128}$/, patternDoc: 'a database name without spaces, &, #, ? or /', doc: 'InfluxDB 1.x or VictoriaMetrics database (POST /write?db=)' },
        bucket: { type: 'string', pattern: /^[^\s&#?]{1,128}$/, patternDoc: 'a bucket name without spaces, &, # or ?', doc: 'InfluxDB 2.x bucket (POST /api/v2/write); needs org' },
        org: { type: 'string', pattern: /^[^\s&#?]{1,128}$/, patternDoc: 'an organisation name without spaces, &, # or ?', doc: 'InfluxDB 2.x organisation' },
        token: { type: 'string', doc: 'API token (sent as Authorization: Token …)' },
        username: { type: 'string', doc: 'InfluxDB 1.x user' },
        password: { type: 'string', doc: 'InfluxDB 1.x password' },
        measurement: { type: 'string', default: 'starling', pattern: /^[A-Za-z_][A-Za-z0-9_]{0,63}$/, patternDoc: 'letters, digits and _, starting with a letter or _', doc: 'the measurement every sample is written to (tags node, topic, unit; fields value, seq, status)' },
        batch: { type: 'number', integer: true, min: 1, max: 100_000, default: 5000, doc: 'samples per request at most' },
        interval: { type: 'duration', default: '1s', min: 10, doc: 'how long samples are gathered before a request' },
        timeout: { type: 'duration', default: '10s', min: 100, doc: 'a request not answered this long counts as failed (sent again from the spool)' },
        spool: { type: 'string', default: '/var/lib/starling/spool-influx', doc: 'store-and-forward directory (its own, not the MQTT bridge\'s)' },
        spool_max_mb: { type: 'number', min: 1, max: 100_000, default: 64, doc: 'the spool\'s bound, MiB' },
        spool_fsync: { type: 'enum', values: ['always', 'interval', 'never'], default: 'interval', doc: 'how often spool writes are forced to the card' },
        mesh: { type: 'boolean', default: true, doc: 'write every publisher on the mesh (false: only this device)' },
      },
    },
    files: {
      type: 'object',
      doc: 'files sent to this node over the mesh (starling send), and what it serves (README "Files and updates")',
      fields: {
        accept: { type: 'boolean', default: false, doc: 'accept files peers send (in secure mode only from keys with the command role)' },
        inbox: { type: 'string', default: '/var/lib/starling/inbox', doc: 'where received files are put' },
        quota_mb: { type: 'number', min: 1, max: 1_000_000, default: 256, doc: 'files beyond this much in the inbox (MiB, counting transfers in progress) are refused' },
        max_uploads: { type: 'number', integer: true, min: 1, max: 64, default: 4, doc: 'peers served at once; the rest are told to wait' },
      },
    },
    update: {
      type: 'object',
      doc: 'signed releases pushed over the mesh (starling update push); off while keys is empty',
      fields: {
        keys: { type: 'list', item: { type: 'string', pattern: /^(ed25519:)?[A-Za-z0-9+/]{43}=$/, patternDoc: 'the base64 of a 32-byte Ed25519 public key, as starling release keygen prints it', doc: 'release key' }, doc: 'release keys trusted to sign updates' },
        commit_after: { type: 'duration', default: '60s', min: 1000, doc: 'a new release commits after being healthy this long' },
        max_attempts: { type: 'number', integer: true, min: 1, max: 20, default: 3, doc: 'failed starts of a new release before the previous one is restored' },
        trial_timeout: { type: 'duration', default: '3m', min: 1000, doc: 'a new release not committed this long after a start counts as a failed start' },
      },
    },
    web: {
      type: 'object',
      doc: 'the web view (README "The web view"): live pages of the mesh, sensors, outputs and services',
      fields: {
        listen: { type: 'string', default: '127.0.0.1:8080', pattern: /^(off|\d+\.\d+\.\d+\.\d+:\d+)$/, patternDoc: 'IPv4:PORT, or off', doc: 'where the web view listens (port 0: any free port); a non-loopback address requires the token for everything' },
        token: { type: 'string', pattern: /^[A-Za-z0-9_-]{16,128}$/, patternDoc: '16 to 128 letters, digits, - or _', doc: 'the access token (default: read from token_file, made there on first start)' },
        token_file: { type: 'string', default: '/var/lib/starling/web-token', doc: 'where the token is kept (0600) when web.token is not set' },
        hosts: { type: 'list', item: { type: 'string', pattern: /^[A-Za-z0-9.-]{1,253}$/, patternDoc: 'a host name', doc: 'host name' }, doc: 'host names the view may be reached by besides IP addresses and localhost (checked against the Host header)' },
        history: { type: 'number', integer: true, min: 10, max: 100_000, default: 600, doc: 'recent samples kept per topic (older ones are kept as minute averages, 24 h)' },
        max_topics: { type: 'number', integer: true, min: 1, max: 100_000, default: 1000, doc: 'topics with a history (the least recently updated goes beyond this)' },
        max_clients: { type: 'number', integer: true, min: 1, max: 1000, default: 32, doc: 'live connections at once' },
      },
    },
    fleet: {
      type: 'object',
      doc: 'status across the mesh (README "A fleet you can see")',
      fields: {
        status_interval: { type: 'duration', default: '10s', doc: 'how often this node publishes its status topics (<prefix>@node/…); 0: never (it still shows the others)' },
        log_rate: { type: 'number', integer: true, min: 0, max: 10_000, default: 50, doc: 'log lines a second this node sends to the mesh at most (a burst of twice that); 0: none' },
        log_lines: { type: 'number', integer: true, min: 100, max: 1_000_000, default: 5000, doc: 'lines of the mesh\'s logs kept in RAM for starling logs --mesh' },
        follow: { type: 'boolean', default: true, doc: 'follow every peer\'s status and log lines (two connections to each peer); false on leaf nodes of a large fleet: this node still publishes its own, and status --mesh / logs --mesh here show only presence and this node\'s lines' },
      },
    },
    logs: {
      type: 'object',
      doc: 'logging',
      fields: {
        ring: { type: 'number', integer: true, min: 100, max: 1_000_000, default: 5000, doc: 'log entries kept in RAM for starling logs' },
      },
    },
    gpio: {
      type: 'list',
      doc: 'GPIO lines',
      item: {
        type: 'object',
        doc: 'one line',
        fields: {
          name: { ...NAME, doc: 'the line name (for the CLI, the mesh and its topic)' },
          pin: { type: 'string', required: true, pattern: /^(GPIO\d+|[A-Za-z0-9_.-]+:\d+)$/, patternDoc: 'GPIO17, or CHIP:LINE such as gpiochip512:17 or pinctrl-rp1:17', doc: 'which line' },
          mode: { type: 'enum', values: ['input', 'output'], required: true, doc: 'direction' },
          pull: { type: 'enum', values: ['none', 'up', 'down'], default: 'none', doc: 'bias (applied with pinctrl where available; sysfs cannot)' },
          inverted: { type: 'boolean', default: false, doc: 'active-low' },
          debounce: { type: 'duration', default: '0ms', doc: 'an input must hold a level this long to count' },
          initial: { type: 'number', integer: true, min: 0, max: 1, default: 0, doc: 'output level at start' },
          safe: { type: 'number', integer: true, min: 0, max: 1, doc: 'output level set at shutdown (default: initial)' },
          simulate: { type: 'boolean', doc: 'use a simulated line (default: the top-level simulate)' },
        },
      },
    },
  },
};

/** Parses `10s`, `500ms`, `2m`, `1h`, or a bare number of seconds, into milliseconds; undefined if invalid. */
export function parseDuration(value: unknown): number | undefined {
  if (typeof value === 'number' && Number.isFinite(value) && value >= 0) return value * 1000;
  if (typeof value !== 'string') return undefined;
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)$/.exec(value.trim());
  if (!m) return undefined;
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
}
