// A small helper for writing stsguard policies in JavaScript.
//
// It turns the three WIT exports of `stsguard:policy/policy@0.3.0` into a
// `Policy` that works with plain JavaScript values:
//
// - settings are described by their defaults: a missing key takes the default,
//   an unknown key or a value of another type is refused (like the Rust SDK's
//   `deny_unknown_fields`), and `validate(settings)` checks the rest (throw);
// - `evaluate(request, settings)` gets a `Request` (the object already parsed)
//   and returns a `Verdict` built with `accept()`, `reject()`, `set()` and
//   `warn()`;
// - ANY exception thrown by your code (`throw new Error(...)`, a TypeError from
//   reading `undefined.spec`, ...) becomes the WIT `result` error, with its
//   type, message and where it was thrown: the host then applies the policy's
//   `failurePolicy`. Without this wrapper componentize-js traps the instance
//   (`wasm unreachable`) on any thrown Error and the reason is lost;
// - `getObject()` and `listObjects()` read cluster objects of the kinds the
//   policy declares in `reads` (the WIT import `cluster`); a read with no
//   answer throws `ReadError`.
//
// The same module runs under Node for unit tests (`npm test`): the host's log
// then goes to stderr (see test/hooks.js), and reads are answered by the fake
// cluster a test installs (`withCluster([...], () => ...)`). Keep this file as
// it is; your policy lives in policy.js.

import { log as hostLog } from "stsguard:policy/host@0.3.0";
import { getObject as hostGetObject, listObjects as hostListObjects } from "stsguard:policy/cluster@0.3.0";

/** Throw it when the policy cannot decide: its message becomes the WIT error
 * as it is, without type or location. */
export class PolicyError extends Error {
  constructor(message) {
    super(message);
    this.name = "PolicyError";
  }
}

/** Settings that are refused; any Error thrown by `validate` works too. */
export class SettingsError extends Error {
  constructor(message) {
    super(message);
    this.name = "SettingsError";
  }
}

// ---------------------------------------------------------------------------
// Logging

const LEVELS = ["trace", "debug", "info", "warn", "error"];

/** `log.info("...")`: a line in the host's structured log, tagged with the
 * policy and the request's uid. One evaluation may write 100 lines or 16 KiB
 * (console.log included); the host drops the rest. */
export const log = Object.freeze({
  write(level, message) {
    if (!LEVELS.includes(level)) {
      throw new TypeError(`log level must be one of ${LEVELS.join(", ")}, not ${level}`);
    }
    hostLog(level, String(message));
  },
  trace: (message) => log.write("trace", message),
  debug: (message) => log.write("debug", message),
  info: (message) => log.write("info", message),
  warn: (message) => log.write("warn", message),
  error: (message) => log.write("error", message),
});

// ---------------------------------------------------------------------------
// Small JSON helpers

/** `get(obj, ["spec", "replicas"], 1)`: the value at `path`, or `fallback`
 * when a step is missing or `null` (Kubernetes treats both alike). */
export function get(value, path, fallback = undefined) {
  for (const step of path) {
    if (value === null || typeof value !== "object") return fallback;
    value = value[step];
    if (value === undefined || value === null) return fallback;
  }
  return value;
}

/** `pointer("metadata", "annotations", "example.com/key")` is
 * `/metadata/annotations/example.com~1key` (RFC 6901). */
export function pointer(...steps) {
  return steps.map((s) => "/" + String(s).replaceAll("~", "~0").replaceAll("/", "~1")).join("");
}

// ---------------------------------------------------------------------------
// Verdict

/** What `evaluate` returns. Build it with the static methods and chain:
 *
 *     Verdict.accept()
 *     Verdict.reject("spec.replicas is 50, more than ...")
 *     Verdict.accept().set("/spec/minReadySeconds", 10).warn("set spec.minReadySeconds to 10")
 */
export class Verdict {
  constructor(allowed = true, message = undefined) {
    this.allowed = allowed;
    this.message = message;
    this.warnings = [];
    /** [pointer, value] pairs, applied in order by the host. */
    this.fields = [];
  }

  /** Allow the object unchanged (until `set` is called). */
  static accept() {
    return new Verdict(true);
  }

