"""server/luascript.py against real Redis: pipelined script calls survive a script flush."""

from __future__ import annotations

from redis.asyncio import Redis

from server.luascript import call_pipelined


async def test_pipelined_calls_run_in_order_and_reload_flushed_scripts(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    try:
        incr = redis.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        fail = redis.register_script("return redis.error_reply('no')")
        calls = [(incr, ["k"], [2]), (fail, [], []), (incr, ["k"], [3])]
        first = await call_pipelined(redis, calls)
        assert first[0] == 2 and first[2] == 5 and isinstance(first[1], Exception)
        await redis.script_flush()
        again = await call_pipelined(redis, calls)
        assert again[0] == 7 and again[2] == 10 and isinstance(again[1], Exception)
        assert int(await redis.get("k")) == 10
    finally:
        await redis.aclose()
