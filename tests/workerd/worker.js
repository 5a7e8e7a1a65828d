// The test worker: imports the package exactly as a wrangler-bundled worker does
// (`import { PolicyEngine } from "fleetgate"`, resolved to the `workerd` entry, no init call) and
// replays conformance vectors with the shared replay code. GET /replay?files=a.json,b.json
// answers {files: {name: {cases, failures}}}.
import { PolicyEngine } from "fleetgate";
import { replay } from "./replay.js";

export default {
  async fetch(request) {
    const url = new URL(request.url);
    if (url.pathname !== "/replay") return new Response("not found", { status: 404 });
    const files = {};
    for (const name of (url.searchParams.get("files") ?? "").split(",").filter(Boolean)) {
      try {
        const file = (await import(`./vectors/${name}`)).default;
        files[name] = replay(PolicyEngine, file, name);
      } catch (e) {
        files[name] = { cases: 0, failures: [`${name}: ${e && e.stack ? e.stack : e}`] };
      }
    }
    return Response.json({ files });
  },
};
