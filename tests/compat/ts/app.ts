// A Node app on the official `inngest` npm SDK, unchanged for Plait: only the SDK's own
// environment variables (INNGEST_DEV, INNGEST_BASE_URL, INNGEST_SIGNING_KEY, …) point it at
// the server. Run as `node --import ./register.mjs app.ts <port>`; COMPAT_APP_ID names the
// app (and the prefix of its event names), so several copies can be told apart.
//
// Step bodies count their calls per event `key`: GET /calls?key=… reports the counts, and
// POST /send sends its JSON body with the SDK's own client, answering {"ids": […]}.
import http from "node:http";
import { Inngest, NonRetriableError } from "inngest";
import { serve } from "inngest/node";

const appId = process.env.COMPAT_APP_ID ?? "compat-ts";
const inngest = new Inngest({ id: appId });
const calls = new Map<string, number>();

type Data = { key: string };

function bump(data: Data, name: string): number {
  const id = `${data.key}/${name}`;
  const n = (calls.get(id) ?? 0) + 1;
  calls.set(id, n);
  return n;
}

function counts(data: Data, ...names: string[]): Record<string, number> {
  return Object.fromEntries(names.map((name) => [name, calls.get(`${data.key}/${name}`) ?? 0]));
}

const sequential = inngest.createFunction(
  { id: "sequential", triggers: [{ event: `${appId}/sequential` }] },
  async ({ event, step }) => {
    const data = event.data as Data;
    const a = await step.run("a", () => (bump(data, "a"), 1));
    const b = await step.run("b", () => (bump(data, "b"), a + 1));
    const c = await step.run("c", () => (bump(data, "c"), b + 1));
    return { steps: [a, b, c], calls: counts(data, "a", "b", "c") };
  },
);

const flaky = inngest.createFunction(
  { id: "flaky", retries: 3, triggers: [{ event: `${appId}/flaky` }] },
  async ({ event, step }) => {
    const data = event.data as Data;
    const succeededOn = await step.run("flaky", () => {
      const n = bump(data, "flaky");
      if (n < 3) throw new Error(`attempt ${n} fails`);
      return n;
    });
    return { succeeded_on: succeededOn };
  },
);

const doomed = inngest.createFunction(
  { id: "doomed", retries: 3, triggers: [{ event: `${appId}/doomed` }] },
  async ({ event, step }) => {
    const data = event.data as Data;
    await step.run("doomed", () => {
      throw new NonRetriableError(`gave up on call ${bump(data, "doomed")}`);
    });
  },
);

const mourned = inngest.createFunction(
  {
    id: "mourned",
    retries: 1,
    triggers: [{ event: `${appId}/mourned` }],
    // The failed run's event and error, as counts.
    onFailure: async ({ event, error }) => {
      const original = event.data.event.data as Data;
      bump(original, "mourned");
      bump(original, `error=${error.message}`);
    },
  },
  async ({ event, step }) => {
    const data = event.data as Data;
    await step.run("attempt", () => {
      throw new Error(`failed call ${bump(data, "attempt")}`);
    });
  },
);

const napper = inngest.createFunction(
  { id: "napper", triggers: [{ event: `${appId}/sleep` }] },
  async ({ event, step }) => {
    const data = event.data as Data;
    const before = await step.run("before", () => (bump(data, "before"), Date.now() / 1000));
    await step.sleep("nap", "2s");
    const after = await step.run("after", () => (bump(data, "after"), Date.now() / 1000));
    return { slept_s: after - before, calls: counts(data, "before", "after") };
  },
);

const parallel = inngest.createFunction(
  { id: "parallel", triggers: [{ event: `${appId}/parallel` }] },
  async ({ event, step }) => {
    const data = event.data as Data;
    const side = async (name: string) => {
      bump(data, name);
      const start = Date.now() / 1000;
      await new Promise((resolve) => setTimeout(resolve, 500));
      return { name: name.toUpperCase(), start, end: Date.now() / 1000 };
    };
    const [left, right] = await Promise.all([
      step.run("left", () => side("left")),
      step.run("right", () => side("right")),
    ]);
    const joined = await step.run("join", () => (bump(data, "join"), `${left.name}+${right.name}`));
    return { joined, sides: [left, right], calls: counts(data, "left", "right", "join") };
  },
);

const waiter = inngest.createFunction(
  { id: "waiter", triggers: [{ event: `${appId}/waiter` }] },
  async ({ event, step }) => {
    const timeoutS = (event.data as { timeout_s: number }).timeout_s;
    const paid = await step.waitForEvent("paid", {
      event: `${appId}/paid`,
      timeout: `${timeoutS}s`,
      if: "async.data.key == event.data.key",
    });
    return { paid: paid === null ? null : { name: paid.name, data: paid.data } };
  },
);

// A step of 3 s in a function with a finish timeout of 1 s: the run fails.
const laggard = inngest.createFunction(
  { id: "laggard", timeouts: { finish: "1s" }, triggers: [{ event: `${appId}/laggard` }] },
  async ({ step }) => {
    await step.run("nap", () => new Promise((resolve) => setTimeout(resolve, 3000)));
  },
);

const handler = serve({
  client: inngest,
  functions: [sequential, flaky, doomed, mourned, napper, parallel, waiter, laggard],
});

async function readJson(req: http.IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

function reply(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "Content-Type": "application/json" });
  res.end(JSON.stringify(body));
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url ?? "/", "http://localhost");
  if (url.pathname === "/calls") {
    const prefix = `${url.searchParams.get("key")}/`;
    const mine = [...calls].filter(([id]) => id.startsWith(prefix));
    return reply(res, 200, Object.fromEntries(mine.map(([id, n]) => [id.slice(prefix.length), n])));
  }
  if (url.pathname === "/send" && req.method === "POST") {
    try {
      const { ids } = await inngest.send((await readJson(req)) as { name: string; data: Data });
      return reply(res, 200, { ids });
    } catch (err) {
      return reply(res, 502, { error: String(err) });
    }
  }
  return handler(req, res);
});

server.listen(Number(process.argv[2]), "127.0.0.1");
