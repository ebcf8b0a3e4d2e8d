"""Every Redis key the server uses, built here and nowhere else.

Run state and queue keys live in a shard, named by a hash tag `{p<n>}`: every key one Lua
script touches shares its tag, so each shard sits in one Redis Cluster slot. A run belongs to
the shard its id hashes to, so the state of a run and the queue entries of its jobs can be
changed in one atomic script; `queue_shards` spreads runs over several slots.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from server.types import FunctionId, JobId, RunId

PREFIX = "plait"


def shard_of(run_id: str, shards: int) -> int:
    if shards == 1:
        return 0
    return zlib.crc32(run_id.encode()) % shards


@dataclass(frozen=True, slots=True)
class ShardKeys:
    """Keys of one shard."""

    shard: int

    @property
    def tag(self) -> str:
        return f"{PREFIX}:{{p{self.shard}}}"

    def ready(self, function_id: FunctionId | str) -> str:
        """ZSET of job ids of one function, scored by the time they become runnable (ms)."""
        return f"{self.tag}:ready:{function_id}"

    @property
    def ready_prefix(self) -> str:
        return f"{self.tag}:ready:"

    @property
    def leased(self) -> str:
        """ZSET of leased job ids scored by lease expiry (ms)."""
        return f"{self.tag}:leased"

    @property
    def lease_seq(self) -> str:
        """Counter behind lease ids."""
        return f"{self.tag}:leaseseq"

    def job(self, job_id: JobId | str) -> str:
        """HASH: run, fn, attempt, lease."""
        return f"{self.tag}:job:{job_id}"

    @property
    def job_prefix(self) -> str:
        return f"{self.tag}:job:"

    def run(self, run_id: RunId | str) -> str:
        """HASH: the run's metadata, status, event, output/error."""
        return f"{self.tag}:run:{run_id}"

    @property
    def run_prefix(self) -> str:
        return f"{self.tag}:run:"

    def steps(self, run_id: RunId | str) -> str:
        """HASH: step id -> memo JSON ({"data": …} or {"error": …})."""
        return f"{self.tag}:run:{run_id}:steps"

    def stack(self, run_id: RunId | str) -> str:
        """LIST: step ids in the order their memos were first stored (the SDKs' `stack`)."""
        return f"{self.tag}:run:{run_id}:stack"

    def planned(self, run_id: RunId | str) -> str:
        """SET: step ids planned to run as their own jobs (`<run_id>:<step_id>`), not yet
        memoised; the run's main job waits until it is empty."""
        return f"{self.tag}:run:{run_id}:planned"

    def waits(self, event_name: str) -> str:
        """HASH: field ("<run>/<step>" or "<run>/cancel:<n>") -> JSON entry {kind, run, step,
        fn, if, until, set} of this shard's waits for an event named `event_name`
        (server/state/waits.py)."""
        return f"{self.tag}:waits:{event_name}"

    def wait_scan(self, event_name: str) -> str:
        """SET of the waits fields whose `if` every event of that name evaluates."""
        return f"{self.tag}:waitscan:{event_name}"

    def wait_paths(self, event_name: str) -> str:
        """SET of the awaited events' paths indexed waits of that name compare."""
        return f"{self.tag}:waitpaths:{event_name}"

    def wait_index(self, event_name: str, path: str, value_digest: str) -> str:
        """SET of the waits fields an event of that name matches when its `path` has the
        value of that digest."""
        return f"{self.tag}:waitidx:{event_name}:{path}:{value_digest}"

    def wait_refs(self, run_id: RunId | str) -> str:
        """HASH: the run's waits fields -> "<waits key> <set key>", removed at its end."""
        return f"{self.tag}:run:{run_id}:waitrefs"

    @property
    def deadlines(self) -> str:
        """ZSET of started runs with a finish timeout, scored by their `finish_by` (ms)."""
        return f"{self.tag}:deadlines"

    @property
    def history(self) -> str:
        """STREAM of history records, drained into SQL by the history writer."""
        return f"{self.tag}:history"

    @property
    def holders(self) -> str:
        """SET of the lease holders (`<instance id>/<nonce>`, one per process start) that
        may hold leases of this shard; the executors' scavengers check each one's
        heartbeat (server/liveness.py)."""
        return f"{self.tag}:holders"

    # Flow control (issue 12). `key_id` names a key's scope and the digest of its value
    # (server/runner/flow.py); runs of a flow-controlled function all live in one shard.

    def concurrency_held(self, key_id: str) -> str:
        """ZSET: job ids holding a slot of a concurrency key, scored by their lease expiry
        when taken (a member past it is checked against `leased`)."""
        return f"{self.tag}:conc:{key_id}"

    def concurrency_waiting(self, key_id: str) -> str:
        """ZSET: job ids parked for a slot of a concurrency key, scored by their ready score."""
        return f"{self.tag}:concwait:{key_id}"

    def throttle(self, key_id: str) -> str:
        """STRING: the GCRA theoretical arrival time (ms) of a throttle key."""
        return f"{self.tag}:throttle:{key_id}"

    def rate_limit(self, key_id: str) -> str:
        """STRING: the GCRA theoretical arrival time (ms) of a rate-limit key."""
        return f"{self.tag}:ratelimit:{key_id}"

    def idempotency(self, key_id: str) -> str:
        """STRING: the run id that took an idempotency key, for 24 h."""
        return f"{self.tag}:idem:{key_id}"

    def debounce(self, key_id: str) -> str:
        """STRING: the id of the run a debounce key's events go to while it is queued."""
        return f"{self.tag}:debounce:{key_id}"

    def batch(self, key_id: str) -> str:
        """STRING: the id of the run a batch key's events are added to while it is open."""
        return f"{self.tag}:batch:{key_id}"

    def singleton(self, key_id: str) -> str:
        """STRING: the id of the latest run of a singleton key (active while not ended)."""
        return f"{self.tag}:singleton:{key_id}"

    def waiting(self, function_id: FunctionId | str, reason: str) -> str:
        """SET: run ids of a function held by flow control for `reason` (concurrency,
        throttle, debounce, batch), for the `plait_runs_waiting` gauge (checked at scrape)."""
        return f"{self.tag}:waiting:{function_id}:{reason}"


