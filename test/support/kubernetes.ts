/**
 * The Kubernetes base (deploy/kubernetes) as a cluster would receive it, and the checks a cluster
 * would make.
 *
 * Rendering: neither npm nor Debian ships a current kustomize (Debian 12's kubernetes-client is
 * kubectl 1.20, whose kustomize 2.0 predates the `labels` field), so `renderKustomization`
 * implements the part of kustomize the base uses — `resources` (files), `namespace`, `labels`,
 * `images` — and refuses any other field, so the base cannot outgrow it silently. Where a
 * `kubectl` or `kustomize` binary is installed, the test compares this rendering with its.
 *
 * Validation: every object against the Kubernetes OpenAPI schemas (npm `kubernetes-models`) and
 * KEDA's CRD schemas (`@kubernetes-models/keda`): ajv validators generated from them, offline
 * (`schemaErrors`). The schemas allow unknown fields, so `unknownFieldErrors` type-checks each
 * object against the TypeScript interfaces generated from the same schemas (kubeconform's
 * `-strict`). Neither can see references between fields or objects; `referenceErrors` checks
 * those (what the API server would accept and the kubelet or KEDA then fail on: a probe on an
 * undeclared port name, a selector that matches no pod, a ScaledObject aimed at a missing
 * Deployment).
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { ScaledObject, TriggerAuthentication } from '@kubernetes-models/keda/keda.sh/v1alpha1';
import { Deployment } from 'kubernetes-models/apps/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { ConfigMap, Service } from 'kubernetes-models/v1';
import ts from 'typescript';
import { parse, parseAllDocuments } from 'yaml';

/** A rendered object; fields are read through the typed helpers below. */
export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [field: string]: unknown;
}

type Json = Record<string, unknown>;

/** Kustomization fields this renderer implements. */
const SUPPORTED_FIELDS = new Set(['apiVersion', 'kind', 'namespace', 'resources', 'labels', 'images']);
/** Kinds without a namespace (kustomize leaves them alone). */
const CLUSTER_SCOPED = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'CustomResourceDefinition', 'PriorityClass', 'ClusterTriggerAuthentication']);
/** Kinds whose pod template is at spec.template. */
const WORKLOADS = new Set(['Deployment', 'StatefulSet', 'DaemonSet', 'ReplicaSet', 'Job']);

interface LabelsEntry {
  pairs?: Record<string, string>;
  includeSelectors?: boolean;
  includeTemplates?: boolean;
}
interface ImageEntry {
  name: string;
  newName?: string;
  newTag?: string;
  digest?: string;
}
interface Kustomization {
  namespace?: string;
  resources?: string[];
  labels?: LabelsEntry[];
  images?: ImageEntry[];
}

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Parse a multi-document YAML file into its objects (empty documents skipped). */
export function parseManifests(text: string, source: string): K8sObject[] {
  const out: K8sObject[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) throw new Error(`${source}: ${doc.errors.map((e) => e.message).join('; ')}`);
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) continue;
    if (!isObject(value) || typeof value.kind !== 'string' || typeof value.apiVersion !== 'string' || !isObject(value.metadata)) {
      throw new Error(`${source}: a document without apiVersion, kind and metadata`);
    }
    out.push(value as unknown as K8sObject);
  }
  return out;
}

/** `kustomize build <dir>` for the fields in SUPPORTED_FIELDS; anything else is refused. */
export async function renderKustomization(dir: string): Promise<K8sObject[]> {
  const k = parse(await readFile(path.join(dir, 'kustomization.yaml'), 'utf8')) as Kustomization & Json;
  const unsupported = Object.keys(k).filter((f) => !SUPPORTED_FIELDS.has(f));
  if (unsupported.length > 0) {
    throw new Error(
      `kustomization.yaml uses ${unsupported.join(', ')}: not implemented by test/support/kubernetes.ts (extend it, and compare with kubectl kustomize)`,
    );
  }
  const objects: K8sObject[] = [];
  for (const resource of k.resources ?? []) {
    if (!/^[\w.-]+\.ya?ml$/.test(resource)) throw new Error(`resource ${resource}: only YAML files beside kustomization.yaml are implemented`);
    objects.push(...parseManifests(await readFile(path.join(dir, resource), 'utf8'), resource));
  }
  for (const o of objects) {
    if (k.namespace && !CLUSTER_SCOPED.has(o.kind)) o.metadata.namespace = k.namespace;
    for (const entry of k.labels ?? []) {
      if (entry.includeSelectors) throw new Error('labels with includeSelectors: not implemented');
      o.metadata.labels = { ...o.metadata.labels, ...entry.pairs };
      const template = podTemplate(o);
      if (entry.includeTemplates && template) {
        template.metadata ??= {};
        const meta = template.metadata as Json;
        meta.labels = { ...(meta.labels as Record<string, string> | undefined), ...entry.pairs };
      }
    }
    for (const c of containers(o)) c.image = setImage(String(c.image), k.images ?? []);
  }
  return objects;
}

