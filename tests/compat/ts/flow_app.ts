// Flow control (issue 12) on the official `inngest` npm SDK, unchanged for Plait: one function
// per control, like py_flow_app.py. Run as `node --import ./register.mjs flow_app.ts <port>`
// with FLOW_RECORD naming a folder: each step body appends its interval to `<function>.jsonl`
// there as a JSON line (run id, key, wall-clock start and end in seconds, data), in the shape
// of tests/e2e/flow_support.py's `Interval`; POST /release?key=… lets the bodies held on that key return. COMPAT_APP_ID
// names the app (default compat-flow-ts) and prefixes its events.
import fs from "node:fs";
import http from "node:http";
import { Inngest } from "inngest";
import { serve } from "inngest/node";

const appId = process.env.COMPAT_APP_ID ?? "compat-flow-ts";
const recordDir = process.env.FLOW_RECORD ?? ".";
const inngest = new Inngest({ id: appId });
const gates = new Map<string, { opened: Promise<void>; open: () => void }>();

function gate(key: string): { opened: Promise<void>; open: () => void } {
  let found = gates.get(key);
  if (found === undefined) {
    let open = () => {};
    const opened = new Promise<void>((resolve) => {
      open = resolve;
    });
    found = { opened, open };
    gates.set(key, found);
  }
  return found;
}

type Data = Record<string, unknown> & { block?: boolean };

// Records one body's interval; one appendFileSync (O_APPEND) per line, so lines never mix.
async function hold(
  fn: string, runId: string, data: Data, key: string, seconds: number, extra?: unknown,
) {
  const start = Date.now() / 1000;
  if (data.block) {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, 30_000);
    });
    await Promise.race([gate(key).opened, late]);
    clearTimeout(timer);
  }
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  const line = { run_id: runId, key, start, end: Date.now() / 1000, data: extra ?? null };
  fs.appendFileSync(`${recordDir}/${fn}.jsonl`, `${JSON.stringify(line)}\n`);
}

const on = (name: string) => [{ event: `${appId}/${name}` }];

const conc = inngest.createFunction(
  {
    id: "conc",
    triggers: on("conc"),
    concurrency: [{ limit: 2, key: "event.data.user" }, { limit: 3 }],
  },
  async ({ event, step, runId }) => {
    const data = event.data as Data;
    await step.run("work", () => hold("conc", runId, data, String(data.user), 0.2));
  },
);

const throttled = inngest.createFunction(
  { id: "throttled", triggers: on("throttled"), throttle: { limit: 4, period: "1s" } },
  async ({ event, step, runId }) => {
    await step.run("work", () => hold("throttled", runId, event.data as Data, "", 0.01));
  },
);

const limited = inngest.createFunction(
  {
    id: "limited",
    triggers: on("limited"),
    rateLimit: { limit: 1, period: "1m", key: "event.data.k" },
  },
  async ({ event, step, runId }) => {
    const data = event.data as Data;
    await step.run("work", () => hold("limited", runId, data, String(data.k), 0.01));
  },
);

const idem = inngest.createFunction(
  { id: "idem", triggers: on("idem"), idempotency: "event.data.order" },
  async ({ event, step, runId }) => {
    const data = event.data as Data;
    await step.run("work", () => hold("idem", runId, data, String(data.order), 0.01));
  },
);

const debounced = inngest.createFunction(
  { id: "debounced", triggers: on("debounced"), debounce: { period: "1s", key: "event.data.k" } },
  async ({ event, step, runId }) => {
    const data = event.data as Data;
    const seen = { n: data.n, event_id: event.id };
    await step.run("work", () => hold("debounced", runId, data, String(data.k), 0.01, seen));
  },
);

const batched = inngest.createFunction(
  { id: "batched", triggers: on("batched"), batchEvents: { maxSize: 3, timeout: "1s" } },
  async ({ events, step, runId }) => {
    const ids = events.map((e) => e.id);
    await step.run("work", () => hold("batched", runId, {}, "", 0.01, ids));
    return ids.length;
  },
);

// One run at a time, the queued ones in the order of their priority.
const ranked = inngest.createFunction(
  {
    id: "ranked",
    triggers: on("ranked"),
    concurrency: [{ limit: 1 }],
    priority: { run: "event.data.prio" },
  },
  async ({ event, step, runId }) => {
    const data = event.data as Data;
    await step.run("work", () => hold("ranked", runId, data, "ranked", 0.01, data.prio));
  },
);

const only = inngest.createFunction(
  { id: "only", triggers: on("only"), singleton: { mode: "skip", key: "event.data.k" } },
  async ({ event, step, runId }) => {
    const data = event.data as Data;
    await step.run("work", () => hold("only", runId, data, String(data.k), 0.01));
  },
);

const latest = inngest.createFunction(
  { id: "latest", triggers: on("latest"), singleton: { mode: "cancel", key: "event.data.k" } },
  async ({ event, step, runId }) => {
    const data = event.data as Data & { nap_s: number };
    await step.run("before", () => hold("latest", runId, {}, "before", 0.01));
    await step.sleep("nap", `${Math.round(data.nap_s * 1000)}ms`);
    await step.run("after", () => hold("latest", runId, {}, "after", 0.01));
  },
);

const held = inngest.createFunction(
  { id: "held", triggers: on("held"), concurrency: [{ limit: 1, key: "event.data.k" }] },
  async ({ event, step, runId }) => {
    const data = event.data as Data;
    await step.run("work", () => hold("held", runId, data, String(data.k), 0.01));
  },
);

const handler = serve({
  client: inngest,
  functions: [conc, throttled, limited, idem, debounced, batched, ranked, only, latest, held],
});

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url ?? "/", "http://localhost");
  if (url.pathname === "/release" && req.method === "POST") {
    gate(url.searchParams.get("key") ?? "").open();
    res.writeHead(200, { "Content-Type": "application/json" });
    return res.end(JSON.stringify({ released: true }));
  }
  return handler(req, res);
});

server.listen(Number(process.argv[2]), "127.0.0.1");
