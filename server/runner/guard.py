"""Registration guards. A registration never wipes an app by accident: one with no functions,
for an app that has some, is refused (a worker started without its functions imported would
remove them all). And the app a function belongs to, for the scopes of worker tokens."""

from __future__ import annotations

from server.errors import FailedPrecondition
from server.runner.registry import Registry
from server.types import AppRegistration, FunctionId


async def refuse_wipe(registry: Registry, reg: AppRegistration, field: str) -> None:
    """FailedPrecondition naming `field` when `reg` has no functions and its app has some.

    Neither protocol has a field that asks for a removal on purpose, so there is no override.
    """
    if reg.functions:
        return
    await registry.refresh()  # another process may have registered the app since
    held = sum(1 for f in registry.index.all() if f.app_id == reg.app_id)
    if held:
        raise FailedPrecondition(
            f"{field}: is empty, and app {reg.app_id!r} has {held} function(s); a registration "
            "with no functions would remove them all, so it is refused (register the app "
            "with its functions)")


async def app_of_function(registry: Registry, function_id: str) -> str | None:
    """The app id of a registered function, or None; reloads once for one registered since."""
    fn = registry.index.get(FunctionId(function_id))
    if fn is None:
        await registry.refresh()
        fn = registry.index.get(FunctionId(function_id))
    return fn.app_id if fn is not None else None
