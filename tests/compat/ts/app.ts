// A Node app on the official `inngest` npm SDK, unchanged for Plait: only the SDK's own
// environment variables (INNGEST_DEV, INNGEST_BASE_URL, INNGEST_SIGNING_KEY, …) point it at
// the server. Run as `node --import ./register.mjs app.ts <port>`; COMPAT_APP_ID names the
// app (and the prefix of its event names), so several copies can be told apart.
//
// Step bodies count their calls per event `key`: GET /calls?key=… reports the counts,
// POST /send sends its JSON body with the SDK's own client, answering {"ids": […]}, and
// POST /release?key=… lets the `hog` steps of that key return.
import http from "node:http";
import { Inngest, NonRetriableError } from "inngest";
import { serve } from "inngest/node";

const appId = process.env.COMPAT_APP_ID ?? "compat-ts";
const inngest = new Inngest({ id: appId });
const calls = new Map<string, number>();
const gates = new Map<string, { opened: Promise<void>; open: () => void }>();
const CRON = "* * * * *";

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

// A run per cron tick; the tests move the scheduler's fake clock.
const ticker = inngest.createFunction(
  { id: "ticker", triggers: [{ cron: CRON }] },
  async ({ event }) => ({ name: event.name, cron: (event.data as { cron: string }).cron }),
);

type Nap = Data & { nap_s: number };

// Sleeps `nap_s` seconds between two steps.
const dozer = inngest.createFunction(
  { id: "dozer", triggers: [{ event: `${appId}/doze` }] },
  async ({ event, step }) => {
    const data = event.data as Nap;
    await step.run("before", () => bump(data, "before"));
    await step.sleep("nap", `${data.nap_s}s`);
    await step.run("after", () => bump(data, "after"));
  },
);

// Holds its call to the app until POST /release for its key (30 s at most).
const hog = inngest.createFunction(
  { id: "hog", triggers: [{ event: `${appId}/hog` }] },
  async ({ event, step }) => {
    const data = event.data as Data;
    await step.run("hold", async () => {
      bump(data, "hold");
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, 30_000);
      });
      await Promise.race([gate(data.key).opened, late]);
      clearTimeout(timer);
    });
  },
);

// A start timeout of 1 s.
const tardy = inngest.createFunction(
  { id: "tardy", timeouts: { start: "1s" }, triggers: [{ event: `${appId}/tardy` }] },
  async ({ event, step }) => {
    await step.run("ran", () => bump(event.data as Data, "ran"));
  },
);

// Sleeps `nap_s` seconds; `<app>/cancel` with the same `id` cancels it.
const cancellable = inngest.createFunction(
  {
    id: "cancellable",
    triggers: [{ event: `${appId}/cancellable` }],
    cancelOn: [{ event: `${appId}/cancel`, if: "event.data.id == async.data.id", timeout: "1m" }],
  },
  async ({ event, step }) => {
    const data = event.data as Nap & { id: string };
    await step.run("before", () => bump(data, "before"));
    await step.sleep("nap", `${data.nap_s}s`);
    await step.run("after", () => bump(data, "after"));
    return { id: data.id };
  },
);

type ChildData = Data & { n: number; fail: boolean };

// Invoked by `parent`: doubles `n`, or fails for good when `fail` is set.
const child = inngest.createFunction(
  { id: "child", retries: 0, triggers: [{ event: `${appId}/child` }] },
  async ({ event }) => {
    const data = event.data as ChildData;
    bump(data, "child");
    if (data.fail) throw new NonRetriableError(`child refused ${data.n}`);
    return { doubled: data.n * 2 };
  },
);

// Invokes `child`; returns its output, or the message of the error the step threw.
const parent = inngest.createFunction(
  { id: "parent", triggers: [{ event: `${appId}/parent` }] },
  async ({ event, step }) => {
    const data = event.data as Data & { n: number; fail?: boolean };
    try {
      const out = await step.invoke("call", {
        function: child,
        data: { key: data.key, n: data.n, fail: data.fail ?? false },
      });
      return { child: out };
    } catch (err) {
      return { error: (err as Error).message };
    }
  },
);

