/**
 * The part of PostgREST's URL grammar the stand-in speaks (docs.postgrest.org, API → Tables and
 * Views, URL grammar): `select=` with columns, `*`, aliases and one level of embedded resources
 * (`rel(cols)`, `alias:rel(cols)`, `...rel(cols)`); column filters with `eq neq gt gte lt lte
 * like ilike in is` and `not.`; logic trees `or=(…)`, `and=(…)`, `not.or=(…)` with nesting and
 * double-quoted values; `order=col.desc.nullslast,…`; `limit`, `offset`. Pure parsing: names
 * are checked against the database's schema later (./sql.ts).
 */

export type FilterOp = 'eq' | 'neq' | 'gt' | 'gte' | 'lt' | 'lte' | 'like' | 'ilike' | 'in' | 'is';

export type SelectItem =
  | { readonly kind: 'star' }
  | { readonly kind: 'column'; readonly name: string; readonly alias: string | undefined }
  | { readonly kind: 'embed'; readonly relation: string; readonly alias: string | undefined; readonly spread: boolean; readonly items: readonly SelectItem[] };

export type Filter =
  | { readonly kind: 'op'; readonly column: string; readonly negate: boolean; readonly op: FilterOp; readonly value: string | readonly string[] }
  | { readonly kind: 'logic'; readonly op: 'and' | 'or'; readonly negate: boolean; readonly children: readonly Filter[] };

export interface OrderTerm {
  readonly column: string;
  readonly descending: boolean;
  readonly nulls: 'first' | 'last' | undefined;
}

export interface ReadRequest {
  readonly select: readonly SelectItem[];
  readonly filters: readonly Filter[];
  readonly order: readonly OrderTerm[];
  readonly limit: number | undefined;
  readonly offset: number | undefined;
}

/** A request PostgREST would reject while parsing: HTTP 400, `PGRST100`. */
export class GrammarError extends Error {
  readonly details: string;
  constructor(message: string, details: string) {
    super(message);
    this.name = 'GrammarError';
    this.details = details;
  }
}

const OPS: ReadonlySet<string> = new Set<FilterOp>(['eq', 'neq', 'gt', 'gte', 'lt', 'lte', 'like', 'ilike', 'in', 'is']);
const IS_VALUES: ReadonlySet<string> = new Set(['null', 'not_null', 'true', 'false', 'unknown']);
const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;
const RESERVED = new Set(['select', 'order', 'limit', 'offset', 'or', 'and', 'not.or', 'not.and', 'columns', 'on_conflict']);

/** Parse a GET's query string (already split by URLSearchParams). */
export function parseReadRequest(params: URLSearchParams): ReadRequest {
  const filters: Filter[] = [];
  let select: SelectItem[] = [{ kind: 'star' }];
  let order: OrderTerm[] = [];
  let limit: number | undefined;
  let offset: number | undefined;
  for (const [key, value] of params) {
    if (key === 'select') select = parseSelect(value);
    else if (key === 'order') order = parseOrder(value);
    else if (key === 'limit') limit = parseCount('limit', value);
    else if (key === 'offset') offset = parseCount('offset', value);
    else if (key === 'or' || key === 'and' || key === 'not.or' || key === 'not.and') {
      const negate = key.startsWith('not.');
      const op = (negate ? key.slice(4) : key) as 'and' | 'or';
      const p = new Cursor(value, key);
      const children = p.logicList();
      p.end();
      filters.push({ kind: 'logic', op, negate, children });
    } else if (RESERVED.has(key)) {
      throw new GrammarError(`"${key}" is not supported by the PostgREST stand-in`, `unsupported parameter ${key}`);
    } else if (key.includes('.')) {
      throw new GrammarError(`filters on embedded resources ("${key}") are not supported by the PostgREST stand-in`, `unsupported filter ${key}`);
    } else {
      filters.push(parseColumnFilter(ident(key, 'column'), value));
    }
  }
  return { select, filters, order, limit, offset };
}

/** `col=[not.]op.value` at the top level: the value is everything after the operator, as written. */
function parseColumnFilter(column: string, text: string): Filter {
  let rest = text;
  let negate = false;
  if (rest.startsWith('not.')) {
    negate = true;
    rest = rest.slice(4);
  }
  const dot = rest.indexOf('.');
  const op = dot < 0 ? rest : rest.slice(0, dot);
  if (!OPS.has(op)) throw new GrammarError(`"failed to parse filter (${text})" (line 1, column 1)`, `unexpected operator "${op}"`);
  const raw = dot < 0 ? '' : rest.slice(dot + 1);
  if (op === 'in') {
    const p = new Cursor(raw, column);
    const values = p.inList();
    p.end();
    return { kind: 'op', column, negate, op, value: values };
  }
  return { kind: 'op', column, negate, op: op as FilterOp, value: checkValue(op as FilterOp, raw) };
}

function checkValue(op: FilterOp, value: string): string {
  if (op === 'is' && !IS_VALUES.has(value))
    throw new GrammarError(`"failed to parse filter (is.${value})"`, 'is expects null, not_null, true, false or unknown');
  // PostgREST's alias: `*` for `%` in like patterns (so they need no URL encoding).
  return op === 'like' || op === 'ilike' ? value.replaceAll('*', '%') : value;
}

function parseSelect(text: string): SelectItem[] {
  const p = new Cursor(text, 'select');
  const items = p.selectList(0);
  p.end();
  return items;
}

