// The instr agent: one static bundle, configured as data over RPC.
// See docs/agent.md for the contract; this file only composes rpc.exports.

import { Plan } from "./protocol.js";
import { Session } from "./session.js";

const session = new Session();

rpc.exports = {
    hello: () => session.hello(),
    configure: (plan: Plan) => session.configure(plan),
    flush: () => session.flush(),
    snapshot: (final: boolean) => session.snapshot(final),
    dispose: (reason?: string) => session.dispose(reason),
    symbolize: (addresses: string[]) => session.symbolize(addresses),
};
