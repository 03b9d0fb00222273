// A small helper for writing stsguard policies in JavaScript.
//
// It turns the three WIT exports of `stsguard:policy/policy@0.2.0` into a
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
//   (`wasm unreachable`) on any thrown Error and the reason is lost.
//
// The same module runs under Node for unit tests (`npm test`): the host's log
// then goes to stderr (see test/host-stub.js). Keep this file as it is; your
// policy lives in policy.js.

import { log as hostLog } from "stsguard:policy/host@0.2.0";

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
  constructor({ name, version, description, mutating = false, targets, settings = {}, settingsSchema = "{}", evaluate }) {
    if (typeof evaluate !== "function") throw new TypeError("Policy: evaluate must be a function");
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
   * Exceptions propagate as they are. */
  check(request, settings = {}) {
    const { object, ...rest } = request;
    return this.run(rest, object ?? null, this.parseSettings(settings));
  }

  run(raw, object, settings) {
    if (!this.targetsKind(raw.kind) || !OPERATIONS_WITH_OBJECT.includes(raw.operation) || object === null) {
      return Verdict.accept();
    }
    const verdict = this.evaluateFn(new Request(raw, object), settings);
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
