-- The demo tenant schema: a small maritime maintenance database. Every row carries `yacht_id`,
-- the tenant it belongs to. Used twice, so there is one copy: by docker compose (the postgres
-- image runs this directory in order) and by dev/local/tenant-db.ts (the demo, tests, benchmarks).
-- Plain SQL only: no psql variables here.
--
-- Identity is Supabase's: every row also carries `owner_id`, the crew member (a user id, the JWT's
-- `sub`) it belongs to; row-level security lets the `authenticated` role see only its owner's rows,
-- through `auth.uid()` reading the claims that lensfleet (or PostgREST) puts in
-- `request.jwt.claims` for the transaction. The workers' own login role bypasses RLS (the service
-- identity, like Supabase's service_role) and may switch to `anon` / `authenticated` per job.

-- Roles are cluster-wide: several tenant databases on one server share them, and may be created
-- at the same time (the demo and the tests create tenants in parallel): a role another session
-- created first is fine.
DO $$
BEGIN
  BEGIN CREATE ROLE anon NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END;
  BEGIN CREATE ROLE authenticated NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END;
END $$;

CREATE SCHEMA auth;

-- Supabase's helpers, unchanged in meaning: the claims of the request's JWT, set per transaction.
CREATE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting('request.jwt.claim', true), ''), nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb
$$;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
  SELECT nullif(coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''), auth.jwt() ->> 'sub'), '')::uuid
$$;
CREATE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting('request.jwt.claim.role', true), ''), auth.jwt() ->> 'role')
$$;

CREATE TABLE equipment (
  id bigserial PRIMARY KEY,
  yacht_id text NOT NULL,
  name text NOT NULL,
  category text NOT NULL,
  location text,
  serial_number text,
  owner_id uuid
);

CREATE TABLE receiving (
  id bigserial PRIMARY KEY,
  yacht_id text NOT NULL,
  supplier text NOT NULL,
  reference text NOT NULL,
  status text NOT NULL CHECK (status IN ('pending', 'received', 'rejected')),
  received_at timestamptz NOT NULL,
  owner_id uuid
);

CREATE TABLE work_orders (
  id bigserial PRIMARY KEY,
  yacht_id text NOT NULL,
  title text NOT NULL,
  status text NOT NULL CHECK (status IN ('open', 'in_progress', 'done')),
  priority text NOT NULL CHECK (priority IN ('low', 'medium', 'high', 'critical')),
  equipment_id bigint REFERENCES equipment (id),
  due_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  owner_id uuid
);

CREATE INDEX receiving_received_at ON receiving (received_at DESC, id DESC);
CREATE INDEX work_orders_status_priority ON work_orders (status, priority);

-- Row-level security: a signed-in user sees the rows they own; anon sees nothing.
ALTER TABLE equipment ENABLE ROW LEVEL SECURITY;
ALTER TABLE receiving ENABLE ROW LEVEL SECURITY;
ALTER TABLE work_orders ENABLE ROW LEVEL SECURITY;
CREATE POLICY equipment_owner ON equipment FOR SELECT TO authenticated USING (owner_id = auth.uid());
CREATE POLICY receiving_owner ON receiving FOR SELECT TO authenticated USING (owner_id = auth.uid());
CREATE POLICY work_orders_owner ON work_orders FOR SELECT TO authenticated USING (owner_id = auth.uid());

GRANT USAGE ON SCHEMA public, auth TO anon, authenticated;
GRANT SELECT ON equipment, receiving, work_orders TO anon, authenticated;