  /** Deny: the message reaches the user as `policy <name> denied StatefulSet
   * <ns>/<name>: <message>`. Say what is wrong and how to fix it. */
  static reject(message) {
    return new Verdict(false, String(message));
  }

  /** Allow with the value at `pointer` (RFC 6901, see `pointer()`) set to
   * `value` (anything JSON.stringify takes). Objects missing on the way are
   * created; array elements must exist; "" is the whole object. A value
   * already in place changes nothing. */
  set(where, value) {
    if (!this.allowed) throw new PolicyError(`Verdict.set(${JSON.stringify(where)}) on a verdict that rejects`);
    if (typeof where !== "string" || (where !== "" && !where.startsWith("/"))) {
      throw new PolicyError(`Verdict.set: ${JSON.stringify(where)} is not a JSON pointer (it starts with \`/\`)`);
    }
    if (value === undefined) throw new PolicyError(`Verdict.set(${JSON.stringify(where)}): the value is undefined`);
    this.fields.push([where, value]);
    return this;
  }

  /** Add a warning (kubectl prints it). Explain every change you make. */
  warn(warning) {
    this.warnings.push(String(warning));
    return this;
  }

  /** The WIT `verdict` record, as componentize-js lowers it. */
  toWit() {
    return {
      allowed: this.allowed,
      message: this.message,
      warnings: this.warnings,
      mutation: this.fields.length
        ? { tag: "set", val: this.fields.map(([p, v]) => ({ pointer: p, value: JSON.stringify(v) })) }
        : undefined,
    };
  }
}

// ---------------------------------------------------------------------------
// Request

/** One CREATE or UPDATE of an object the policy targets. */
export class Request {
  constructor(raw, object) {
    /** The AdmissionRequest as the API server sent it, without `object`. */
    this.raw = raw;
    /** The object, as the policies before this one left it. */
    this.object = object;
  }
  get uid() { return this.raw.uid ?? ""; }
  /** `CREATE` or `UPDATE`. */
  get operation() { return this.raw.operation ?? ""; }
  /** `{group: "apps", version: "v1", kind: "StatefulSet"}`. */
  get kind() { return this.raw.kind ?? {}; }
  /** The object's name; `prefix*` for a `generateName`. */
  get name() {
    const name = this.raw.name || get(this.object, ["metadata", "name"]);
    if (name) return name;
    const prefix = get(this.object, ["metadata", "generateName"]);
    return prefix ? `${prefix}*` : "";
  }
  get namespace() { return this.raw.namespace ?? ""; }
  get dryRun() { return Boolean(this.raw.dryRun); }
  get username() { return get(this.raw, ["userInfo", "username"], ""); }
  /** The stored object of an UPDATE; undefined on CREATE. */
  get oldObject() { return this.raw.oldObject ?? undefined; }
}

// ---------------------------------------------------------------------------
// Settings

function typeName(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  return typeof value;
}

function expected(keys) {
  // serde's wording, so JavaScript and Rust policies read alike.
  const q = keys.map((k) => `\`${k}\``);
  if (q.length === 0) return "there are no fields";
  if (q.length === 1) return `expected ${q[0]}`;
  if (q.length === 2) return `expected ${q[0]} or ${q[1]}`;
  return `expected one of ${q.join(", ")}`;
}

const isPlainObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

/** Checks `data` against the shape of `defaults` and fills in what is missing. */
function merge(defaults, data, prefix) {
  const out = JSON.parse(JSON.stringify(defaults));
  for (const [key, value] of Object.entries(data)) {
    const path = prefix + key;
    if (!Object.hasOwn(defaults, key)) {
      const where = prefix ? `\`${prefix.slice(0, -1)}\`: ` : "";
      throw new SettingsError(`${where}unknown field \`${key}\`, ${expected(Object.keys(defaults))}`);
    }
    const want = defaults[key];
    // `null` as a default accepts anything (an optional setting).
    if (want === null) {
      out[key] = value;
      continue;
    }
    const wrong = (what) =>
      new SettingsError(`\`${path}\`: expected ${what}, not ${value === null ? "null" : `${typeName(value)} ${JSON.stringify(value)}`}`);
    if (isPlainObject(want)) {
      if (!isPlainObject(value)) throw wrong("an object");
      // An empty object as the default takes any keys.
      out[key] = Object.keys(want).length ? merge(want, value, path + ".") : value;
    } else if (Array.isArray(want)) {
      if (!Array.isArray(value)) throw wrong("an array");
      out[key] = value;
    } else if (typeof want === "number") {
      if (typeof value !== "number") throw wrong(Number.isInteger(want) ? "an integer" : "a number");
      if (Number.isInteger(want) && !Number.isInteger(value)) throw wrong("an integer");
      out[key] = value;
    } else if (typeof value !== typeof want) {
      throw wrong(typeof want === "boolean" ? "a boolean" : `a ${typeof want}`);
    } else {
      out[key] = value;
    }
  }
  return out;
}

