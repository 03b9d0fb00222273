// Module resolution hooks for the native tests (see register.js): stand-ins
// for the WIT imports, which exist only inside the component.
const HOST = "data:text/javascript," + encodeURIComponent(
  "export function log(level, message) { console.error(`[${level}] ${message}`); }",
);

// Reads throw what the host throws when it cannot answer (a ComponentError
// whose payload is the WIT `read-error`). A test that reads gives stsguard.js
// a fake cluster instead: `withCluster([...objects], () => policy.check(...))`.
const CLUSTER = "data:text/javascript," + encodeURIComponent(`
function notSynced(kind) {
  const error = new Error("not-synced (see error.payload)");
  error.payload = {
    tag: "not-synced",
    val: \`\${kind.apiVersion} \${kind.kind} cannot be read: natively, reads are answered only by a fake \` +
      "cluster; run the evaluation in one: withCluster([...objects], () => policy.check(...)) (from stsguard.js)",
  };
  throw error;
}
export function getObject(kind) { notSynced(kind); }
export function listObjects(kind) { notSynced(kind); }
`);

export async function resolve(specifier, context, next) {
  if (specifier.startsWith("stsguard:policy/host@")) {
    return { url: HOST, shortCircuit: true };
  }
  if (specifier.startsWith("stsguard:policy/cluster@")) {
    return { url: CLUSTER, shortCircuit: true };
  }
  return next(specifier, context);
}
