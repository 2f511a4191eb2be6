/**
 * From a parsed read request to one SQL statement, as PostgREST builds it: every name checked
 * against the schema cache (tables, columns and single-column foreign keys of `public`, read
 * once at start) and quoted; every value a bind parameter; the rows aggregated to a JSON array
 * by Postgres itself (`json_agg`), so types come out as PostgREST returns them (bigint as a
 * number, timestamptz as ISO text).
 */
import type pg from 'pg';
import type { Filter, ReadRequest, SelectItem } from './grammar.js';

/** An error PostgREST answers with its own status and `PGRST…` (or SQLSTATE) code. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly details: string | null;
  readonly hint: string | null;
  constructor(status: number, code: string, message: string, details: string | null = null, hint: string | null = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.details = details;
    this.hint = hint;
  }
}

interface ForeignKey {
  readonly constraint: string;
  readonly table: string;
  readonly column: string;
  readonly foreignTable: string;
  readonly foreignColumn: string;
}

export interface SchemaCache {
  /** Table → its columns, in order. */
  readonly tables: ReadonlyMap<string, readonly string[]>;
  readonly foreignKeys: readonly ForeignKey[];
}

/** Read the tables, columns and single-column foreign keys of `public` (PostgREST's schema cache). */
export async function loadSchemaCache(db: pg.Pool | pg.Client): Promise<SchemaCache> {
  const cols = await db.query<{ table: string; column: string }>(
    `SELECT c.relname AS table, a.attname AS column
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid
      WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'm', 'p', 'f') AND a.attnum > 0 AND NOT a.attisdropped
      ORDER BY c.relname, a.attnum`,
  );
  const tables = new Map<string, string[]>();
  for (const r of cols.rows) {
    const list = tables.get(r.table) ?? [];
    list.push(r.column);
    tables.set(r.table, list);
  }
  const fks = await db.query<ForeignKey>(
    `SELECT con.conname AS constraint, src.relname AS table, a1.attname AS column, dst.relname AS "foreignTable", a2.attname AS "foreignColumn"
       FROM pg_constraint con
       JOIN pg_class src ON src.oid = con.conrelid JOIN pg_namespace n ON n.oid = src.relnamespace
       JOIN pg_class dst ON dst.oid = con.confrelid
       JOIN pg_attribute a1 ON a1.attrelid = con.conrelid AND a1.attnum = con.conkey[1]
       JOIN pg_attribute a2 ON a2.attrelid = con.confrelid AND a2.attnum = con.confkey[1]
      WHERE con.contype = 'f' AND n.nspname = 'public' AND cardinality(con.conkey) = 1`,
  );
  return { tables, foreignKeys: fks.rows };
}

export interface Statement {
  readonly text: string;
  readonly values: unknown[];
}

const q = (name: string) => `"${name.replace(/"/g, '""')}"`;

/** A relationship resolved for an embed: the join condition and whether it yields one row or many. */
interface Join {
  readonly table: string;
  readonly toOne: boolean;
  /** SQL condition between the embedded alias and the parent alias. */
  on(embedded: string, parent: string): string;
}

/**
 * `SELECT coalesce(json_agg(t), '[]')::text AS body, count(*) AS n FROM (<read>) t`, with the
 * read's rows limited to [offset, offset + limit).
 */