// Sends `<app>/announced` as a step; a later step fails once, so the run is replayed.
const announcer = inngest.createFunction(
  { id: "announcer", retries: 2, triggers: [{ event: `${appId}/announce` }] },
  async ({ event, step }) => {
    const data = event.data as Data;
    const { ids } = await step.sendEvent("send", {
      name: `${appId}/announced`,
      data: { key: data.key },
    });
    const flaky = await step.run("flaky", () => {
      const n = bump(data, "flaky");
      if (n < 2) throw new Error(`call ${n} fails`);
      return n;
    });
    return { sent: ids, flaky };
  },
);

const listener = inngest.createFunction(
  { id: "listener", triggers: [{ event: `${appId}/announced` }] },
  async ({ event, step }) => ({
    heard: await step.run("heard", () => bump(event.data as Data, "heard")),
  }),
);

// Waits for `<app>/left` and `<app>/right` with its key at once (Promise.all).
const pair = inngest.createFunction(
  { id: "pair", triggers: [{ event: `${appId}/pair` }] },
  async ({ event, step }) => {
    const data = event.data as Data;
    const match = "async.data.key == event.data.key";
    const [left, right] = await Promise.all([
      step.waitForEvent("left", { event: `${appId}/left`, timeout: "60s", if: match }),
      step.waitForEvent("right", { event: `${appId}/right`, timeout: "60s", if: match }),
    ]);
    const after = await step.run("after", () => bump(data, "after"));
    return { left: left?.data ?? null, right: right?.data ?? null, after };
  },
);

// Races `<app>/go` with its key against a sleep of `nap_s` (group.parallel's race mode, which
// marks the steps `parallelMode: "race"`): the function goes on at the first to end; the
// loser keeps its timeout answer (null).
const racer = inngest.createFunction(
  { id: "racer", triggers: [{ event: `${appId}/racer` }] },
  async ({ event, step, group }) => {
    const data = event.data as Data & { nap_s: number };
    const first = await group.parallel({ mode: "race" }, () =>
      Promise.race([
        step.waitForEvent("go", {
          event: `${appId}/go`,
          timeout: "300s",
          if: "async.data.key == event.data.key",
        }),
        step.sleep("nap", `${data.nap_s}s`).then(() => null),
      ]),
    );
    const after = await step.run("after", () => bump(data, "after"));
    return { winner: first === null ? "sleep" : "event", event: first?.data ?? null, after };
  },
);

// A sleep and a step.run in one parallel group (Promise.all).
const napgroup = inngest.createFunction(
  { id: "napgroup", triggers: [{ event: `${appId}/napgroup` }] },
  async ({ event, step }) => {
    const data = event.data as Data;
    const [, work] = await Promise.all([
      step.sleep("nap", "1s"),
      step.run("work", () => (bump(data, "work"), "worked")),
    ]);
    return { work, calls: counts(data, "work") };
  },
);

// Two invokes of `child`, a send and a step.run in one parallel group (Promise.all).
const fanout = inngest.createFunction(
  { id: "fanout", triggers: [{ event: `${appId}/fanout` }] },
  async ({ event, step }) => {
    const data = event.data as Data;
    const [one, two, sent, work] = await Promise.all([
      step.invoke("one", { function: child, data: { key: data.key, n: 1, fail: false } }),
      step.invoke("two", { function: child, data: { key: data.key, n: 2, fail: false } }),
      step.sendEvent("send", { name: `${appId}/announced`, data: { key: data.key } }),
      step.run("work", () => (bump(data, "work"), "worked")),
    ]);
    return { children: [one, two], sent: sent.ids.length, work };
  },
);

const handler = serve({
  client: inngest,
  functions: [
    sequential, flaky, doomed, mourned, napper, parallel, waiter, laggard, ticker, dozer, hog,
    tardy, cancellable, child, parent, announcer, listener, pair, racer, napgroup,
    fanout,
  ],
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
  if (url.pathname === "/release" && req.method === "POST") {
    gate(url.searchParams.get("key") ?? "").open();
    return reply(res, 200, { released: true });
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
