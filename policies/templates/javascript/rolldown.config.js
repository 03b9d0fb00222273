// Step 1 of `npm run build`: Rolldown bundles policy.js and what it imports
// (stsguard.js, settings.schema.json, pure-JavaScript npm packages) into one ES
// module, build/policy.bundle.js, which step 2 (`jco componentize`) turns into
// the component. An error's location (`policy.bundle.js:42:7`) is a line of
// that file: open it to read the line.
export default {
  input: "policy.js",
  platform: "neutral",
  // The WIT interfaces are the component's imports, provided by the host, not
  // files. Everything else is bundled.
  external: [/^stsguard:policy\//, /^wasi:/],
  // The "neutral" platform resolves no `main` field by default, which most
  // CommonJS packages on npm only have.
  resolve: { mainFields: ["module", "main"] },
  output: {
    file: "build/policy.bundle.js",
    format: "esm",
    codeSplitting: false,
  },
};
