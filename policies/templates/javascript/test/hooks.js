// Module resolution hooks for the native tests (see register.js).
const HOST = "data:text/javascript," + encodeURIComponent(
  "export function log(level, message) { console.error(`[${level}] ${message}`); }",
);

export async function resolve(specifier, context, next) {
  if (specifier.startsWith("stsguard:policy/host")) {
    return { url: HOST, shortCircuit: true };
  }
  return next(specifier, context);
}