function parseOrder(text: string): OrderTerm[] {
  return text.split(',').map((term) => {
    const [column = '', ...mods] = term.split('.');
    let descending = false;
    let nulls: OrderTerm['nulls'];
    for (const m of mods) {
      if (m === 'asc') descending = false;
      else if (m === 'desc') descending = true;
      else if (m === 'nullsfirst') nulls = 'first';
      else if (m === 'nullslast') nulls = 'last';
      else throw new GrammarError(`"failed to parse order (${text})"`, `unexpected "${m}" expecting "asc", "desc", "nullsfirst" or "nullslast"`);
    }
    return { column: ident(column, 'order column'), descending, nulls };
  });
}

function parseCount(name: string, text: string): number {
  if (!/^\d{1,15}$/.test(text)) throw new GrammarError(`"failed to parse ${name} (${text})"`, `${name} must be a non-negative integer`);
  return Number(text);
}

function ident(name: string, what: string): string {
  if (!IDENT.test(name)) throw new GrammarError(`"failed to parse ${what} (${name})"`, `the stand-in accepts plain identifiers only`);
  return name;
}

/** A small recursive-descent reader over one parameter's value. */
class Cursor {
  #i = 0;
  constructor(
    readonly text: string,
    readonly what: string,
  ) {}

  end(): void {
    if (this.#i !== this.text.length) this.#fail(`unexpected "${this.text.slice(this.#i, this.#i + 10)}"`);
  }

  /** `(item,item,…)` of a logic tree. */
  logicList(): Filter[] {
    this.#expect('(');
    const out: Filter[] = [this.#logicItem()];
    while (this.#peek() === ',') {
      this.#i++;
      out.push(this.#logicItem());
    }
    this.#expect(')');
    return out;
  }

  /** `(a,"b,c",…)` of an `in` filter. */
  inList(): string[] {
    this.#expect('(');
    const out: string[] = [];
    if (this.#peek() === ')') {
      this.#i++;
      return out;
    }
    for (;;) {
      out.push(this.#peek() === '"' ? this.#quoted() : this.#until(',)'));
      const c = this.#peek();
      this.#i++;
      if (c === ')') return out;
      if (c !== ',') this.#fail('unterminated list');
    }
  }

  selectList(depth: number): SelectItem[] {
    const out: SelectItem[] = [];
    for (;;) {
      out.push(this.#selectItem(depth));
      if (this.#peek() !== ',') return out;
      this.#i++;
    }
  }

  #selectItem(depth: number): SelectItem {
    if (this.#peek() === '*') {
      this.#i++;
      return { kind: 'star' };
    }
    let spread = false;
    if (this.text.startsWith('...', this.#i)) {
      spread = true;
      this.#i += 3;
    }
    let name = this.#word();
    let alias: string | undefined;
    if (this.#peek() === ':' && this.text[this.#i + 1] !== ':') {
      this.#i++;
      alias = name;
      name = this.#word();
    }
    if (this.text.startsWith('::', this.#i)) this.#fail('casts are not supported by the PostgREST stand-in');
    if (this.#peek() === '!') this.#fail('embedding hints are not supported by the PostgREST stand-in');
    if (this.#peek() === '(') {
      if (depth > 0) this.#fail('the PostgREST stand-in embeds one level only');
      this.#i++;
      const items = this.selectList(depth + 1);
      this.#expect(')');
      return { kind: 'embed', relation: name, alias, spread, items };
    }
    if (spread) this.#fail('"..." spreads an embedded resource: rel(columns)');
    return { kind: 'column', name, alias };
  }

  #logicItem(): Filter {
    let negate = false;
    if (this.text.startsWith('not.', this.#i) && /^(and|or)\(/.test(this.text.slice(this.#i + 4))) {
      negate = true;
      this.#i += 4;
    }
    for (const op of ['and', 'or'] as const) {
      if (this.text.startsWith(`${op}(`, this.#i)) {
        this.#i += op.length;
        return { kind: 'logic', op, negate, children: this.logicList() };
      }
    }
    const column = this.#word();
    this.#expect('.');
    let opNegate = false;
    let op = this.#word();
    if (op === 'not') {
      opNegate = true;
      this.#expect('.');
      op = this.#word();
    }
    if (!OPS.has(op)) this.#fail(`unexpected operator "${op}"`);
    this.#expect('.');
    if (op === 'in') return { kind: 'op', column, negate: opNegate, op, value: this.inList() };
    const raw = this.#peek() === '"' ? this.#quoted() : this.#until(',)');
    return { kind: 'op', column, negate: opNegate, op: op as FilterOp, value: checkValue(op as FilterOp, raw) };
  }

  /** A double-quoted value: `\"` and `\\` are escapes. */
  #quoted(): string {
    this.#expect('"');
    let out = '';
    for (; this.#i < this.text.length; this.#i++) {
      const c = this.text[this.#i]!;
      if (c === '\\' && this.#i + 1 < this.text.length) {
        out += this.text[++this.#i];
      } else if (c === '"') {
        this.#i++;
        return out;
      } else out += c;
    }
    return this.#fail('unterminated quoted value');
  }

  #until(stops: string): string {
    const start = this.#i;
    while (this.#i < this.text.length && !stops.includes(this.text[this.#i]!)) this.#i++;
    return this.text.slice(start, this.#i);
  }

  #word(): string {
    const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(this.text.slice(this.#i));
    if (!m) return this.#fail('expected a name');
    this.#i += m[0].length;
    return m[0];
  }

  #peek(): string | undefined {
    return this.text[this.#i];
  }

  #expect(c: string): void {
    if (this.text[this.#i] !== c) this.#fail(`expected "${c}"`);
    this.#i++;
  }

  #fail(why: string): never {
    throw new GrammarError(`"failed to parse ${this.what} (${this.text})" (line 1, column ${this.#i + 1})`, why);
  }
}
