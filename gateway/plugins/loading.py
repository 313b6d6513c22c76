"""Finding a plugin's class, validating its settings, building it: once, at start-up.

`use:` is a built-in name (`cors`, `headers`, `ip-restriction`), a name registered by an installed
package under the `pygateway.plugins` entry-point group, or an import path `module:Class`. The
class is checked when the config is read (`gateway check-config` too): it must have the phases
it claims, and `config:` must validate against its `Settings` (errors name the field, as the
built-in sections' do).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from gateway.policy import PolicyDeps, implements

ENTRY_POINT_GROUP = "pygateway.plugins"
PHASES = ("stage", "handle", "after")
PLACES = ("first", "after_identity", "before_upstream")


class NoSettings(BaseModel):
    """The settings of a plugin that takes none: `config:` must be empty."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def built_in() -> dict[str, type]:
    from gateway.plugins.cors import Cors
    from gateway.plugins.headers import HeaderTransform
    from gateway.plugins.ip_restriction import IpRestriction

    return {"cors": Cors, "headers": HeaderTransform, "ip-restriction": IpRestriction}


def plugin_class(use: str) -> type:
    """The class `use` names; ValueError saying why not."""
    found = built_in().get(use)
    if found is not None:
        return found
    if ":" not in use:
        for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if entry.name == use:
                return _checked(entry.load(), use)
        raise ValueError(f"unknown plugin {use!r}: not a built-in ({', '.join(sorted(built_in()))}), "
                         f"not registered under {ENTRY_POINT_GROUP!r}, and not a 'module:Class' path")
    module_name, _, attr = use.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"plugin {use!r}: cannot import {module_name!r} ({exc})") from None
    try:
        target = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"plugin {use!r}: {module_name!r} has no {attr!r}") from None
    return _checked(target, use)


def _checked(target: Any, use: str) -> type:
    if not inspect.isclass(target):
        raise ValueError(f"plugin {use!r} is not a class")
    if not any(implements(target, p) for p in PHASES):
        raise ValueError(f"plugin {use!r} implements none of the phases {', '.join(PHASES)}")
    for phase in PHASES:
        method = getattr(target, phase, None)
        if method is None:
            continue
        if phase in ("handle", "after") and not inspect.iscoroutinefunction(method):
            raise ValueError(f"plugin {use!r}: {phase} must be `async def`")
        if phase == "stage" and inspect.iscoroutinefunction(method):
            raise ValueError(f"plugin {use!r}: stage must be a plain `def` (it runs before "
                             "anything is awaited; queue Redis work on the batch instead)")
    settings = getattr(target, "Settings", NoSettings)
    if not (inspect.isclass(settings) and issubclass(settings, BaseModel)):
        raise ValueError(f"plugin {use!r}: Settings must be a pydantic model")
    return target


def validate_settings(use: str, config: dict[str, Any]) -> BaseModel:
    """`config` validated by the plugin's `Settings`; ValueError naming each bad field."""
    cls = plugin_class(use)
    settings_cls: type[BaseModel] = getattr(cls, "Settings", NoSettings)
    try:
        return settings_cls.model_validate(config)
    except ValidationError as exc:
        problems = "; ".join(
            f"config.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" if err["loc"] else err["msg"]
            for err in exc.errors())
        raise ValueError(f"plugin {use!r}: {problems}") from None


def build(use: str, config: dict[str, Any], deps: PolicyDeps) -> Any:
    """The plugin, built from its validated settings and the dependencies it may use."""
    cls = plugin_class(use)
    plugin = cls(validate_settings(use, config), deps)
    if not isinstance(getattr(plugin, "name", None), str):
        plugin.name = use
    return plugin
