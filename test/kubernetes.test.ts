/**
 * The Kubernetes base (deploy/kubernetes, issue 16): rendered as kustomize would, every object
 * validated against the Kubernetes and KEDA schemas, every reference resolved, and the numbers
 * in it checked against the worker's own settings — the shutdown timeout, the HTTP port, the
 * queue's key in Redis, the heap, and `lensfleet plan` for the largest fleet KEDA may scale to.
 * See test/support/kubernetes.ts for what the renderer and the validator cover.
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile, cp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPostgres, onPath, type LocalPostgres } from '../dev/local/servers.js';
import { createTenantDatabase } from '../dev/local/tenant-db.js';
import { queuePrefix } from '../queues/contract.js';
import { createLensQueue, enqueue } from '../queues/producer.js';
import { DEFAULT_POOL_SETTINGS, HTTP_SETTINGS, knownVariables, loadWorkerConfig, POOL_SETTINGS, PROCESS_SETTINGS } from '../src/config.js';
import { DEFAULT_QUEUE_NAME } from '../src/ids.js';
import { effectiveMax } from '../src/pool/registry.js';
import { loadUiConfig } from '../src/ui/config.js';
import { redisClient, redisUrl, ROOT, uniqueId } from './support/harness.js';
import {
  containers,
  externalSecrets,
  find,
  type K8sObject,
  parseManifests,
  podSpec,
  podTemplate,
  referenceErrors,
  renderKustomization,
  schemaErrors,
  unknownFieldErrors,
} from './support/kubernetes.js';

const execFileAsync = promisify(execFile);
const BASE = path.join(ROOT, 'deploy/kubernetes');
const MiB = 1024 * 1024;

// Manifests are read by path in assertions; the schemas and referenceErrors check their shape.
// biome-ignore lint/suspicious/noExplicitAny: see above
type Json = Record<string, any>;

let objects: K8sObject[];
let deployment: Json;
let worker: Json;
let configEnv: Record<string, string>;

/** The worker container's environment as the pod sees it: the ConfigMap, then `env` (which wins). */
function podEnv(): Record<string, string> {
  const env: Record<string, string> = { ...configEnv };
  for (const e of worker.env ?? []) env[e.name] = e.value;
  return env;
}

/** A Kubernetes memory quantity in bytes (the forms the base uses). */
function bytes(quantity: string): number {
  const m = /^(\d+)(Ki|Mi|Gi)?$/.exec(quantity);
  if (!m) throw new Error(`unexpected quantity ${quantity}`);
  return Number(m[1]) * ({ Ki: 1024, Mi: MiB, Gi: 1024 * MiB }[m[2] ?? ''] ?? 1);
}

/**
 * A kustomize to compare the rendering with: `kustomize`, else `kubectl kustomize`, of version 4
 * or later (the first with the `labels` field; Debian 12's kubectl 1.20 embeds kustomize 2.0).
 */
function installedKustomize(): { command?: [string, string]; description: string } {
  const version = (cmd: string, args: string[]) => {
    try {
      return /(?:Kustomize Version: |^)v?(\d+)\./m.exec(execFileSync(cmd, args, { encoding: 'utf8', timeout: 20_000 }))?.[1];
    } catch {
      return undefined;
    }
  };
  for (const [cmd, sub, args] of [
    ['kustomize', 'build', ['version']],
    ['kubectl', 'kustomize', ['version', '--client']],
  ] as const) {
    if (!onPath(cmd)) continue;
    const major = version(cmd, [...args]);
    if (major !== undefined && Number(major) >= 4) return { command: [cmd, sub], description: `${cmd} ${sub}, kustomize v${major}` };
    return { description: `skipped: ${cmd}'s kustomize is older than v4 (no \`labels\`)` };
  }
  return { description: 'skipped: no kustomize or kubectl installed' };
}

beforeAll(async () => {
  objects = await renderKustomization(BASE);
  deployment = find(objects, 'Deployment', 'lensfleet-worker');
  worker = containers(deployment as K8sObject).find((c) => c.name === 'worker') as Json;
  configEnv = find(objects, 'ConfigMap', 'lensfleet-config').data as Record<string, string>;
});

