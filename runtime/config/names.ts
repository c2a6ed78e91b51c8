/**
 * What may appear in an MQTT topic name (MQTT 3.1.1 §4.7 and §1.5.3): 1 to 65,535 bytes of UTF-8, no NUL, and
 * in a topic one publishes to, no wildcard (`+`, `#`); control characters are allowed by the spec but refused
 * here (they break every tool that prints topics); a leading `$` is the broker's ($SYS). The schema checks the
 * parts of topics that come from the configuration with {@link MQTT_PART}; the bridge checks each whole topic,
 * which also carries names from the mesh, with {@link mqttTopicProblem}.
 */

/** A piece of a topic: no wildcard, NUL or control character. */
export const MQTT_PART = /^[^+#\u0000-\u001f\u007f-\u009f]*$/;
/** A topic's first piece: as MQTT_PART, and not starting with `$`. */
export const MQTT_FIRST_PART = /^(?!\$)[^+#\u0000-\u001f\u007f-\u009f]*$/;
/** One level (no `/` either): node names, which become one level of the availability topic. */
export const MQTT_LEVEL = /^[^+#/\u0000-\u001f\u007f-\u009f]+$/;

/** Why `topic` cannot be published to, or undefined when it can. */
export function mqttTopicProblem(topic: string): string | undefined {
  const bytes = Buffer.byteLength(topic);
  if (bytes === 0) return 'empty topic';
  if (bytes > 65_535) return `topic of ${bytes} bytes (MQTT allows 65,535)`;
  if (topic.startsWith('$')) return 'topic starts with $ (reserved for the broker)';
  const bad = /[+#\u0000-\u001f\u007f-\u009f]/.exec(topic);
  if (bad) return `topic holds ${bad[0] === '+' || bad[0] === '#' ? `the wildcard '${bad[0]}'` : `the control character U+${bad[0].charCodeAt(0).toString(16).padStart(4, '0')}`}`;
  if (/[\ud800-\udfff]/.test(topic.replace(/[\ud800-\udbff][\udc00-\udfff]/g, ''))) return 'topic is not valid UTF-8 (a lone surrogate)';
  return undefined;
}
