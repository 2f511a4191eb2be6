/**
 * The demo catalog: a small maritime maintenance schema (receiving, equipment, work orders), as
 * in the application lensfleet grew from. Every table carries `yacht_id`, the tenant it belongs to.
 *
 * Each lens also has a REST form (Supabase tenants) returning the same columns; where PostgREST's
 * grammar cannot say what the SQL says, the difference is noted at the form (docs/SUPABASE.md).
 */
import { z } from 'zod';
import { type CatalogOf, defineLens } from '../lens.js';

const limit = z.number().int().min(1).max(200).default(20);

export const receivingRecent = defineLens({
  name: 'receiving.recent',
  description: 'Most recent deliveries received on board, newest first.',
  params: z.object({ limit, status: z.enum(['pending', 'received', 'rejected']).optional() }).strict(),
  sql: ({ limit, status }) =>
    status === undefined
      ? {
          text: 'SELECT id, yacht_id, supplier, reference, status, received_at FROM receiving ORDER BY received_at DESC, id DESC LIMIT $1',
          values: [limit],
        }
      : {
          text: 'SELECT id, yacht_id, supplier, reference, status, received_at FROM receiving WHERE status = $2 ORDER BY received_at DESC, id DESC LIMIT $1',
          values: [limit, status],
        },
  rest: (db, { limit, status }) => {
    const q = db.from('receiving').select('id, yacht_id, supplier, reference, status, received_at');
    return (status === undefined ? q : q.eq('status', status)).order('received_at', { ascending: false }).order('id', { ascending: false }).limit(limit);
  },
  maxRows: 200,
  // Service jobs see the whole tenant; a user's job sees what row-level security lets them see.
  auth: 'optional',
});

export const equipmentSearch = defineLens({
  name: 'equipment.search',
  description: 'Equipment whose name or category contains the query (case-insensitive).',
  params: z.object({ q: z.string().trim().min(1).max(100), limit }).strict(),
  sql: ({ q, limit }) => ({
    // The pattern is a bind value; LIKE metacharacters in the query are escaped.
    text: `SELECT id, yacht_id, name, category, location, serial_number FROM equipment WHERE name ILIKE $1 OR category ILIKE $1 ORDER BY name, id LIMIT $2`,
    values: [`%${q.replace(/[\\%_]/g, (c) => `\\${c}`)}%`, limit],
  }),
  // The pattern is a double-quoted PostgREST value (so `,.()` in the query are plain text), LIKE
  // metacharacters escaped as in the SQL. One difference: PostgREST reads every `*` in a like
  // pattern as `%`, so a `*` in the query is a wildcard here.
  rest: (db, { q, limit }) => {
    const pattern = `"*${q.replace(/[\\%_]/g, (c) => `\\${c}`).replace(/[\\"]/g, (c) => `\\${c}`)}*"`;
    return db
      .from('equipment')
      .select('id, yacht_id, name, category, location, serial_number')
      .or(`name.ilike.${pattern},category.ilike.${pattern}`)
      .order('name')
      .order('id')
      .limit(limit);
  },
  maxRows: 200,
  // Service jobs see the whole tenant; a user's job sees what row-level security lets them see.
  auth: 'optional',
});

export const workOrdersOpen = defineLens({
  name: 'work_orders.open',
  description: 'Open and in-progress work orders, most urgent first.',
  params: z.object({ priority: z.enum(['low', 'medium', 'high', 'critical']).optional(), limit }).strict(),
  sql: ({ priority, limit }) => ({
    text: `SELECT w.id, w.yacht_id, w.title, w.status, w.priority, w.due_at, e.name AS equipment
             FROM work_orders w LEFT JOIN equipment e ON e.id = w.equipment_id
            WHERE w.status IN ('open', 'in_progress') AND ($1::text IS NULL OR w.priority = $1)
            ORDER BY array_position(ARRAY['critical','high','medium','low'], w.priority), w.due_at NULLS LAST, w.id
            LIMIT $2`,
    values: [priority ?? null, limit],
  }),
  // The equipment name through a spread embed (`...equipment(equipment:name)`: a column of the
  // row, as in the SQL). One difference: PostgREST cannot order by an expression, so without a
  // priority filter the REST form orders by due date, not most urgent first.
  rest: (db, { priority, limit }) => {
    const q = db
      .from('work_orders')
      .select('id, yacht_id, title, status, priority, due_at, ...equipment(equipment:name)')
      .in('status', ['open', 'in_progress']);
    return (priority === undefined ? q : q.eq('priority', priority)).order('due_at', { ascending: true, nullsFirst: false }).order('id').limit(limit);
  },
  maxRows: 200,
  // Service jobs see the whole tenant; a user's job sees what row-level security lets them see.
  auth: 'optional',
});

export const maritimeLenses = [receivingRecent, equipmentSearch, workOrdersOpen] as const;

/**
 * The params of each built-in lens, by name, for the typed SDK:
 * `createLensQueue<MaritimeCatalog>(…)` makes a wrong lens name or params a compile error.
 * `{ 'receiving.recent': { limit?: number; status?: 'pending' | 'received' | 'rejected' }, … }`
 */
export type MaritimeCatalog = CatalogOf<typeof maritimeLenses>;
