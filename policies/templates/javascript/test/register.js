// `node --import ./test/register.js --test test/*.test.js` (what `npm test` runs): lets
// Node import the policy natively. The WIT imports (`stsguard:policy/host`)
// exist only inside the component, so Node gets a stand-in that prints
// `log.info(...)` and friends to stderr.
import { register } from "node:module";

register("./hooks.js", import.meta.url);