/** kustomize's image transformer: `name[:tag][@digest]` whose name matches an entry. */
function setImage(image: string, entries: readonly ImageEntry[]): string {
  const m = /^([^@]+?)(?::([\w][\w.-]{0,127}))?(?:@(sha256:[0-9a-f]{64}))?$/.exec(image);
  if (!m) return image;
  const [, name = '', tag, digest] = m;
  const entry = entries.find((e) => e.name === name);
  if (!entry) return image;
  const newTag = entry.newTag ?? (entry.digest ? undefined : tag);
  const newDigest = entry.digest ?? (entry.newTag ? undefined : digest);
  return `${entry.newName ?? name}${newTag ? `:${newTag}` : ''}${newDigest ? `@${newDigest}` : ''}`;
}

// ---------------------------------------------------------------------------------------------
// Typed access

export function podTemplate(o: K8sObject): Json | undefined {
  if (!WORKLOADS.has(o.kind)) return undefined;
  const spec = o.spec;
  return isObject(spec) && isObject(spec.template) ? spec.template : undefined;
}

export function podSpec(o: K8sObject): Json | undefined {
  const t = podTemplate(o);
  return t && isObject(t.spec) ? t.spec : undefined;
}

/** The containers and init containers of a workload's pod template (mutable: the renderer sets images). */
export function containers(o: K8sObject): Json[] {
  const spec = podSpec(o);
  if (!spec) return [];
  return [spec.containers, spec.initContainers].flatMap((list) => (Array.isArray(list) ? list.filter(isObject) : []));
}

export function find(objects: readonly K8sObject[], kind: string, name?: string): K8sObject {
  const found = objects.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  if (found.length !== 1) throw new Error(`expected one ${kind}${name ? ` ${name}` : ''}, found ${found.length}`);
  return found[0]!;
}

// ---------------------------------------------------------------------------------------------
// Schemas

interface Model {
  validate(): void;
}
type ModelClass = new (data: never) => Model;

/**
 * apiVersion/kind → its model (ajv validator) and its TypeScript interface (module, name), both
 * generated from the official schemas. A kind not here is refused.
 */
const MODELS: Record<string, { model: ModelClass; type: readonly [string, string] }> = {
  'v1/ConfigMap': { model: ConfigMap, type: ['kubernetes-models/v1/ConfigMap', 'IConfigMap'] },
  'v1/Service': { model: Service, type: ['kubernetes-models/v1/Service', 'IService'] },
  'apps/v1/Deployment': { model: Deployment, type: ['kubernetes-models/apps/v1/Deployment', 'IDeployment'] },
  'policy/v1/PodDisruptionBudget': { model: PodDisruptionBudget, type: ['kubernetes-models/policy/v1/PodDisruptionBudget', 'IPodDisruptionBudget'] },
  'keda.sh/v1alpha1/ScaledObject': { model: ScaledObject, type: ['@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject', 'IScaledObject'] },
  'keda.sh/v1alpha1/TriggerAuthentication': {
    model: TriggerAuthentication,
    type: ['@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication', 'ITriggerAuthentication'],
  },
};

