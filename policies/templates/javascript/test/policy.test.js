// Native unit tests: `npm test`. They call the policy's logic with plain
// objects, without building the component; `stsguard test` (tests.yaml) then
// checks the built component through the real engine.
import assert from "node:assert/strict";
import { test } from "node:test";

import policy from "../policy.js";
import { Policy, ReadError, Verdict, get, getObject, withCluster } from "../stsguard.js";

/** A CREATE AdmissionRequest for a StatefulSet with this spec. */
function request(spec) {
  return {
    uid: "test",
    kind: { group: "apps", version: "v1", kind: "StatefulSet" },
    operation: "CREATE",
    name: "web",
    namespace: "default",
    object: {
      apiVersion: "apps/v1",
      kind: "StatefulSet",
      metadata: { name: "web", namespace: "default" },
      spec: { serviceName: "web", ...spec },
    },
  };
}

test("sets minReadySeconds and says so", () => {
  const verdict = policy.check(request({ replicas: 3 }), { minReadySeconds: 30 });
  assert.equal(verdict.allowed, true);
  assert.deepEqual(verdict.fields, [["/spec/minReadySeconds", 30]]);
  assert.deepEqual(verdict.warnings, ["set spec.minReadySeconds to 30"]);
});

test("a compliant StatefulSet is left alone", () => {
  const verdict = policy.check(request({ replicas: 3, minReadySeconds: 5 }), {});
  assert.deepEqual([verdict.allowed, verdict.fields, verdict.warnings], [true, [], []]);
});

test("too many replicas are denied", () => {
  const verdict = policy.check(request({ replicas: 3 }), { maxReplicas: 2 });
  assert.equal(verdict.allowed, false);
  assert.equal(
    verdict.message,
    "spec.replicas is 3, more than the 2 this cluster allows; lower it or ask the platform team",
  );
});

test("bad settings are refused", () => {
  assert.throws(() => policy.parseSettings({ maxReplicas: 0 }), {
    message: "`maxReplicas` must be at least 1, not 0",
  });
  assert.throws(() => policy.parseSettings({ maxreplicas: 3 }), /unknown field `maxreplicas`/);
  const { validateSettings } = policy.exports();
  assert.throws(() => validateSettings('{"maxReplicas": 0}'), (e) => e === "invalid settings: `maxReplicas` must be at least 1, not 0");
});

test("an exception becomes the WIT error, not a trap", () => {
  const { evaluate } = policy.exports();
  const { object, ...rest } = request({ replicas: 3 });
  // A thrown *string* is what componentize-js returns as `result::err`.
  assert.throws(
    () => evaluate(JSON.stringify(rest), JSON.stringify(object), '{"maxReplicas": "x"}'),
    (e) => typeof e === "string" && e.startsWith("invalid settings: `maxReplicas`: expected an integer"),
  );
});

// A policy that reads the cluster, tested with a fake one: a StatefulSet's
// serviceName must name a Service in its namespace.
const SERVICE = { apiVersion: "v1", kind: "Service" };
const needsService = new Policy({
  name: "needs-service",
  version: "0.1.0",
  description: "StatefulSets name an existing Service.",
  targets: [{ group: "apps", version: "v1", kind: "StatefulSet" }],
  reads: [SERVICE],
  evaluate(request) {
    const name = get(request.object, ["spec", "serviceName"]);
    if (name && getObject(SERVICE, request.namespace, name) === undefined) {
      return Verdict.reject(`spec.serviceName names no Service in ${request.namespace}: create ${name}`);
    }
    return Verdict.accept();
  },
});

test("reads are answered by the fake cluster", () => {
  const web = { apiVersion: "v1", kind: "Service", metadata: { name: "web", namespace: "default" } };
  assert.equal(withCluster([web], () => needsService.check(request({ replicas: 3 }))).allowed, true);
  // An empty cluster: the Service is not found.
  const verdict = withCluster([], () => needsService.check(request({ replicas: 3 })));
  assert.equal(verdict.message, "spec.serviceName names no Service in default: create web");
  // Without a fake cluster a read throws ReadError, as an unsynced cache does
  // in the server; uncaught, it fails the evaluation.
  assert.throws(() => needsService.check(request({ replicas: 3 })), (e) => e instanceof ReadError && e.reason === "not_synced");
});

test("the example reads nothing", () => {
  assert.deepEqual(policy.reads, []);
});