@dataclass(frozen=True, slots=True)
class Keys:
    shards: int = 1

    def shard(self, n: int) -> ShardKeys:
        return ShardKeys(n)

    def for_run(self, run_id: RunId | str) -> ShardKeys:
        return ShardKeys(shard_of(run_id, self.shards))

    def all_shards(self) -> list[ShardKeys]:
        return [ShardKeys(n) for n in range(self.shards)]

    @property
    def events(self) -> str:
        """STREAM of accepted events, consumed by the runners' group."""
        return f"{PREFIX}:{{events}}:stream"

    @property
    def events_accepted(self) -> str:
        """ZSET: ids of the events appended to the stream, scored by the append time (ms);
        the ledger the reconciler checks SQL against (server/events/reconcile.py)."""
        return f"{PREFIX}:{{events}}:accepted"

    def event_key(self, key: str) -> str:
        """STRING set for 24 h per event idempotency key."""
        return f"{PREFIX}:{{events}}:idem:{key}"

    def cron_last(self, function_id: FunctionId | str, cron: str) -> str:
        """STRING: the latest tick (ms) of one cron trigger whose run was created."""
        return f"{PREFIX}:{{cron}}:last:{function_id}:{cron}"

    def cron_disabled(self, function_id: FunctionId | str) -> str:
        """HASH: cron expression -> why the scheduler disabled that trigger of the function
        (its next tick cannot be computed); shown by GetFunction / ListFunctions."""
        return f"{PREFIX}:{{cron}}:disabled:{function_id}"

    @property
    def functions_version(self) -> str:
        """Counter bumped on every registration; runners reload their index when it moves."""
        return f"{PREFIX}:{{meta}}:fnversion"

    @property
    def cancels(self) -> str:
        """Pub/sub channel: ids of cancelled runs a worker may hold, for every executor."""
        return f"{PREFIX}:{{meta}}:cancels"

    @property
    def paused_functions(self) -> str:
        """SET of paused function ids; changed with `functions_version`, so indexes reload."""
        return f"{PREFIX}:{{meta}}:paused"

    def alive(self, instance_id: str) -> str:
        """STRING with a TTL of a couple of seconds, kept by every process named
        `instance_id` (its stream consumer name): gone, that consumer is dead."""
        return f"{PREFIX}:{{meta}}:alive:{instance_id}"

    def holder_alive(self, holder: str) -> str:
        """STRING with a TTL of a couple of seconds, kept by the one process start that
        leases as `holder`: gone, its leases are handed back at once."""
        return f"{PREFIX}:{{meta}}:holder:{holder}"