function parseSettings(spec, text) {
  text = (text ?? "").trim();
  let data;
  try {
    data = text === "" || text === "null" ? {} : JSON.parse(text);
  } catch (e) {
    throw new SettingsError(`not valid JSON: ${e.message}`);
  }
  if (!isPlainObject(data)) throw new SettingsError(`expected an object, not ${typeName(data)}`);
  const settings = merge(spec.defaults ?? {}, data, "");
  if (spec.validate) spec.validate(settings);
  return Object.freeze(settings);
}

// ---------------------------------------------------------------------------
// Reading the cluster

/** A cluster read with no answer. `reason` says why, `message` is the host's
 * explanation:
 *
 * - `not_granted`: the kind is not in the policy's `reads`;
 * - `not_synced`: the host does not know the kind's objects (its cache has not
 *   finished its first list, RBAC, the kind is not installed, no cluster;
 *   natively: no fake cluster, see `withCluster`);
 * - `too_large`: a list past a quarter of the policy's memoryLimit in JSON:
 *   narrow it by namespace or label selector;
 * - `invalid`: a bad label selector, a namespace for a cluster-scoped kind,
 *   none for `getObject` of a namespaced one.
 *
 * Not found is no error: `getObject` returns undefined, `listObjects` [].
 * Uncaught, it fails the evaluation with its message (the host then applies
 * the policy's failurePolicy), like any PolicyError. */
export class ReadError extends PolicyError {
  constructor(reason, message) {
    super(message);
    this.name = "ReadError";
    this.reason = reason;
  }
}

/** `getObject(SERVICE, request.namespace, "web")`, with
 * `const SERVICE = { apiVersion: "v1", kind: "Service" }`: one object, or
 * undefined when there is none. `namespace` is undefined for cluster-scoped
 * kinds (`getObject(STORAGE_CLASS, undefined, "fast")`) and required for
 * namespaced ones. The kind must be in the policy's `reads`; throws ReadError. */
export function getObject(kind, namespace, name) {
  kind = checkKind(kind);
  namespace = namespace ?? undefined;
  const text = fake
    ? fake.get(kind, namespace, name)
    : fromHost(() => hostGetObject({ apiVersion: kind.apiVersion, kind: kind.kind }, namespace, name));
  return text === undefined || text === null ? undefined : JSON.parse(text);
}

/** `listObjects(PDB, request.namespace, "app=web")`: the objects of a kind in
 * one namespace (undefined: every namespace, and cluster-scoped kinds) that the
 * label selector selects (kubectl's syntax, `app=web,tier in (a,b),!canary`;
 * "" selects all), sorted by namespace, then name. The kind must be in the
 * policy's `reads`; throws ReadError. */
export function listObjects(kind, namespace = undefined, selector = "") {
  kind = checkKind(kind);
  namespace = namespace ?? undefined;
  const text = fake
    ? fake.list(kind, namespace, Selector.parse(selector))
    : fromHost(() => hostListObjects({ apiVersion: kind.apiVersion, kind: kind.kind }, namespace, selector));
  return JSON.parse(text);
}

/** For native tests: runs `fn` with reads answered from `objects` (with
 * apiVersion, kind and metadata.name; a `List`'s items count one by one) by
 * the host's rules, and nothing else (every kind is known; a kind without
 * objects lists empty); returns what `fn` returns.
 *
 *     const verdict = withCluster([service], () => policy.check(request, settings));
 *
 * A read by a policy's `evaluate` of a kind outside its `reads` throws
 * ReadError not_granted; a namespaced object without a namespace is in
 * `default`; `metadata.managedFields` and the last-applied annotation are
 * dropped; a list may hand over a quarter of `memoryLimit` (the host's default,
 * 64Mi) in JSON. Without it, natively, every read throws ReadError
 * not_synced. */
