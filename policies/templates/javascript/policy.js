// `{{name}}`: a stsguard policy in JavaScript.
//
// - StatefulSets asking for more than `maxReplicas` replicas are denied.
// - StatefulSets without `spec.minReadySeconds` get the configured value (a new
//   pod must stay Ready that long before it counts as available, which slows a
//   broken roll-out down). The field may change on UPDATE without restarting
//   pods, so the policy sets it on CREATE and UPDATE alike.
//
// Every change is explained by a warning, and a StatefulSet that already
// complies comes back unchanged. Build with `stsguard build`; see README.md.

import { Policy, Verdict, get } from "./stsguard.js";
import settingsSchema from "./settings.schema.json" with { type: "json" };

const policy = new Policy({
  name: "{{name}}",
  version: "0.1.0",
  description:
    "Denies StatefulSets with more than maxReplicas replicas and gives the others spec.minReadySeconds.",
  mutating: true,
  // The host calls evaluate only for these kinds.
  targets: [{ group: "apps", version: "v1", kind: "StatefulSet" }],
  // The kinds of cluster objects evaluate reads with getObject() and
  // listObjects(), e.g. [{ apiVersion: "v1", kind: "Service" }], each granted in
  // the policy's entry in stsguard.yaml (see README.md). This one reads none.
  reads: [],
  settingsSchema,
  settings: {
    // `settings:` in the stsguard configuration. A missing key takes its
    // default; an unknown key, or a value of another type, is refused.
    defaults: { minReadySeconds: 10, maxReplicas: 10 },
    // Checks types cannot express. What you throw is shown to the operator.
    validate(s) {
      if (s.minReadySeconds < 0) throw new Error(`\`minReadySeconds\` must be 0 or more, not ${s.minReadySeconds}`);
      if (s.maxReplicas < 1) throw new Error(`\`maxReplicas\` must be at least 1, not ${s.maxReplicas}`);
    },
  },

  // Called for each CREATE and UPDATE of a StatefulSet; `request.object` is the
  // StatefulSet. Anything thrown fails the evaluation (the host then applies
  // the policy's failurePolicy).
  evaluate(request, settings) {
    const spec = get(request.object, ["spec"], {});
    const replicas = get(spec, ["replicas"], 1);
    if (replicas > settings.maxReplicas) {
      return Verdict.reject(
        `spec.replicas is ${replicas}, more than the ${settings.maxReplicas} this cluster allows; ` +
          "lower it or ask the platform team",
      );
    }
    if (get(spec, ["minReadySeconds"]) !== undefined) return Verdict.accept();
    // The host sets the value in its copy of the object, so every other field
    // stays as the user sent it.
    return Verdict.accept()
      .set("/spec/minReadySeconds", settings.minReadySeconds)
      .warn(`set spec.minReadySeconds to ${settings.minReadySeconds}`);
  },
});

export default policy;

// The three WIT exports (`metadata`, `validate-settings`, `evaluate`).
export const { metadata, validateSettings, evaluate } = policy.exports();
