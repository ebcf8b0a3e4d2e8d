"""App and function ids are checked whole: a trailing newline is not part of an id."""

from __future__ import annotations

import pytest

from server.errors import InvalidArgument
from server.runner.registry import validate_registration
from server.types import AppId, AppRegistration, EventTrigger, FunctionConfig, FunctionId


def _registration(app_id: str, slug: str) -> AppRegistration:
    return AppRegistration(AppId(app_id), (FunctionConfig(
        FunctionId(f"{app_id}-{slug}"), AppId(app_id), slug, slug, (EventTrigger("a/b"),)),))


@pytest.mark.parametrize(("app_id", "slug", "field"), [
    ("shop\n", "pay", "app_id"), ("shop", "pay\n", "functions[0].id"),
])
def test_an_id_with_a_trailing_newline_is_refused(app_id: str, slug: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_registration(_registration(app_id, slug))
    assert caught.value.field == field


def test_a_plain_id_is_accepted() -> None:
    validate_registration(_registration("shop", "pay"))