export function withCluster(objects, fn, { memoryLimit = 64 * 1024 * 1024 } = {}) {
  const previous = fake;
  fake = new FakeCluster(objects, memoryLimit);
  try {
    return fn();
  } finally {
    fake = previous;
  }
}

// The fake cluster a test installs (`withCluster`), and the kinds the policy
// being evaluated declares (undefined outside an evaluation: a helper a test
// calls directly may read any kind).
let fake = null;
let declared = undefined;

const kindName = (kind) => `${kind.apiVersion} ${kind.kind}`;
const groupOf = (apiVersion) => (apiVersion.includes("/") ? apiVersion.slice(0, apiVersion.lastIndexOf("/")) : "");

function checkKind(kind) {
  if (kind === null || typeof kind !== "object" || typeof kind.apiVersion !== "string" || typeof kind.kind !== "string") {
    throw new TypeError(`a kind is {apiVersion, kind}, e.g. {apiVersion: "v1", kind: "Service"}, not ${safeString(kind)}`);
  }
  return { apiVersion: kind.apiVersion, kind: kind.kind };
}

/** What makes `kind` name no one kind (the host's rule), or undefined. */
function kindProblem({ apiVersion, kind }) {
  const named = (text) => /^[A-Za-z0-9./-]+$/.test(text);
  if (!named(apiVersion) || apiVersion.split("/").length > 2) {
    return `\`${apiVersion}\` is not an apiVersion (expected e.g. \`v1\`, \`policy/v1\`, \`storage.k8s.io/v1\`)`;
  }
  if (!named(kind) || kind.includes("/")) {
    return `\`${kind}\` is not a kind (expected one kind by name, e.g. \`Service\`: no wildcards)`;
  }
  if (apiVersion.endsWith("/") || groupOf(apiVersion).endsWith(".")) return `\`${apiVersion}\` is not an apiVersion`;
  return undefined;
}

const READ_REASONS = { "not-granted": "not_granted", "not-synced": "not_synced", "too-large": "too_large", invalid: "invalid" };

// componentize-js throws a ComponentError whose `payload` is the WIT
// `read-error`: `{tag: "not-granted", val: "..."}`.
function fromHost(read) {
  try {
    return read();
  } catch (e) {
    const payload = e?.payload;
    if (payload && typeof payload.tag === "string") {
      throw new ReadError(READ_REASONS[payload.tag] ?? payload.tag, String(payload.val));
    }
    throw e;
  }
}

// The kinds Kubernetes itself defines outside namespaces, as `group/Kind`:
// what the offline context and the fake take as cluster-scoped (any other kind
// is namespaced).
const CLUSTER_SCOPED = new Set(
  [
    "/Namespace", "/Node", "/PersistentVolume", "/ComponentStatus",
    "storage.k8s.io/StorageClass", "storage.k8s.io/CSIDriver", "storage.k8s.io/CSINode",
    "storage.k8s.io/VolumeAttachment", "storage.k8s.io/VolumeAttributesClass",
    "scheduling.k8s.io/PriorityClass",
    "rbac.authorization.k8s.io/ClusterRole", "rbac.authorization.k8s.io/ClusterRoleBinding",
    "apiextensions.k8s.io/CustomResourceDefinition", "apiregistration.k8s.io/APIService",
    "admissionregistration.k8s.io/MutatingWebhookConfiguration",
    "admissionregistration.k8s.io/ValidatingWebhookConfiguration",
    "admissionregistration.k8s.io/ValidatingAdmissionPolicy",
    "admissionregistration.k8s.io/ValidatingAdmissionPolicyBinding",
    "admissionregistration.k8s.io/MutatingAdmissionPolicy",
    "admissionregistration.k8s.io/MutatingAdmissionPolicyBinding",
    "node.k8s.io/RuntimeClass", "networking.k8s.io/IngressClass", "networking.k8s.io/IPAddress",
    "networking.k8s.io/ServiceCIDR", "certificates.k8s.io/CertificateSigningRequest",
    "flowcontrol.apiserver.k8s.io/FlowSchema", "flowcontrol.apiserver.k8s.io/PriorityLevelConfiguration",
    "resource.k8s.io/DeviceClass", "resource.k8s.io/ResourceSlice",
  ],
);
const isClusterScoped = (kind) => CLUSTER_SCOPED.has(`${groupOf(kind.apiVersion)}/${kind.kind}`);

const LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration";

/** Objects by kind, then namespace and name, each kept as the JSON text a read
 * returns; cluster-scoped objects have namespace "". */
class FakeCluster {
  constructor(objects, memoryLimit) {
    this.maxListBytes = Math.floor(memoryLimit / 4);
    /** `apiVersion kind` -> Map(`namespace/name` -> {namespace, name, labels, json}) */
    this.kinds = new Map();
    for (const object of objects) {
      if (isPlainObject(object) && object.kind === "List") {
        // `kubectl get -o yaml`: the items are the objects.
        (Array.isArray(object.items) ? object.items : []).forEach((item) => this.add(item));
      } else {
        this.add(object);
      }
    }
  }

  add(object) {
    if (!isPlainObject(object)) throw new TypeError(`withCluster: an object is a plain object, not ${typeName(object)}`);
    object = JSON.parse(JSON.stringify(object)); // a copy, as JSON has it
    const string = (v) => (typeof v === "string" ? v : "");
    const kind = { apiVersion: string(object.apiVersion), kind: string(object.kind) };
    const problem = kindProblem(kind);
    if (problem) throw new Error(`withCluster: an object needs apiVersion and kind: ${problem}`);
    const metadata = isPlainObject(object.metadata) ? object.metadata : undefined;
    const name = string(metadata?.name);
    if (!name) throw new Error(`withCluster: a ${kindName(kind)} without metadata.name`);
    let namespace = string(metadata.namespace);
    if (isClusterScoped(kind)) {
      if (namespace) {
        throw new Error(`withCluster: ${kindName(kind)} ${name} has namespace \`${namespace}\`, but ${kindName(kind)} is cluster-scoped`);
      }
      delete metadata.namespace;
    } else if (!namespace) {
      namespace = metadata.namespace = "default"; // where `kubectl apply` would put it
    }
    delete metadata.managedFields;
    if (isPlainObject(metadata.annotations)) {
      delete metadata.annotations[LAST_APPLIED];
      if (Object.keys(metadata.annotations).length === 0) delete metadata.annotations;
    }
    const labels = new Map(
      Object.entries(isPlainObject(metadata.labels) ? metadata.labels : {}).filter(([, v]) => typeof v === "string"),
    );
    const key = kindName(kind);
    if (!this.kinds.has(key)) this.kinds.set(key, new Map());
    this.kinds.get(key).set(`${namespace}/${name}`, { namespace, name, labels, json: JSON.stringify(object) });
  }

  /** The kind's objects, after the checks every read goes through. */
  objects(kind) {
    if (declared !== undefined && !declared.some((d) => d.apiVersion === kind.apiVersion && d.kind === kind.kind)) {
      const declares = declared.map(kindName).join(", ") || "none";
      throw new ReadError(
        "not_granted",
        `the policy read ${kindName(kind)}, which its metadata does not declare in \`reads\` (it declares: ${declares}); ` +
          "declare it, and the operator grants it in the policy's `reads`",
      );
    }
    return this.kinds.get(kindName(kind)) ?? new Map();
  }

  /** Checks the namespace of a read against the kind's scope. */
  namespaced(kind, namespace) {
    const namespaced = !isClusterScoped(kind);
    if (!namespaced && namespace !== undefined) {
      throw new ReadError("invalid", `${kindName(kind)} is cluster-scoped: read it without a namespace (not \`${namespace}\`)`);
    }
    if (namespaced && namespace === "") {
      throw new ReadError("invalid", `${kindName(kind)} is namespaced: give a namespace, or none to list every namespace`);
    }
    return namespaced;
  }

  get(kind, namespace, name) {
    const objects = this.objects(kind);
    if (this.namespaced(kind, namespace) && namespace === undefined) {
      throw new ReadError("invalid", `${kindName(kind)} is namespaced: \`get\` needs the namespace of \`${name}\``);
    }
    return objects.get(`${namespace ?? ""}/${name}`)?.json;
  }

