-- Demo tenant data for docker compose (run once by the postgres image's entrypoint from
-- /docker-entrypoint-initdb.d). The same file initialises every tenant database; the
-- container's environment says which tenant it is:
--   DEMO_YACHT_ID         yacht_id of every seeded row (compose sets it to the tenant id)
--   DEMO_READER_PASSWORD  password of the read-only login role the workers use
-- The schema itself is 00-schema.sql (shared with dev/local/tenant-db.ts). Rows alternate
-- between two demo users, md5('<yacht_id>:user:1')::uuid and …:user:2 (as dev/local does).
-- Needs psql 15+ (\getenv).

\set ON_ERROR_STOP on
\getenv yacht_id DEMO_YACHT_ID
\getenv reader_password DEMO_READER_PASSWORD
\if :{?yacht_id}
\else
  \set yacht_id yTEST_YACHT_001
\endif
\if :{?reader_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'DEMO_READER_PASSWORD is not set'; END $$;
\endif

INSERT INTO equipment (yacht_id, name, category, location, serial_number) VALUES
  (:'yacht_id', 'Main engine 1',  'propulsion', 'engine room', 'SN-ME-00001'),
  (:'yacht_id', 'Generator 1',    'electrical', 'engine room', 'SN-GE-00001'),
  (:'yacht_id', 'Watermaker',     'hotel',      'lazarette',   'SN-WM-00001'),
  (:'yacht_id', 'Bow thruster',   'propulsion', 'foredeck',    'SN-BT-00001'),
  (:'yacht_id', 'Radar',          'navigation', 'bridge',      'SN-RA-00001'),
  (:'yacht_id', 'Fire pump',      'safety',     'engine room', 'SN-FP-00001');

INSERT INTO receiving (yacht_id, supplier, reference, status, received_at) VALUES
  (:'yacht_id', 'Marine Parts Ltd',  'PO-000001', 'received', now() - interval '3 days'),
  (:'yacht_id', 'Ocean Provisions',  'PO-000002', 'received', now() - interval '2 days'),
  (:'yacht_id', 'Harbour Fuel',      'PO-000003', 'rejected', now() - interval '1 day'),
  (:'yacht_id', 'Deck & Rigging Co', 'PO-000004', 'pending',  now() - interval '2 hours');

INSERT INTO work_orders (yacht_id, title, status, priority, equipment_id, due_at)
SELECT :'yacht_id', w.title, w.status, w.priority, e.id, now() + w.due_in
  FROM (VALUES
    ('Service Main engine 1', 'open',        'high',     'Main engine 1', interval '7 days'),
    ('Replace Generator 1 impeller', 'in_progress', 'critical', 'Generator 1', interval '1 day'),
    ('Descale Watermaker',    'open',        'medium',   'Watermaker',    interval '14 days'),
    ('Test Fire pump',        'open',        'critical', 'Fire pump',     interval '2 days'),
    ('Calibrate Radar',       'done',        'low',      'Radar',         interval '-5 days')
  ) AS w (title, status, priority, equipment, due_in)
  JOIN equipment e ON e.name = w.equipment;

-- The workers log in as a read-only role: lenses only read, and a bug cannot write.
CREATE ROLE lensfleet_reader LOGIN PASSWORD :'reader_password' CONNECTION LIMIT 100;
ALTER ROLE lensfleet_reader SET default_transaction_read_only = on;
GRANT CONNECT ON DATABASE :"DBNAME" TO lensfleet_reader;
GRANT USAGE ON SCHEMA public TO lensfleet_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO lensfleet_reader;


-- Demo users own alternate rows (row-level security: a user sees only their rows).
UPDATE equipment SET owner_id = md5(:'yacht_id' || ':user:' || (1 + id % 2))::uuid;
UPDATE receiving SET owner_id = md5(:'yacht_id' || ':user:' || (1 + id % 2))::uuid;
UPDATE work_orders SET owner_id = md5(:'yacht_id' || ':user:' || (1 + id % 2))::uuid;
-- The workers' service identity sees every row and may act as a user for one transaction.
ALTER ROLE lensfleet_reader BYPASSRLS;
GRANT anon, authenticated TO lensfleet_reader;

ANALYZE;
