/**
 * The layer rules of lensfleet (docs/ARCHITECTURE.md), checked in CI by `npm run lint`.
 *
 *   queues/   the job contract producers import      → src/ids, src/errors only
 *   src/      the library a worker loads             → never workers/, cli/, dev/, scripts/, bench/, test/
 *   src/pool/ tenant pools and the registry          → never lenses, metrics, HTTP, BullMQ, the fleet (Redis)
 *             its insides (connection sources, ledger, housekeeping, pooled client) are
 *             imported only from src/pool/ (and tests): the rest sees TenantPool, the registry, the budget
 *   workers/  process entry points                   → src/, queues/
 *   cli/      the operator's command line            → src/, queues/, and the worker entry point
 *             (workers/lens-worker.ts, which `lensfleet worker` runs in its process)
 *   dev/      local servers and demo databases       → never workers/ or cli/
 * and no cycles anywhere.
 */
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-cycles',
      severity: 'error',
      comment: 'A module must not import (directly or not) a module that imports it.',
      from: {},
      to: { circular: true },
    },
    {
      name: 'queues-only-ids-and-errors',
      severity: 'error',
      comment: 'The contract producers import depends only on the shared ids and error codes, not on worker code.',
      from: { path: '^queues/' },
      to: { path: '^(src|workers|cli|dev|scripts|bench|test)/', pathNot: '^src/(ids|errors)\\.ts$' },
    },
    {
      name: 'library-not-above-itself',
      severity: 'error',
      comment: 'The library never imports process entry points, tooling, benchmarks or tests.',
      from: { path: '^src/' },
      to: { path: '^(workers|cli|dev|scripts|bench|test)/' },
    },
    {
      name: 'library-not-queues-sdk',
      severity: 'error',
      comment: 'The library does not import the producer SDK (queues/producer); it may share the contract.',
      from: { path: '^src/' },
      to: { path: '^queues/producer' },
    },
    {
      name: 'pool-is-generic',
      severity: 'error',
      comment:
        'Pools know tenants and connections, not lenses, metrics, HTTP, BullMQ or the fleet in Redis (a pool sees the fleet connection cap only through PoolLeases).',
      from: { path: '^src/pool/' },
      to: { path: '^(src/(lens|lenses|metrics|metrics-tenants|http|execute|fleet/)|node_modules/(bullmq|prom-client|ioredis))' },
    },
    {
      name: 'pool-insides-stay-inside',
      severity: 'error',
      comment:
        'The connection sources, the ledger, the housekeeping tasks and the pooled client are how a tenant pool works, not its API: only src/pool/ (and its tests) import them.',
      from: { pathNot: '^(src/pool|test)/' },
      to: { path: '^src/pool/(source|pooled-source|unpooled-source|ledger|housekeeping|pooled-client)\\.ts$' },
    },
    {
      name: 'cli-runs-only-the-worker-entry',
      severity: 'error',
      comment: '`lensfleet worker` imports the worker entry point (its signal handlers, its exit codes); nothing else of workers/ is the CLI\'s.',
      from: { path: '^cli/' },
      to: { path: '^workers/', pathNot: '^workers/lens-worker\\.ts$' },
    },
    {
      name: 'dev-tooling-not-processes',
      severity: 'error',
      comment: 'Local servers and demo databases do not depend on process entry points.',
      from: { path: '^dev/' },
      to: { path: '^(workers|cli|scripts|bench|test)/' },
    },
    {
      name: 'workers-not-tooling',
      severity: 'error',
      comment: 'What a worker process loads must not include dev tooling, benchmarks or tests.',
      from: { path: '^(workers|cli)/' },
      to: { path: '^(dev|scripts|bench|test)/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'], extensions: ['.ts', '.js'] },
    exclude: { path: '^(dist|node_modules)/' },
  },
};