  list(kind, namespace, selector) {
    const objects = this.objects(kind);
    this.namespaced(kind, namespace);
    const compare = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
    const selected = [...objects.values()]
      .filter((o) => (namespace === undefined || o.namespace === namespace) && selector.matches(o.labels))
      .sort((a, b) => compare(a.namespace, b.namespace) || compare(a.name, b.name))
      .map((o) => o.json);
    const encoder = new TextEncoder();
    const bytes = selected.reduce((sum, json) => sum + encoder.encode(json).length, 0) + Math.max(selected.length - 1, 0) + 2;
    if (bytes > this.maxListBytes) {
      const scope = namespace === undefined ? "every namespace" : `namespace ${namespace}`;
      const labelled = selector.requirements.length ? ` with labels \`${selector}\`` : "";
      throw new ReadError(
        "too_large",
        `listing ${kindName(kind)} in ${scope}${labelled} gives ${selected.length} objects, ${bytes} bytes of JSON, ` +
          `more than the ${this.maxListBytes} bytes a read may hand this policy (a quarter of its memoryLimit); ` +
          "narrow the list by namespace or label selector, or raise memoryLimit",
      );
    }
    return `[${selected.join(",")}]`;
  }
}

const LABEL_NAME = /^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$/;
const LABEL_PREFIX = /^[a-z0-9.-]{1,253}$/;
const INTEGER = /^[+-]?[0-9]+$/;
const SELECTOR_EXAMPLE = "(expected e.g. `app=web,tier in (a,b),!canary`)";

/** `[prefix/]name`: name 1-63 alphanumerics, `-`, `_`, `.`, beginning and
 * ending alphanumeric; prefix a DNS subdomain. */
function labelKey(key) {
  const slash = key.indexOf("/");
  const [prefix, name] = slash < 0 ? [undefined, key] : [key.slice(0, slash), key.slice(slash + 1)];
  if (LABEL_NAME.test(name) && (prefix === undefined || LABEL_PREFIX.test(prefix))) return key;
  throw new Error(`\`${key}\` is not a valid label key`);
}

/** Empty, or up to 63 characters as a key's name part. */
function labelValue(value) {
  if (value === "" || LABEL_NAME.test(value)) return value;
  throw new Error(`\`${value}\` is not a valid label value`);
}

/** A label's value as an integer (an i64), or undefined. */
function integerOf(value) {
  if (typeof value !== "string" || !INTEGER.test(value)) return undefined;
  const number = BigInt(value);
  return number >= -(2n ** 63n) && number < 2n ** 63n ? number : undefined;
}

/** A label selector in kubectl's syntax, parsed and matched as the host does
 * (k8s.io/apimachinery `pkg/labels`): `app=web`, `app==web`, `app!=web`,
 * `tier in (a,b)`, `tier notin (a,b)`, `canary`, `!canary`, `n>1`, `n<9`,
 * joined by commas, all of which must hold. `!=` and `notin` also select
 * objects without the label. */
class Selector {
  constructor(requirements) {
    /** [operator, key, values]: operator is exists, !, in, notin, > or <. */
    this.requirements = requirements;
  }

  static parse(text) {
    try {
      return new Selector(Selector.requirements(text));
    } catch (e) {
      throw new ReadError("invalid", e.message);
    }
  }

