// Reading a YAML document field by field, so every validation error can name the file, the line
// and the field (`corral.yaml:7:14: nodes.n2.address: expected HOST:PORT, got "n2"`).

import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node, type YAMLMap } from 'yaml';
import { CorralError } from '../api/errors.js';

export class YamlView {
  private readonly lines = new LineCounter();
  readonly root: Node | null;

  constructor(
    readonly file: string,
    text: string,
  ) {
    const doc = parseDocument(text, { lineCounter: this.lines, prettyErrors: false, uniqueKeys: true });
    const first = doc.errors[0];
    if (first) {
      const { line, col } = this.lines.linePos(first.pos[0]);
      const what = first.message.split('\n')[0] ?? 'syntax error';
      throw new CorralError('CONFIG_INVALID', `${file}:${line}:${col}: ${what}`);
    }
    this.root = doc.contents;
  }

  where(node: Node | null | undefined): string {
    const offset = node?.range?.[0];
    if (offset === undefined) return this.file;
    const { line, col } = this.lines.linePos(offset);
    return `${this.file}:${line}:${col}`;
  }

  fail(node: Node | null | undefined, path: string, problem: string): never {
    throw new CorralError('CONFIG_INVALID', `${this.where(node)}: ${path ? `${path}: ` : ''}${problem}`);
  }
}

/** A map node and its path, with typed accessors that fail with a located message. */
export class MapField {
  private readonly seen = new Set<string>();

  constructor(
    readonly view: YamlView,
    readonly node: YAMLMap,
    readonly path: string,
  ) {}

  static root(view: YamlView): MapField {
    if (!isMap(view.root)) view.fail(view.root, '', 'expected a mapping of settings at the top level');
    return new MapField(view, view.root, '');
  }

  private sub(key: string): string {
    return this.path ? `${this.path}.${key}` : key;
  }

  private lookup(key: string): Node | undefined {
    this.seen.add(key);
    for (const pair of this.node.items) {
      if (isScalar(pair.key) && String(pair.key.value) === key) return (pair.value ?? undefined) as Node | undefined;
    }
    return undefined;
  }

  has(key: string): boolean {
    return this.lookup(key) !== undefined;
  }

  /** Keys in file order. */
  keys(): { key: string; node: Node }[] {
    return this.node.items.map((pair) => {
      if (!isScalar(pair.key)) this.view.fail(pair.key as Node, this.path, 'keys must be plain names');
      return { key: String(pair.key.value), node: pair.key as Node };
    });
  }

  string(key: string, opts: { required: true; pattern?: RegExp; hint?: string }): string;
  string(key: string, opts?: { required?: false; pattern?: RegExp; hint?: string }): string | undefined;
  string(key: string, opts: { required?: boolean; pattern?: RegExp; hint?: string } = {}): string | undefined {
    const node = this.lookup(key);
    if (node === undefined || (isScalar(node) && node.value === null)) {
      if (opts.required) this.view.fail(this.node, this.sub(key), `missing${opts.hint ? ` (${opts.hint})` : ''}`);
      return undefined;
    }
    if (!isScalar(node) || (typeof node.value !== 'string' && typeof node.value !== 'number')) {
      this.view.fail(node, this.sub(key), `expected a string${opts.hint ? ` (${opts.hint})` : ''}`);
    }
    const value = String(node.value);
    if (opts.pattern && !opts.pattern.test(value)) {
      this.view.fail(node, this.sub(key), `invalid value ${JSON.stringify(value)}${opts.hint ? `: ${opts.hint}` : ''}`);
    }
    return value;
  }

  integer(key: string, opts: { min?: number; max?: number; default: number }): number {
    const node = this.lookup(key);
    if (node === undefined) return opts.default;
    if (!isScalar(node) || typeof node.value !== 'number' || !Number.isInteger(node.value)) {
      this.view.fail(node, this.sub(key), 'expected a whole number');
    }
    const value = node.value;
    if (opts.min !== undefined && value < opts.min) this.view.fail(node, this.sub(key), `must be at least ${opts.min}`);
    if (opts.max !== undefined && value > opts.max) this.view.fail(node, this.sub(key), `must be at most ${opts.max}`);
    return value;
  }

  /** A list of strings (a YAML sequence, or one string for a single item). */
  stringList(key: string, opts: { required?: boolean; hint?: string } = {}): string[] | undefined {
    const node = this.lookup(key);
    if (node === undefined || (isScalar(node) && node.value === null)) {
      if (opts.required) this.view.fail(this.node, this.sub(key), `missing${opts.hint ? ` (${opts.hint})` : ''}`);
      return undefined;
    }
    if (isScalar(node) && typeof node.value === 'string') return [node.value];
    if (!isSeq(node)) this.view.fail(node, this.sub(key), `expected a list${opts.hint ? ` (${opts.hint})` : ''}`);
    return node.items.map((item, i) => {
      if (!isScalar(item) || typeof item.value !== 'string') this.view.fail(item as Node, `${this.sub(key)}[${i}]`, 'expected a string');
      return item.value;
    });
  }

  map(key: string, opts: { required?: boolean } = {}): MapField | undefined {
    const node = this.lookup(key);
    if (node === undefined || (isScalar(node) && node.value === null)) {
      if (opts.required) this.view.fail(this.node, this.sub(key), 'missing');
      return undefined;
    }
    if (!isMap(node)) this.view.fail(node, this.sub(key), 'expected a mapping');
    return new MapField(this.view, node, this.sub(key));
  }

  nodeOf(key: string): Node | undefined {
    return this.lookup(key);
  }

  fail(key: string, problem: string): never {
    this.view.fail(this.lookup(key) ?? this.node, this.sub(key), problem);
  }

  /** Rejects keys that no accessor asked for: a typo must not be silently ignored. */
  rejectUnknown(): void {
    for (const { key, node } of this.keys()) {
      if (!this.seen.has(key)) {
        const known = [...this.seen].join(', ');
        this.view.fail(node, this.sub(key), `unknown field${known ? ` (known here: ${known})` : ''}`);
      }
    }
  }
}
