/**
 * A bounded FIFO ring. `push` refuses (returns false) when full and counts the refusal in `dropped`; nothing
 * grows past `capacity`. Storage grows on demand (doubling from 8 slots up to `capacity`), so a queue that is
 * never used costs a few dozen bytes however large its bound — a node holds one per peer, and a flood of
 * phantom peers must not each cost the full bound. push/shift are O(1) amortised.
 */
export class BoundedQueue<T> {
  private items: (T | undefined)[];
  private head = 0;
  private count = 0;
  /** How many pushes were refused because the queue was full. */
  dropped = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`queue capacity must be a positive integer, got ${capacity}`);
    this.items = new Array<T | undefined>(Math.min(capacity, 8));
  }

  get length(): number {
    return this.count;
  }

  push(item: T): boolean {
    if (this.count === this.capacity) {
      this.dropped++;
      return false;
    }
    if (this.count === this.items.length) this.grow();
    this.items[(this.head + this.count) % this.items.length] = item;
    this.count++;
    return true;
  }

  peek(): T | undefined {
    return this.count === 0 ? undefined : this.items[this.head];
  }

  /** The item `i` places after the oldest (0: the oldest), or undefined. O(1). */
  at(i: number): T | undefined {
    return i >= 0 && i < this.count ? this.items[(this.head + i) % this.items.length] : undefined;
  }

  shift(): T | undefined {
    if (this.count === 0) return undefined;
    const item = this.items[this.head];
    this.items[this.head] = undefined;
    this.head = (this.head + 1) % this.items.length;
    this.count--;
    return item;
  }

  /** Oldest to newest, without removing anything. */
  *[Symbol.iterator](): IterableIterator<T> {
    for (let i = 0; i < this.count; i++) yield this.items[(this.head + i) % this.items.length] as T;
  }

  /** Empties the queue and gives its storage back (it grows again on demand). */
  clear(): void {
    this.items = new Array<T | undefined>(Math.min(this.capacity, 8));
    this.head = 0;
    this.count = 0;
  }

  private grow(): void {
    const size = Math.min(this.capacity, this.items.length * 2);
    const next = new Array<T | undefined>(size);
    for (let i = 0; i < this.count; i++) next[i] = this.items[(this.head + i) % this.items.length];
    this.items = next;
    this.head = 0;
  }
}