  static requirements(text) {
    if (typeof text !== "string") throw new Error(`a label selector is a string, not ${safeString(text)}`);
    const parts = [];
    let depth = 0;
    let start = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (c === "(") depth++;
      else if (c === ")") {
        if (depth === 0) throw new Error(`label selector \`${text}\` has a \`)\` without \`(\``);
        depth--;
      } else if (c === "," && depth === 0) {
        parts.push(text.slice(start, i));
        start = i + 1;
      }
    }
    if (depth) throw new Error(`label selector \`${text}\` has a \`(\` without \`)\``);
    parts.push(text.slice(start));
    const requirements = [];
    for (const part of parts.map((p) => p.trim())) {
      if (!part) {
        if (!text.trim()) continue;
        throw new Error(`label selector \`${text}\` has an empty requirement (two commas, or one at the end)`);
      }
      try {
        requirements.push(Selector.requirement(part));
      } catch (e) {
        throw new Error(`label selector \`${text}\`: ${e.message} ${SELECTOR_EXAMPLE}`);
      }
    }
    return requirements;
  }

  static requirement(part) {
    if (part.startsWith("!")) return ["!", labelKey(part.slice(1).trim()), []];
    for (const [operator, name] of [["==", "in"], ["!=", "notin"], ["=", "in"], [">", ">"], ["<", "<"]]) {
      const at = part.indexOf(operator);
      if (at < 0) continue;
      const key = labelKey(part.slice(0, at).trim());
      const value = part.slice(at + operator.length).trim();
      if (name === ">" || name === "<") {
        const number = integerOf(value);
        if (number === undefined) throw new Error(`\`${value}\` is not an integer (> and < compare numbers)`);
        return [name, key, [number]];
      }
      return [name, key, [labelValue(value)]];
    }
    // `key`, `key in (a,b)`, `key notin (a,b)`
    const space = part.search(/\s/);
    const key = labelKey(space < 0 ? part : part.slice(0, space));
    if (space < 0) return ["exists", key, []];
    const rest = part.slice(space).trim();
    let operator;
    let values;
    const gap = rest.search(/\s/);
    if (gap >= 0) [operator, values] = [rest.slice(0, gap), rest.slice(gap + 1).trim()];
    else if (rest.includes("(")) [operator, values] = [rest.slice(0, rest.indexOf("(")).trim(), rest.slice(rest.indexOf("("))];
    else throw new Error(`\`${part}\` is not a requirement`);
    if (!values.startsWith("(") || !values.endsWith(")")) {
      throw new Error(`\`${part}\`: the values of \`${operator}\` go in parentheses`);
    }
    values = values.slice(1, -1).split(",").map((v) => labelValue(v.trim()));
    if (operator !== "in" && operator !== "notin") throw new Error(`\`${part}\`: unknown operator \`${operator}\` (in, notin)`);
    return [operator, key, values];
  }

  /** Whether `labels` (a Map) satisfy every requirement. */
  matches(labels) {
    return this.requirements.every(([operator, key, values]) => {
      const value = labels.get(key);
      switch (operator) {
        case "exists": return value !== undefined;
        case "!": return value === undefined;
        case "in": return value !== undefined && values.includes(value);
        case "notin": return value === undefined || !values.includes(value);
        default: {
          const number = integerOf(value);
          return number !== undefined && (operator === ">" ? number > values[0] : number < values[0]);
        }
      }
    });
  }

  toString() {
    return this.requirements
      .map(([operator, key, values]) => {
        if (operator === "exists") return key;
        if (operator === "!") return `!${key}`;
        if (operator === ">" || operator === "<") return `${key}${operator}${values[0]}`;
        if (values.length === 1) return `${key}${operator === "in" ? "=" : "!="}${values[0]}`;
        return `${key} ${operator} (${values.join(",")})`;
      })
      .join(",");
  }
}

// ---------------------------------------------------------------------------
// Errors: every exception becomes the WIT error, never a trap

/** `TypeError: can't access property "spec", x is undefined (policy.bundle.js:42:7, in evaluate)`. */
export function describe(e) {
  if (e instanceof PolicyError) return e.message;
  if (!(e instanceof Error)) {
    return typeof e === "string" ? e : `thrown: ${safeString(e)}`;
  }
  let text = e.message ? `${e.name}: ${e.message}` : e.name;
  // The innermost frame outside this helper says where it went wrong.
  // StarlingMonkey: `evaluate@policy.bundle.js:42:7`; Node: `at evaluate (file:///.../policy.js:42:7)`.
  const frame = String(e.stack ?? "")
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => /:\d+:\d+\)?$/.test(line))
    .find((line) => !/stsguard\.js:\d|initializer\.js:\d/.test(line));
  if (frame) {
    const [, name, where] = /^(?:at )?(?:(.*?)(?:@| \())?([^@( ]*?:\d+:\d+)\)?$/.exec(frame) ?? [];
    if (where) text += ` (${where.replace(/^.*\//, "")}${name ? `, in ${name}` : ""})`;
  }
  return text;
}