describe('the kustomize base renders', () => {
  it('every object in the lensfleet namespace, labelled part-of lensfleet (pod template too, selectors untouched), the image from images:', () => {
    expect(objects.map((o) => `${o.kind}/${o.metadata.name}`).sort()).toEqual(
      [
        'ConfigMap/lensfleet-config',
        'Deployment/lensfleet-worker',
        'PodDisruptionBudget/lensfleet-worker',
        'ScaledObject/lensfleet-worker',
        'Service/lensfleet-worker-metrics',
        'TriggerAuthentication/lensfleet-redis',
        'Deployment/lensfleet-ui',
        'Service/lensfleet-ui',
      ].sort(),
    );
    for (const o of objects) {
      expect(o.metadata.namespace, o.kind).toBe('lensfleet');
      expect(o.metadata.labels?.['app.kubernetes.io/part-of'], o.kind).toBe('lensfleet');
    }
    expect(deployment.spec.template.metadata.labels['app.kubernetes.io/part-of']).toBe('lensfleet');
    expect(deployment.spec.selector.matchLabels['app.kubernetes.io/part-of']).toBeUndefined();
    expect(worker.image).toBe('lensfleet-worker:local');
  });

  const kustomize = installedKustomize();
  it.skipIf(!kustomize.command)(`as kustomize itself does (${kustomize.description})`, async () => {
    const [cmd = '', sub = ''] = kustomize.command!;
    const { stdout } = await execFileAsync(cmd, [sub, BASE], { timeout: 60_000 });
    const key = (o: K8sObject) => `${o.kind}/${o.metadata.name}`;
    const sorted = (list: K8sObject[]) => [...list].sort((a, b) => key(a).localeCompare(key(b)));
    expect(sorted(parseManifests(stdout, `${cmd} ${sub}`))).toEqual(sorted(objects));
  });

  it('refuses a kustomization field it does not implement, rather than ignore it', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'lf-kustomize-'));
    try {
      await cp(BASE, dir, { recursive: true });
      await writeFile(path.join(dir, 'kustomization.yaml'), 'resources: [configmap.yaml]\npatches:\n  - path: p.yaml\n');
      await expect(renderKustomization(dir)).rejects.toThrow(/uses patches: not implemented/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('validated against the Kubernetes and KEDA schemas', () => {
  it('every object passes its schema (kubernetes-models, @kubernetes-models/keda)', () => {
    expect(objects.flatMap(schemaErrors)).toEqual([]);
  });

  it('no object has a field its schema does not define (typed against the interfaces generated from the schemas)', () => {
    expect(unknownFieldErrors(objects, ROOT)).toEqual([]);
  }, 60_000);

  it('every reference resolves: selectors, probe and Service ports, PDB, ScaledObject target and authentication, ConfigMap, volumes', () => {
    expect(referenceErrors(objects)).toEqual([]);
  });

  // The validator bites: each broken copy fails, naming what is wrong.
  const broken = (mutate: (copy: K8sObject[]) => void) => {
    const copy = structuredClone(objects);
    mutate(copy);
    return copy;
  };
  const workerOf = (copy: K8sObject[]) => containers(find(copy, 'Deployment', 'lensfleet-worker')).find((c) => c.name === 'worker') as Json;

  it('a Deployment with replicas: "two" fails the schema', () => {
    const copy = broken((c) => ((find(c, 'Deployment', 'lensfleet-worker').spec as Json).replicas = 'two'));
    expect(schemaErrors(find(copy, 'Deployment', 'lensfleet-worker'))).toEqual(['Deployment/lensfleet-worker: data/spec/replicas must be integer']);
  });

  it('a probe on a port name the container does not declare fails (the schema accepts any name)', () => {
    const copy = broken((c) => (workerOf(c).livenessProbe.httpGet.port = 'http'));
    expect(schemaErrors(find(copy, 'Deployment', 'lensfleet-worker'))).toEqual([]);
    expect(referenceErrors(copy)).toEqual([
      'Deployment/lensfleet-worker: container worker livenessProbe.httpGet.port "http" is not a port the container declares',
    ]);
  });

  it('a misspelt field (livenesProbe), which the schemas allow, fails the strict check, named', () => {
    const copy = broken((c) => {
      const w = workerOf(c);
      w.livenesProbe = w.livenessProbe;
      delete w.livenessProbe;
    });
    expect(schemaErrors(find(copy, 'Deployment', 'lensfleet-worker'))).toEqual([]);
    const errors = unknownFieldErrors(copy, ROOT);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/^Deployment\/lensfleet-worker: .*'"livenesProbe"' does not exist in type 'IContainer'/);
  }, 60_000);

  it('a ScaledObject with minReplicaCount: "1", or a trigger without its type, fails the KEDA schema', () => {
    const copy = broken((c) => {
      const spec = find(c, 'ScaledObject').spec as Json;
      spec.minReplicaCount = '1';
      delete spec.triggers[0].type;
    });
    const [error] = schemaErrors(find(copy, 'ScaledObject'));
    expect(error).toMatch(/^ScaledObject\/lensfleet-worker: /);
    expect(error).toContain('data/spec/minReplicaCount must be integer');
    expect(error).toContain('data/spec/triggers/0 must have required property type');
  });

  it('a ScaledObject aimed at a missing Deployment, a Service port to nowhere and a PDB selecting nothing fail', () => {
    const copy = broken((c) => {
      (find(c, 'ScaledObject').spec as Json).scaleTargetRef.name = 'lensfleet';
      (find(c, 'Service', 'lensfleet-worker-metrics').spec as Json).ports[0].targetPort = 9000;
      (find(c, 'PodDisruptionBudget').spec as Json).selector.matchLabels = { app: 'lensfleet' };
    });
    expect(referenceErrors(copy).sort()).toEqual([
      'PodDisruptionBudget/lensfleet-worker: spec.selector matches no pod template',
      'ScaledObject/lensfleet-worker: scaleTargetRef lensfleet is not in the base',
      'Service/lensfleet-worker-metrics: port metrics targets 9000, which no selected container declares',
    ]);
  });

  it('a kind without a schema is refused, not skipped', () => {
    expect(schemaErrors({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 's' } })).toEqual([
      'Secret/s: no schema for v1 Secret (add its model to test/support/kubernetes.ts)',
    ]);
  });
});

describe('the worker pod', () => {
  it('liveness on /health, readiness on /ready, on the container port that PORT names (the HTTP setting default)', () => {
    const port = Number(podEnv().PORT);
    expect(port).toBe(HTTP_SETTINGS.port.default);
    expect(worker.ports).toEqual([{ name: 'metrics', containerPort: port, protocol: 'TCP' }]);
    expect(worker.livenessProbe.httpGet).toEqual({ path: '/health', port: 'metrics' });
    expect(worker.startupProbe.httpGet).toEqual({ path: '/health', port: 'metrics' });
    expect(worker.readinessProbe.httpGet).toEqual({ path: '/ready', port: 'metrics' });
  });

  it('terminationGracePeriodSeconds outlasts the drain: 2 × LENSFLEET_SHUTDOWN_TIMEOUT_MS (finish, then wait after abandoning) + 10 s', () => {
    // The base does not override the setting, so the worker's default applies; an override in
    // the pod's environment would be the one to compare with.
    const shutdownMs = Number(podEnv().LENSFLEET_SHUTDOWN_TIMEOUT_MS ?? PROCESS_SETTINGS.shutdownTimeoutMs.default);
    expect(podSpec(deployment as K8sObject)!.terminationGracePeriodSeconds).toBeGreaterThanOrEqual((2 * shutdownMs) / 1000 + 10);
  });

  it('Prometheus annotations name the metrics port and path; the headless Service publishes not-ready workers too', () => {
    const annotations = podTemplate(deployment as K8sObject)!.metadata as Json;
    expect(annotations.annotations).toEqual({ 'prometheus.io/scrape': 'true', 'prometheus.io/port': podEnv().PORT, 'prometheus.io/path': '/metrics' });
    const service = find(objects, 'Service', 'lensfleet-worker-metrics').spec as Json;
    expect(service).toMatchObject({ clusterIP: 'None', publishNotReadyAddresses: true, ports: [{ name: 'metrics', targetPort: 'metrics' }] });
  });

  it('sets only variables the worker reads, valid as its configuration; secrets only as *_FILE paths into a read-only Secret volume', async () => {
    const env = podEnv();
    const known = knownVariables();
    expect(Object.keys(env).filter((name) => !known.has(name) && name !== 'NODE_OPTIONS')).toEqual([]);
    // No secret setting in plain text: REDIS_URL, LENSFLEET_HTTP_TOKEN, … only as <NAME>_FILE.
    for (const name of Object.keys(env)) expect(known.has(`${name}_FILE`), `${name} is a secret: set ${name}_FILE`).toBe(false);
    const mounts = (worker.volumeMounts as Json[]).filter((m) => m.readOnly === true);
    const volumes = podSpec(deployment as K8sObject)!.volumes as Json[];
    const dir = await mkdtemp(path.join(os.tmpdir(), 'lf-k8s-secrets-'));
    try {
      const files: Record<string, string> = {};
      for (const [name, value] of Object.entries(env).filter(([n]) => n.endsWith('_FILE'))) {
        const mount = mounts.find((m) => value.startsWith(`${m.mountPath}/`));
        expect(mount, `${name}=${value} is not under a read-only mount`).toBeDefined();
        const secret = volumes.find((v) => v.name === mount!.name)?.secret as Json | undefined;
        const item = (secret?.items as Json[] | undefined)?.find((i) => `${mount!.mountPath}/${i.path}` === value);
        expect(item, `${name}=${value} is not an item of a Secret volume`).toBeDefined();
        files[name] = path.join(dir, item!.path);
      }
      // The worker's own loader accepts the pod's environment, with stand-in files.
      await writeFile(files.REDIS_URL_FILE!, 'redis://:pw@redis:6379\n');
      await writeFile(files.LENSFLEET_TENANTS_FILE!, JSON.stringify({ tenants: { yK8S: { databaseUrl: 'postgres://r:pw@db:5432/y' } } }));
      const config = loadWorkerConfig({ ...env, ...files });
      expect(config.concurrency).toBe(Number(env.LENSFLEET_CONCURRENCY));
      expect(config.queueName).toBe(env.LENSFLEET_QUEUE);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    expect([...externalSecrets(objects)].map(([name, keys]) => [name, [...keys].sort()])).toEqual([
      ['lensfleet-secrets', ['redis-url', 'tenants.json', 'ui-token']],
      ['lensfleet-redis-scaler', ['address', 'password']],
    ]);
  });

  it('no service links: a Service named lensfleet-… would put LENSFLEET_* variables into the environment', () => {
    const injected = objects.filter((o) => o.kind === 'Service').map((o) => `${o.metadata.name.toUpperCase().replace(/-/g, '_')}_PORT`);
    expect(injected.some((name) => name.startsWith('LENSFLEET_'))).toBe(true);
    expect(podSpec(deployment as K8sObject)!.enableServiceLinks).toBe(false);
  });

  it('runs as non-root under the restricted Pod Security Standard', () => {
    const pod = podSpec(deployment as K8sObject)! as Json;
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
    // The image's USER is a name (node); the kubelet can only verify a number.
    expect(pod.securityContext.runAsUser).toBeGreaterThan(0);
    expect(pod.automountServiceAccountToken).toBe(false);
    for (const c of containers(deployment as K8sObject)) {
      expect(c.securityContext).toMatchObject({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
    }
    // Restricted allows only these volume types.
    for (const v of pod.volumes as Json[])
      expect(
        Object.keys(v).filter((k) => k !== 'name'),
        v.name,
      ).toEqual([expect.stringMatching(/^(secret|emptyDir|configMap|projected)$/)]);
  });

  it('memory: the heap limit NODE_OPTIONS sets fits under the container limit with room outside the heap, and holds the results in flight twice over', async () => {
    const env = podEnv();
    const flags = env.NODE_OPTIONS!.split(/\s+/);
    expect(flags).toContainEqual(expect.stringMatching(/^--max-old-space-size=\d+$/));
    // V8's own figure (old space plus the young generation), as the worker sees it.
    const { stdout } = await execFileAsync(process.execPath, [...flags, '-p', 'require("node:v8").getHeapStatistics().heap_size_limit']);
    const heapLimit = Number(stdout.trim());
    const { requests, limits } = worker.resources as { requests: Record<string, string>; limits: Record<string, string> };
    // Room outside the V8 heap: socket and result Buffers, code, thread stacks.
    expect(bytes(limits.memory!) - heapLimit).toBeGreaterThanOrEqual(192 * MiB);
    expect(bytes(requests.memory!)).toBeLessThanOrEqual(bytes(limits.memory!));
    expect(requests.cpu).toBeDefined();
    expect(limits.cpu, 'no CPU limit: throttling stalls lock renewals and probes').toBeUndefined();
    // Row data of the jobs running at once, kept as JS values and serialised for BullMQ.
    const inFlight = Number(env.LENSFLEET_CONCURRENCY ?? PROCESS_SETTINGS.concurrency.default) * POOL_SETTINGS.maxResultBytes.default;
    expect(heapLimit).toBeGreaterThanOrEqual(2 * inFlight);
  });
});

describe('the queue UI pod', () => {
  const ui = () => find(objects, 'Deployment', 'lensfleet-ui');
  const container = () => containers(ui()).find((c) => c.name === 'ui') as Json;

  it('runs the Procfile’s ui process from the worker image, probes /health on the port it declares and the UI listens on', async () => {
    const c = container();
    const procfileUi = /^ui: (.+)$/m.exec(await readFile(path.join(ROOT, 'Procfile'), 'utf8'))![1]!.split(' ');
    expect(c.command).toEqual(procfileUi);
    expect(c.image).toBe(worker.image);
    const env = Object.fromEntries((c.env as Json[]).map((e) => [e.name, e.value]));
    const port = (c.ports as Json[]).find((p) => p.name === 'http')!.containerPort;
    expect(Number(env.LENSFLEET_UI_PORT)).toBe(port);
    for (const probe of [c.livenessProbe, c.readinessProbe]) expect(probe.httpGet).toEqual({ path: '/health', port: 'http' });
    const service = find(objects, 'Service', 'lensfleet-ui').spec as Json;
    expect(service.ports[0].targetPort).toBe('http');
    expect(service.selector).toEqual((ui().spec as Json).selector.matchLabels);
  });

  it('its settings, with the token and Redis URL as files from the Secret, load with the UI’s own loader (which refuses a reachable UI without a token)', async () => {
    const c = container();
    const env: Record<string, string> = { ...configEnv, ...Object.fromEntries((c.env as Json[]).map((e) => [e.name, e.value])) };
    const mount = (c.volumeMounts as Json[]).find((m) => m.readOnly === true)!;
    const items = ((podSpec(ui())!.volumes as Json[]).find((v) => v.name === mount.name)!.secret as Json).items as Json[];
    const dir = await mkdtemp(path.join(os.tmpdir(), 'lf-k8s-ui-'));
    try {
      const files: Record<string, string> = {};
      for (const [name, value] of Object.entries(env).filter(([n]) => n.endsWith('_FILE'))) {
        const item = items.find((i) => `${mount.mountPath}/${i.path}` === value);
        expect(item, `${name}=${value} is not an item of the Secret volume`).toBeDefined();
        files[name] = path.join(dir, item!.path);
      }
      expect(Object.keys(files).sort()).toEqual(['LENSFLEET_UI_TOKEN_FILE', 'REDIS_URL_FILE']);
      await writeFile(files.REDIS_URL_FILE!, 'redis://:pw@redis:6379\n');
      await writeFile(files.LENSFLEET_UI_TOKEN_FILE!, 'a-ui-token-of-enough-length\n');
      const config = loadUiConfig({ ...env, ...files });
      expect(config.queueName).toBe(loadWorkerConfig({ ...configEnv, REDIS_URL: 'redis://r:6379', LENSFLEET_TENANTS: '' }).queueName);
      expect(config.token?.reveal()).toBe('a-ui-token-of-enough-length');
      expect(config.readWrite).toBe(false);
      const { LENSFLEET_UI_TOKEN_FILE: _, ...noToken } = env;
      expect(() => loadUiConfig({ ...noToken, REDIS_URL_FILE: files.REDIS_URL_FILE! })).toThrow(/LENSFLEET_UI_TOKEN is not set/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('runs as non-root under the restricted Pod Security Standard, as the worker does', () => {
    const pod = podSpec(ui())! as Json;
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 1000, seccompProfile: { type: 'RuntimeDefault' } });
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(pod.enableServiceLinks).toBe(false);
    expect(container().securityContext).toMatchObject({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
  });
});

describe('autoscaling on queue depth (KEDA)', () => {
  const scaled = () => find(objects, 'ScaledObject').spec as Json;

  it("reads BullMQ's wait list of the configured queue, bull:<queue>:wait, with a per-worker target of at least one worker's concurrency", () => {
    const queue = podEnv().LENSFLEET_QUEUE ?? DEFAULT_QUEUE_NAME;
    const [trigger] = scaled().triggers as Json[];
    expect(trigger).toMatchObject({ type: 'redis', authenticationRef: { name: 'lensfleet-redis' } });
    expect(trigger!.metadata.listName).toBe(`${queuePrefix(queue, false)}:${queue}:wait`);
    expect(Number(trigger!.metadata.listLength)).toBeGreaterThanOrEqual(Number(podEnv().LENSFLEET_CONCURRENCY));
    expect(scaled().minReplicaCount).toBeGreaterThanOrEqual(1);
    expect(scaled().scaleTargetRef.name).toBe(deployment.metadata.name);
  });

  it('that list counts waiting jobs and misses prioritized and delayed ones (real Redis, BullMQ 5)', async () => {
    const name = uniqueId('q_k8s');
    const queue = createLensQueue({ connection: { url: redisUrl() }, name });
    const redis = redisClient();
    try {
      const req = { tenant: 'yK8S', lens: 'receiving.recent', params: { limit: 1 } };
      await enqueue(queue, req);
      await enqueue(queue, req);
      await enqueue(queue, req, { priority: 5 });
      await enqueue(queue, req, { delay: 60_000 });
      // The trigger's LLEN, on the key the manifest names for this queue.
      const listName = `${queuePrefix(name, false)}:${name}:wait`;
      expect(await redis.llen(listName)).toBe(2);
      expect(await redis.zcard(`${queuePrefix(name, false)}:${name}:prioritized`)).toBe(1);
      expect(await redis.zcard(`${queuePrefix(name, false)}:${name}:delayed`)).toBe(1);
    } finally {
      await queue.obliterate({ force: true }).catch(() => {});
      await queue.close();
      redis.disconnect();
    }
  });

  describe('maxReplicaCount and lensfleet plan', () => {
    let server: LocalPostgres;
    let env: Record<string, string>;
    const tenant = uniqueId('yK8S');

    beforeAll(async () => {
      // A server of Postgres's default size: max_connections 100, 3 reserved for superusers.
      server = await startPostgres({ fsync: false, maxConnections: 100 });
      const db = await createTenantDatabase(server.adminUrl(), tenant, { rows: 1 });
      env = { ...podEnv(), LENSFLEET_TENANTS: tenant, [`${tenant}_DATABASE_URL`]: db.databaseUrl };
      for (const name of Object.keys(env)) if (name.endsWith('_FILE') || name === 'NODE_OPTIONS') delete env[name];
    }, 120_000);
    afterAll(async () => {
      await server?.stop();
    }, 60_000);

    function plan(workers: number): Promise<{ code: number | null; output: string }> {
      return new Promise((resolve, reject) => {
        const proc = spawn(process.execPath, [path.join(ROOT, 'dist/cli/lensfleet.js'), 'plan', '--workers', String(workers)], {
          env: { PATH: process.env.PATH ?? '', ...env },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let output = '';
        proc.stdout.on('data', (d: Buffer) => (output += d.toString()));
        proc.stderr.on('data', (d: Buffer) => (output += d.toString()));
        proc.on('error', reject);
        proc.on('exit', (code) => resolve({ code, output }));
      });
    }

    it('maxReplicaCount, plus the worker a rollout or an eviction drains meanwhile, fits a default Postgres; twice as many do not', async () => {
      const { maxReplicaCount } = scaled();
      const rolling = deployment.spec.strategy.rollingUpdate as { maxSurge: number; maxUnavailable: number };
      const pdb = find(objects, 'PodDisruptionBudget').spec as Json;
      // A draining pod no longer counts as a replica but still holds its connections.
      const peak = maxReplicaCount + rolling.maxSurge + Math.max(rolling.maxUnavailable, pdb.maxUnavailable);
      // The base sets no pool sizes: every tenant gets the defaults (min(20 + 5, concurrency)).
      const perWorker = effectiveMax({ id: tenant, backend: 'pg', pooling: true, pool: DEFAULT_POOL_SETTINGS }, Number(env.LENSFLEET_CONCURRENCY));
      expect(peak * perWorker).toBeLessThanOrEqual(100 - 3);
      const fits = await plan(peak);
      expect(fits.code, fits.output).toBe(0);
      expect(fits.output).toContain(`plan for ${peak} workers × concurrency ${env.LENSFLEET_CONCURRENCY}`);
      const overrun = await plan(2 * peak);
      expect(overrun.code, overrun.output).toBe(1);
      expect(overrun.output).toContain('warning:');
    }, 60_000);
  });
});
