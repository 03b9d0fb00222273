// `node --import ./test/register.js --test test/*.test.js` (what `npm test` runs): lets
// Node import the policy natively. The WIT imports (`stsguard:policy/host`,
// `stsguard:policy/cluster`) exist only inside the component, so Node gets
// stand-ins (hooks.js): `log.info(...)` and friends print to stderr, and a
// cluster read answers only from the fake cluster a test installs (withCluster).
import { register } from "node:module";

register("./hooks.js", import.meta.url);
