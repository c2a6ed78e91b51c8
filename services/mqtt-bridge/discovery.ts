/**
 * Home Assistant MQTT discovery: one retained config message per entity at
 * `<discovery prefix>/<component>/<object id>/config`, so sensors and switches appear without manual setup.
 * Fields used: name, unique_id, state_topic, unit_of_measurement, device_class, state_class,
 * availability_topic (with payload_available/not_available) or, for a peer's entities, an availability list
 * of the bridge's topic and the peer's (availability_mode all), entity_category for status topics, device {identifiers, name, manufacturer},
 * value_template (states are JSON: `value_json.value`, or the entity's field of a device state), for switches command_topic, payload_on/off, state_on/off, and for binary
 * sensors payload_on/off. state_topic is the one field HA requires of each (and command_topic of a switch).
 */

export type EntityKind = 'sensor' | 'switch' | 'binary_sensor';

export interface Entity {
  /** The telemetry topic, e.g. greenhouse/air. */
  topic: string;
  unit: string;
  /** sensor: a reading; switch: a GPIO output (with a command topic); binary_sensor: a GPIO input. */
  kind: EntityKind;
}

/** Device class from the unit (and the name for %), as Home Assistant lists them; undefined when unknown. */
export function deviceClass(unit: string, name: string): string | undefined {
  switch (unit) {
    case '°C': case '°F': case 'K': return 'temperature';
    case 'kPa': case 'hPa': case 'Pa': case 'bar': case 'mbar': return 'pressure';
    case 'V': case 'mV': return 'voltage';
    case 'A': case 'mA': return 'current';
    case 'W': case 'kW': return 'power';
    case 'dBm': case 'dB': return 'signal_strength';
    case '%': return /hum/i.test(name) ? 'humidity' : /batt/i.test(name) ? 'battery' : undefined;
    default: return undefined;
  }
}

// A status topic's `@node/` becomes `-node-`: sensor names cannot hold `-`, so `shed/@node/rss` and a sensor
// `shed/node_rss` keep different ids.
const objectId = (topic: string): string => `starling_${topic.replace(/@node\//g, '-node-').replace(/[^A-Za-z0-9_-]+/g, '_')}`;

/** The (topic, retained payload) of an entity's discovery config. */
export function discoveryMessage(e: Entity, o: {
  stateTopic: string; discoveryPrefix: string; availabilityTopic: string; deviceAvailability?: string;
  /** The entity's field in a device state at stateTopic (the bridge's shape 'device'); else the state is its own. */
  field?: string;
  /** Default `<stateTopic>/set`. */
  commandTopic?: string;
}): [string, string] {
  const parts = e.topic.split('/');
  const name = parts[parts.length - 1]!;
  const deviceName = parts.length > 1 ? parts[0]! : 'starling';
  const id = objectId(e.topic);
  const stateTopic = o.stateTopic;
  const config: Record<string, unknown> = {
    name,
    unique_id: id,
    state_topic: stateTopic,
    // States are JSON (value, unit, ts, seq): Home Assistant takes the value; or a device's state: its field.
    value_template: o.field === undefined ? '{{ value_json.value }}' : `{{ value_json[${JSON.stringify(o.field)}] }}`,
    // A peer's entity is available while the bridge is and the peer is on the mesh (Zigbee2MQTT's per-device
    // availability); this device's own, while the bridge is.
    ...(o.deviceAvailability
      ? { availability: [o.availabilityTopic, o.deviceAvailability].map((topic) => ({ topic, payload_available: 'online', payload_not_available: 'offline' })), availability_mode: 'all' }
      : { availability_topic: o.availabilityTopic, payload_available: 'online', payload_not_available: 'offline' }),
    device: { identifiers: [`starling_${deviceName.replace(/[^A-Za-z0-9_-]+/g, '_')}`], name: deviceName, manufacturer: 'Starling' },
  };
  // A node's own status (services/fleet.ts: <prefix>@node/rss …) is diagnostics, not a reading of the world.
  if (e.topic.includes('@node/')) config.entity_category = 'diagnostic';
  if (e.kind === 'switch') {
    // value_template turns the JSON state into 1/0, which state_on/state_off then match.
    Object.assign(config, { command_topic: o.commandTopic ?? `${stateTopic}/set`, payload_on: '1', payload_off: '0', state_on: '1', state_off: '0' });
  } else if (e.kind === 'binary_sensor') {
    Object.assign(config, { payload_on: '1', payload_off: '0' });
  } else {
    if (e.unit) config.unit_of_measurement = e.unit;
    const dc = deviceClass(e.unit, name);
    if (dc) config.device_class = dc;
    config.state_class = 'measurement';
  }
  return [`${o.discoveryPrefix}/${e.kind}/${id}/config`, JSON.stringify(config)];
}