export function buildRead(cache: SchemaCache, table: string, req: ReadRequest, range: { offset: number; limit: number | undefined }): Statement {
  const columns = cache.tables.get(table);
  if (columns === undefined) {
    throw new ApiError(404, 'PGRST205', `Could not find the table 'public.${table}' in the schema cache`);
  }
  const values: unknown[] = [];
  const param = (v: unknown) => `$${values.push(v)}`;
  let aliases = 0;
  const column = (t: string, name: string): string => {
    if (!cache.tables.get(t)?.includes(name)) throw new ApiError(400, '42703', `column ${t}.${name} does not exist`);
    return name;
  };

  const selectList = (t: string, alias: string, items: readonly SelectItem[], allowEmbed: boolean): string[] => {
    const out: string[] = [];
    for (const item of items) {
      if (item.kind === 'star') {
        for (const c of cache.tables.get(t)!) out.push(`${q(alias)}.${q(c)}`);
      } else if (item.kind === 'column') {
        out.push(`${q(alias)}.${q(column(t, item.name))} AS ${q(item.alias ?? item.name)}`);
      } else {
        if (!allowEmbed) throw new ApiError(400, 'PGRST100', 'the PostgREST stand-in embeds one level only');
        const join = resolve(cache, t, item.relation);
        const inner = `e${++aliases}`;
        const from = `FROM "public".${q(join.table)} AS ${q(inner)} WHERE ${join.on(inner, alias)}`;
        if (item.spread) {
          if (!join.toOne) throw new ApiError(400, 'PGRST119', `A spread operation on '${item.relation}' is only supported on to-one relationships`);
          // Each spread column is its own scalar subquery: simple, and exact for a to-one join.
          for (const sub of item.items) {
            if (sub.kind === 'embed') throw new ApiError(400, 'PGRST100', 'the PostgREST stand-in embeds one level only');
            const names =
              sub.kind === 'star'
                ? cache.tables.get(join.table)!.map((c) => [c, c] as const)
                : [[column(join.table, sub.name), sub.alias ?? sub.name] as const];
            for (const [c, as] of names) out.push(`(SELECT ${q(inner)}.${q(c)} ${from}) AS ${q(as)}`);
          }
        } else {
          const cols = selectList(join.table, inner, item.items, false).join(', ');
          const key = q(item.alias ?? item.relation);
          out.push(
            join.toOne
              ? `(SELECT row_to_json(_e) FROM (SELECT ${cols} ${from}) _e) AS ${key}`
              : `(SELECT coalesce(json_agg(_e), '[]') FROM (SELECT ${cols} ${from}) _e) AS ${key}`,
          );
        }
      }
    }
    return out;
  };

  const condition = (f: Filter): string => {
    if (f.kind === 'logic') {
      const inner = f.children.map(condition).join(f.op === 'and' ? ' AND ' : ' OR ');
      return f.negate ? `NOT (${inner})` : `(${inner})`;
    }
    const col = `${q(table)}.${q(column(table, f.column))}`;
    let sql: string;
    switch (f.op) {
      case 'eq':
        sql = `${col} = ${param(f.value)}`;
        break;
      case 'neq':
        sql = `${col} <> ${param(f.value)}`;
        break;
      case 'gt':
        sql = `${col} > ${param(f.value)}`;
        break;
      case 'gte':
        sql = `${col} >= ${param(f.value)}`;
        break;
      case 'lt':
        sql = `${col} < ${param(f.value)}`;
        break;
      case 'lte':
        sql = `${col} <= ${param(f.value)}`;
        break;
      case 'like':
        sql = `${col} LIKE ${param(f.value)}`;
        break;
      case 'ilike':
        sql = `${col} ILIKE ${param(f.value)}`;
        break;
      case 'in':
        sql = `${col} = ANY(${param(f.value)})`;
        break;
      case 'is':
        sql = `${col} IS ${f.value === 'not_null' ? 'NOT NULL' : String(f.value).toUpperCase()}`;
        break;
    }
    return f.negate ? `NOT (${sql})` : sql;
  };

  const list = selectList(table, table, req.select, true);
  const where = req.filters.length ? ` WHERE ${req.filters.map(condition).join(' AND ')}` : '';
  const order = req.order.length
    ? ` ORDER BY ${req.order
        .map((o) => `${q(table)}.${q(column(table, o.column))} ${o.descending ? 'DESC' : 'ASC'}${o.nulls ? ` NULLS ${o.nulls.toUpperCase()}` : ''}`)
        .join(', ')}`
    : '';
  const limit = range.limit === undefined ? '' : ` LIMIT ${Math.trunc(range.limit)}`;
  const offset = range.offset > 0 ? ` OFFSET ${Math.trunc(range.offset)}` : '';
  const read = `SELECT ${list.join(', ')} FROM "public".${q(table)} AS ${q(table)}${where}${order}${limit}${offset}`;
  return { text: `SELECT coalesce(json_agg(_t), '[]')::text AS body, count(*)::int AS n FROM (${read}) _t`, values };
}

/**
 * The relationship an embed names: a table with exactly one foreign key between it and the
 * parent (either direction), or a foreign-key column of the parent (to-one).
 */
function resolve(cache: SchemaCache, parent: string, relation: string): Join {
  const byColumn = cache.foreignKeys.filter((fk) => fk.table === parent && fk.column === relation);
  const candidates: Join[] = [];
  for (const fk of byColumn.length ? byColumn : cache.foreignKeys) {
    if (fk.table === parent && (fk.foreignTable === relation || fk.column === relation)) {
      candidates.push({ table: fk.foreignTable, toOne: true, on: (e, p) => `${q(e)}.${q(fk.foreignColumn)} = ${q(p)}.${q(fk.column)}` });
    } else if (fk.foreignTable === parent && fk.table === relation) {
      candidates.push({ table: fk.table, toOne: false, on: (e, p) => `${q(e)}.${q(fk.column)} = ${q(p)}.${q(fk.foreignColumn)}` });
    }
  }
  if (candidates.length === 0) {
    throw new ApiError(
      400,
      'PGRST200',
      `Could not find a relationship between '${parent}' and '${relation}' in the schema cache`,
      `Searched for a foreign key relationship between '${parent}' and '${relation}' in the schema 'public', but no matches were found.`,
    );
  }
  if (candidates.length > 1)
    throw new ApiError(300, 'PGRST201', `Could not embed because more than one relationship was found for '${parent}' and '${relation}'`);
  return candidates[0]!;
}