/** Schema violations of one object, as `Kind/name: data/spec/… must be …`; empty when valid. */
export function schemaErrors(o: K8sObject): string[] {
  const where = `${o.kind}/${o.metadata?.name}`;
  const Model = MODELS[`${o.apiVersion}/${o.kind}`]?.model;
  if (!Model) return [`${where}: no schema for ${o.apiVersion} ${o.kind} (add its model to test/support/kubernetes.ts)`];
  try {
    new Model(structuredClone(o) as never).validate();
    return [];
  } catch (err) {
    return [`${where}: ${(err as Error).message}`];
  }
}

/**
 * Fields the schemas do not define (a misspelt `livenesProbe` is valid JSON Schema — Kubernetes'
 * schemas allow unknown properties — and the API server drops it with at most a warning). The
 * models' TypeScript interfaces are generated from the same schemas without index signatures, so
 * each object, written as a literal of its interface, is type-checked by the TypeScript compiler:
 * its excess-property check names every field the schema does not know (kubeconform's `-strict`).
 * The literal lives in memory, at a path under the repository so that the packages resolve.
 */
export function unknownFieldErrors(objects: readonly K8sObject[], root: string): string[] {
  const file = path.join(root, 'test', '__kubernetes_strict__.ts');
  const lines: string[] = [];
  const owners: string[] = [];
  objects.forEach((o, i) => {
    const type = MODELS[`${o.apiVersion}/${o.kind}`]?.type;
    if (!type) return;
    lines.push(`import type { ${type[1]} as T${i} } from '${type[0]}';`);
  });
  const firstObjectLine = lines.length;
  objects.forEach((o, i) => {
    if (!MODELS[`${o.apiVersion}/${o.kind}`]) return;
    owners[lines.length] = `${o.kind}/${o.metadata.name}`;
    lines.push(`export const o${i}: T${i} = ${JSON.stringify(o)};`);
  });
  const text = `${lines.join('\n')}\n`;
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    types: [],
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
  };
  const host = ts.createCompilerHost(options);
  const { getSourceFile, fileExists, readFile: read } = host;
  host.getSourceFile = (name, language, ...rest) =>
    name === file ? ts.createSourceFile(name, text, language) : getSourceFile.call(host, name, language, ...rest);
  host.fileExists = (name) => name === file || fileExists.call(host, name);
  host.readFile = (name) => (name === file ? text : read.call(host, name));
  const program = ts.createProgram([file], options, host);
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const message = ts.flattenDiagnosticMessageText(d.messageText, ' ');
    if (d.file?.fileName !== file || d.start === undefined) return `TypeScript: ${message}`;
    const line = d.file.getLineAndCharacterOfPosition(d.start).line;
    return line >= firstObjectLine ? `${owners[line] ?? '?'}: ${message}` : `import: ${message}`;
  });
}

// ---------------------------------------------------------------------------------------------
// References between fields and objects

const labelsOf = (v: unknown): Record<string, string> => (isObject(v) ? (v as Record<string, string>) : {});
const matches = (selector: Record<string, string>, labels: Record<string, string>) =>
  Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v);
const listOf = (v: unknown): Json[] => (Array.isArray(v) ? v.filter(isObject) : []);

/** The pods (workload templates) a selector picks. */
function podsSelected(objects: readonly K8sObject[], selector: Record<string, string>): K8sObject[] {
  return objects.filter((o) => {
    const meta = podTemplate(o)?.metadata;
    return isObject(meta) && matches(selector, labelsOf(meta.labels));
  });
}

/** Does a port reference (a number, or an IANA name) name a port the containers declare? */
function portDeclared(ref: unknown, ports: readonly Json[]): boolean {
  if (typeof ref === 'number') return ports.some((p) => p.containerPort === ref);
  if (typeof ref === 'string') return ports.some((p) => p.name === ref);
  return false;
}

/**
 * What a schema cannot see: every reference in the base resolves. Returns one message per broken
 * reference; empty when all resolve. Secrets are external (never committed): their names are
 * returned by `externalSecrets`, not checked here.
 */
