-- The demo tenant schema: a small maritime maintenance database. Every row carries `yacht_id`,
-- the tenant it belongs to. Used twice, so there is one copy: by docker compose (the postgres
-- image runs this directory in order) and by src/local/tenant-db.ts (the demo, tests, benchmarks).
-- Plain SQL only: no psql variables here.

CREATE TABLE equipment (
  id bigserial PRIMARY KEY,
  yacht_id text NOT NULL,
  name text NOT NULL,
  category text NOT NULL,
  location text,
  serial_number text
);

CREATE TABLE receiving (
  id bigserial PRIMARY KEY,
  yacht_id text NOT NULL,
  supplier text NOT NULL,
  reference text NOT NULL,
  status text NOT NULL CHECK (status IN ('pending', 'received', 'rejected')),
  received_at timestamptz NOT NULL
);

CREATE TABLE work_orders (
  id bigserial PRIMARY KEY,
  yacht_id text NOT NULL,
  title text NOT NULL,
  status text NOT NULL CHECK (status IN ('open', 'in_progress', 'done')),
  priority text NOT NULL CHECK (priority IN ('low', 'medium', 'high', 'critical')),
  equipment_id bigint REFERENCES equipment (id),
  due_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX receiving_received_at ON receiving (received_at DESC, id DESC);
CREATE INDEX work_orders_status_priority ON work_orders (status, priority);