function safeString(value) {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

// componentize-js turns a thrown *string* into the `result` error; a thrown
// Error traps. So every export catches everything and throws a string.
function settingsMessage(e) {
  if (e instanceof SettingsError || (e instanceof Error && e.constructor === Error)) {
    return `invalid settings: ${e.message}`;
  }
  return `invalid settings: ${describe(e)}`;
}

const OPERATIONS_WITH_OBJECT = ["CREATE", "UPDATE"];

/** A policy, from its metadata, settings and evaluate function. Export its
 * three functions from policy.js:
 *
 *     export const { metadata, validateSettings, evaluate } = policy.exports();
 */
export class Policy {
  constructor({ name, version, description, mutating = false, targets, settings = {}, settingsSchema = "{}", reads = [], evaluate }) {
    if (typeof evaluate !== "function") throw new TypeError("Policy: evaluate must be a function");
    /** The kinds `evaluate` reads with `getObject` and `listObjects`. */
    this.reads = [];
    for (const kind of reads.map(checkKind)) {
      const problem = kindProblem(kind);
      if (problem) throw new TypeError(`Policy: reads: ${problem}`);
      if (this.reads.some((k) => k.apiVersion === kind.apiVersion && k.kind === kind.kind)) {
        throw new TypeError(`Policy: reads: ${kindName(kind)} is named twice`);
      }
      this.reads.push(kind);
    }
    this.name = name;
    this.version = version;
    this.description = description;
    this.mutating = mutating;
    this.targets = targets.map(({ group = "", version = "*", kind = "*" }) => ({ group, version, kind }));
    this.settings = settings;
    this.settingsSchema = typeof settingsSchema === "string" ? settingsSchema : JSON.stringify(settingsSchema);
    this.evaluateFn = evaluate;
  }

  /** Settings (an object, JSON text or undefined) with the defaults filled
   * in; throws SettingsError (or what `validate` throws). */
  parseSettings(settings = {}) {
    return parseSettings(this.settings, typeof settings === "string" ? settings : JSON.stringify(settings));
  }

  targetsKind(kind = {}) {
    return this.targets.some(
      (t) => t.group === (kind.group ?? "") && (t.version === "*" || t.version === kind.version) && (t.kind === "*" || t.kind === kind.kind),
    );
  }

  /** Evaluates an AdmissionRequest (with its `object`) natively: for tests.
   * Exceptions propagate as they are; cluster reads are answered by the fake
   * cluster the test installs (`withCluster([...], () => policy.check(...))`). */
  check(request, settings = {}) {
    const { object, ...rest } = request;
    return this.run(rest, object ?? null, this.parseSettings(settings));
  }

  run(raw, object, settings) {
    if (!this.targetsKind(raw.kind) || !OPERATIONS_WITH_OBJECT.includes(raw.operation) || object === null) {
      return Verdict.accept();
    }
    const previous = declared;
    declared = this.reads;
    let verdict;
    try {
      verdict = this.evaluateFn(new Request(raw, object), settings);
    } finally {
      declared = previous;
    }
    if (!(verdict instanceof Verdict)) {
      throw new TypeError(`evaluate must return a Verdict, not ${typeName(verdict)}`);
    }
    if (verdict.fields.length && !this.mutating) {
      throw new PolicyError("the policy sets values but its metadata says mutating: false");
    }
    return verdict;
  }

  /** The WIT exports: `metadata`, `validateSettings` and `evaluate`. */
  exports() {
    const metadata = () => ({
      name: this.name,
      version: this.version,
      description: this.description,
      mutating: this.mutating,
      targets: this.targets,
      settingsSchema: this.settingsSchema,
      reads: this.reads,
    });
    const validateSettings = (settings) => {
      try {
        parseSettings(this.settings, settings);
      } catch (e) {
        throw settingsMessage(e);
      }
    };
    const evaluate = (request, object, settings) => {
      let parsed;
      try {
        parsed = parseSettings(this.settings, settings);
      } catch (e) {
        throw settingsMessage(e);
      }
      let raw;
      try {
        raw = JSON.parse(request);
        object = JSON.parse(object);
      } catch (e) {
        throw `cannot read the AdmissionRequest: ${e.message}`;
      }
      try {
        return this.run(raw, object, parsed).toWit();
      } catch (e) {
        throw describe(e);
      }
    };
    return { metadata, validateSettings, evaluate };
  }
}