export function referenceErrors(objects: readonly K8sObject[]): string[] {
  const errors: string[] = [];
  const named = (kind: string, name: unknown) => objects.some((o) => o.kind === kind && o.metadata.name === name);

  for (const o of objects) {
    const where = `${o.kind}/${o.metadata.name}`;
    const spec = isObject(o.spec) ? o.spec : {};
    const template = podTemplate(o);
    if (template) {
      const selector = labelsOf(isObject(spec.selector) ? spec.selector.matchLabels : undefined);
      const labels = labelsOf(isObject(template.metadata) ? template.metadata.labels : undefined);
      if (!matches(selector, labels)) errors.push(`${where}: spec.selector.matchLabels does not match the pod template's labels`);
      const pod = podSpec(o) ?? {};
      const volumes = new Set(listOf(pod.volumes).map((v) => v.name));
      for (const c of containers(o)) {
        const ports = listOf(c.ports);
        for (const probe of ['startupProbe', 'livenessProbe', 'readinessProbe']) {
          const p = c[probe];
          if (!isObject(p)) continue;
          for (const handler of ['httpGet', 'tcpSocket', 'grpc']) {
            const h = p[handler];
            if (isObject(h) && !portDeclared(h.port, ports)) {
              errors.push(`${where}: container ${String(c.name)} ${probe}.${handler}.port ${JSON.stringify(h.port)} is not a port the container declares`);
            }
          }
        }
        for (const ref of listOf(c.envFrom)) {
          const cm = ref.configMapRef;
          if (isObject(cm) && cm.optional !== true && !named('ConfigMap', cm.name))
            errors.push(`${where}: envFrom ConfigMap ${String(cm.name)} is not in the base`);
        }
        for (const m of listOf(c.volumeMounts)) {
          if (!volumes.has(m.name)) errors.push(`${where}: volumeMount ${String(m.name)} names no volume`);
        }
        const annotations = isObject(template.metadata) ? labelsOf(template.metadata.annotations) : {};
        const scrapePort = annotations['prometheus.io/port'];
        if (scrapePort !== undefined && !ports.some((p) => String(p.containerPort) === scrapePort)) {
          errors.push(`${where}: prometheus.io/port ${scrapePort} is not a container port`);
        }
      }
    }
    if (o.kind === 'Service') {
      const pods = podsSelected(objects, labelsOf(spec.selector));
      if (pods.length === 0) errors.push(`${where}: spec.selector matches no pod template`);
      const ports = pods.flatMap((p) => containers(p).flatMap((c) => listOf(c.ports)));
      for (const p of listOf(spec.ports)) {
        if (!portDeclared(p.targetPort ?? p.port, ports))
          errors.push(`${where}: port ${String(p.name)} targets ${JSON.stringify(p.targetPort)}, which no selected container declares`);
      }
    }
    if (o.kind === 'PodDisruptionBudget') {
      const selector = labelsOf(isObject(spec.selector) ? spec.selector.matchLabels : undefined);
      if (podsSelected(objects, selector).length === 0) errors.push(`${where}: spec.selector matches no pod template`);
    }
    if (o.kind === 'ScaledObject') {
      const target = isObject(spec.scaleTargetRef) ? spec.scaleTargetRef : {};
      if (!named(String(target.kind ?? 'Deployment'), target.name)) errors.push(`${where}: scaleTargetRef ${String(target.name)} is not in the base`);
      for (const t of listOf(spec.triggers)) {
        const auth = t.authenticationRef;
        if (isObject(auth) && !named(String(auth.kind ?? 'TriggerAuthentication'), auth.name)) {
          errors.push(`${where}: trigger ${String(t.type)} authenticationRef ${String(auth.name)} is not in the base`);
        }
      }
    }
  }
  return errors;
}

/** Secrets the base refers to (the operator creates them; README "Kubernetes"), with the keys read. */
export function externalSecrets(objects: readonly K8sObject[]): Map<string, Set<string>> {
  const secrets = new Map<string, Set<string>>();
  const add = (name: unknown, key: unknown) => {
    const keys = secrets.get(String(name)) ?? new Set<string>();
    if (key !== undefined) keys.add(String(key));
    secrets.set(String(name), keys);
  };
  for (const o of objects) {
    for (const v of listOf(podSpec(o)?.volumes)) {
      if (isObject(v.secret)) for (const item of listOf(v.secret.items)) add(v.secret.secretName, item.key);
    }
    if (o.kind === 'TriggerAuthentication' && isObject(o.spec)) for (const r of listOf(o.spec.secretTargetRef)) add(r.name, r.key);
  }
  return secrets;
}
