"""A small helper for writing stsguard policies in Python.

It turns the three WIT exports of `stsguard:policy/policy@0.2.0` into a
`Policy` object that works with plain Python values:

- settings are a dataclass: JSON keys in camelCase map to snake_case fields,
  a missing key takes the field's default, an unknown key or a value of the
  wrong type is refused (like the Rust SDK's `deny_unknown_fields`), and the
  dataclass's own `validate()` checks the rest (raise `ValueError`);
- `evaluate(request, settings)` gets a `Request` (the object already parsed to
  a dict) and returns a `Verdict` built with `accept()`, `reject()`, `set()`
  and `warn()`;
- ANY exception raised by your code becomes the WIT `result` error, with its
  type, message and where it was raised: the host then applies the policy's
  `failurePolicy`. Without this wrapper componentize-py traps the instance
  (`wasm unreachable`) and the reason is lost.

The same module runs natively (`python3 -m unittest`): the host's log then
goes to stderr. Keep this file as it is; your policy lives in `policy.py`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import traceback
import types
import typing
from typing import Any, Callable, Iterable, Optional

try:  # inside the component: the bindings componentize-py generates
    from componentize_py_types import Err as _Err
    from wit_world.imports import host as _host
    from wit_world.imports import types as _wit
except ImportError:  # natively, for unit tests
    _host = None
    _wit = None

    class _Err(Exception):  # type: ignore[no-redef]
        def __init__(self, value: str):
            super().__init__(value)
            self.value = value


__all__ = [
    "Error",
    "Policy",
    "Request",
    "SettingsError",
    "Verdict",
    "get",
    "log",
    "pointer",
    "read_file",
]


class Error(Exception):
    """Raise it when the policy cannot decide (an object it cannot read...).

    The message becomes the WIT error as it is, without the exception's type
    or location; the host applies the policy's `failurePolicy`.
    """


class SettingsError(ValueError):
    """Settings that are refused; `ValueError` from `validate()` works too."""


# --------------------------------------------------------------------------
# Logging


class _Log:
    """`log.info("...")`: a line in the host's structured log, tagged with the
    policy and the request's uid. One evaluation may write 100 lines or 16 KiB
    (print() and stderr included); the host drops the rest."""

    _LEVELS = ("trace", "debug", "info", "warn", "error")

    def __call__(self, level: str, message: str) -> None:
        if level not in self._LEVELS:
            raise ValueError(f"log level must be one of {', '.join(self._LEVELS)}, not {level!r}")
        if _host is None:
            print(f"[{level}] {message}", file=sys.stderr)
        else:
            _host.log(getattr(_wit.Level, level.upper()), str(message))

    def trace(self, message: str) -> None:
        self("trace", message)

    def debug(self, message: str) -> None:
        self("debug", message)

    def info(self, message: str) -> None:
        self("info", message)

    def warn(self, message: str) -> None:
        self("warn", message)

    def error(self, message: str) -> None:
        self("error", message)


log = _Log()


# --------------------------------------------------------------------------
# Small JSON helpers


def get(value: Any, *path: Any, default: Any = None) -> Any:
    """`get(obj, "spec", "replicas", default=1)`: the value at `path`, or
    `default` when a step is missing or `null` (Kubernetes treats both alike).
    Integers in `path` index lists."""
    for step in path:
        if isinstance(value, dict):
            value = value.get(step)
        elif isinstance(value, list) and isinstance(step, int) and -len(value) <= step < len(value):
            value = value[step]
        else:
            return default
        if value is None:
            return default
    return value


def pointer(*steps: Any) -> str:
    """`pointer("metadata", "annotations", "example.com/key")` is
    `/metadata/annotations/example.com~1key` (RFC 6901)."""
    return "".join("/" + str(s).replace("~", "~0").replace("/", "~1") for s in steps)


def read_file(name: str) -> str:
    """The text of a file beside the policy, read when the component is built
    (at module level: componentize-py runs the top level of your modules at
    build time and keeps the result). A running policy has no file system."""
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, name), encoding="utf-8") as f:
        return f.read()


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# --------------------------------------------------------------------------
# Verdict


class Verdict:
    """What `evaluate` returns. Build it with the class methods and chain:

        Verdict.accept()
        Verdict.reject("spec.replicas is 50, more than ...")
        Verdict.accept().set("/spec/minReadySeconds", 10).warn("set spec.minReadySeconds to 10")
    """

    __slots__ = ("allowed", "message", "warnings", "fields")

    def __init__(self, allowed: bool = True, message: Optional[str] = None):
        self.allowed = allowed
        self.message = message
        self.warnings: list[str] = []
        # (pointer, value) pairs, applied in order by the host.
        self.fields: list[tuple[str, Any]] = []

    @classmethod
    def accept(cls) -> "Verdict":
        """Allow the object unchanged (until `set` is called)."""
        return cls(True)

    @classmethod
    def reject(cls, message: str) -> "Verdict":
        """Deny: the message reaches the user as `policy <name> denied
        StatefulSet <ns>/<name>: <message>`. Say what is wrong and how to fix it."""
        return cls(False, str(message))

    def set(self, pointer: str, value: Any) -> "Verdict":
        """Allow with the value at `pointer` (RFC 6901, see `pointer()`) set to
        `value` (anything `json.dumps` takes). Objects missing on the way are
        created; array elements must exist; "" is the whole object. A value
        already in place changes nothing."""
        if not self.allowed:
            raise Error(f"Verdict.set({pointer!r}) on a verdict that rejects")
        if not isinstance(pointer, str) or (pointer and not pointer.startswith("/")):
            raise Error(f"Verdict.set: {pointer!r} is not a JSON pointer (it starts with `/`)")
        self.fields.append((pointer, value))
        return self

    def warn(self, warning: str) -> "Verdict":
        """Add a warning (kubectl prints it). Explain every change you make."""
        self.warnings.append(str(warning))
        return self

    def __repr__(self) -> str:
        return (
            f"Verdict(allowed={self.allowed!r}, message={self.message!r}, "
            f"warnings={self.warnings!r}, fields={self.fields!r})"
        )

    def _to_wit(self) -> Any:
        mutation = None
        if self.fields:
            mutation = _wit.Mutation_Set(
                [_wit.Field(p, _dumps(v)) for p, v in self.fields]
            )
        return _wit.Verdict(self.allowed, self.message, list(self.warnings), mutation)


# --------------------------------------------------------------------------
# Request


class Request:
    """One CREATE or UPDATE of an object the policy targets."""

    __slots__ = ("raw", "object", "_object_text")

    def __init__(self, raw: dict, obj: Any, object_text: Optional[str] = None):
        #: The AdmissionRequest as the API server sent it, without `object`.
        self.raw = raw
        #: The object (dict), as the policies before this one left it.
        self.object = obj
        self._object_text = object_text

    @property
    def uid(self) -> str:
        return self.raw.get("uid", "")

    @property
    def operation(self) -> str:
        """`CREATE` or `UPDATE`."""
        return self.raw.get("operation", "")

    @property
    def kind(self) -> dict:
        """`{"group": "apps", "version": "v1", "kind": "StatefulSet"}`."""
        return self.raw.get("kind") or {}

    @property
    def name(self) -> str:
        """The object's name; `prefix*` for a `generateName`."""
        name = self.raw.get("name") or get(self.object, "metadata", "name")
        if name:
            return name
        prefix = get(self.object, "metadata", "generateName")
        return f"{prefix}*" if prefix else ""

    @property
    def namespace(self) -> str:
        return self.raw.get("namespace") or ""

    @property
    def dry_run(self) -> bool:
        return bool(self.raw.get("dryRun"))

    @property
    def username(self) -> str:
        return get(self.raw, "userInfo", "username", default="")

    @property
    def old_object(self) -> Optional[dict]:
        """The stored object of an UPDATE; None on CREATE."""
        return self.raw.get("oldObject")


# --------------------------------------------------------------------------
# Settings


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _expected(keys: list[str]) -> str:
    # serde's wording, so Python and Rust policies read alike.
    quoted = [f"`{k}`" for k in keys]
    if not quoted:
        return "there are no fields"
    if len(quoted) == 1:
        return f"expected {quoted[0]}"
    if len(quoted) == 2:
        return f"expected {quoted[0]} or {quoted[1]}"
    return "expected one of " + ", ".join(quoted)


def _type_name(value: Any) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
        type(None): "null",
    }.get(type(value), type(value).__name__)


_UNION_TYPE = getattr(types, "UnionType", None)  # `int | None`, Python >= 3.10


def _convert(value: Any, hint: Any, path: str) -> Any:
    def wrong(expected: str) -> SettingsError:
        got = "null" if value is None else f"{_type_name(value)} {_dumps(value)}"
        return SettingsError(f"`{path}`: expected {expected}, not {got}")

    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any or hint is object:
        return value
    if origin is typing.Union or (origin is not None and origin is _UNION_TYPE):
        options = [a for a in args if a is not type(None)]
        if value is None and len(options) < len(args):
            return None
        errors = []
        for option in options:
            try:
                return _convert(value, option, path)
            except SettingsError as e:
                errors.append(e)
        raise errors[0]
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise wrong("an object")
        return _build(hint, value, path + ".")
    if hint is bool:
        if not isinstance(value, bool):
            raise wrong("a boolean")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise wrong("an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong("a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise wrong("a string")
        return value
    if hint is list or origin is list:
        if not isinstance(value, list):
            raise wrong("an array")
        item = args[0] if args else Any
        return [_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise wrong("an object")
        item = args[1] if len(args) == 2 else Any
        return {k: _convert(v, item, f"{path}.{k}") for k, v in value.items()}
    return value


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    by_key = {f.metadata.get("key", _camel(f.name)): f for f in fields}
    unknown = [k for k in data if k not in by_key]
    if unknown:
        where = f"`{prefix[:-1]}`: " if prefix else ""
        raise SettingsError(f"{where}unknown field `{unknown[0]}`, {_expected(list(by_key))}")
    kwargs = {
        f.name: _convert(data[key], hints.get(f.name, Any), prefix + key)
        for key, f in by_key.items()
        if key in data
    }
    return cls(**kwargs)


def _parse_settings(cls: Optional[type], text: str) -> Any:
    text = (text or "").strip()
    try:
        data = {} if text in ("", "null") else json.loads(text)
    except ValueError as e:
        raise SettingsError(f"not valid JSON: {e}") from None
    if cls is None:
        if data:
            raise SettingsError(f"unknown field `{next(iter(data))}`, there are no fields")
        return None
    if not isinstance(data, dict):
        raise SettingsError(f"expected an object, not {_type_name(data)}")
    settings = _build(cls, data)
    validate = getattr(settings, "validate", None)
    if callable(validate):
        validate()
    return settings


# --------------------------------------------------------------------------
# The policy and its exports


def _describe(e: BaseException) -> str:
    """`KeyError: 'spec' (policy.py, line 42, in evaluate)`."""
    if isinstance(e, Error):
        return str(e)
    text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    frames = traceback.extract_tb(e.__traceback__)
    # The innermost frame outside this module says where it went wrong.
    mine = [f for f in frames if not f.filename.endswith("stsguard_policy.py")] or frames
    if mine:
        f = mine[-1]
        text += f" ({f.filename.rsplit('/', 1)[-1]}, line {f.lineno}, in {f.name})"
    return text


def _fail(prefix: str, e: BaseException) -> _Err:
    if isinstance(e, _Err):
        return e
    return _Err(prefix + _describe(e))


def _settings_error(e: BaseException) -> _Err:
    # A SettingsError or a plain ValueError from validate() is the message the
    # operator reads; anything else is a bug and says what and where.
    if type(e) in (SettingsError, ValueError):
        return _Err(f"invalid settings: {e}")
    return _fail("invalid settings: ", e)


_OPERATIONS_WITH_OBJECT = ("CREATE", "UPDATE")


class Policy:
    """A policy, from its metadata, settings class and evaluate function.

    `WitWorld = policy.export()` at the end of `policy.py` is what
    componentize-py exports.
    """

    def __init__(
        self,
        *,
        name: str,
        version: str,
        description: str,
        evaluate: Callable[[Request, Any], Verdict],
        targets: Iterable[tuple[str, str, str]],
        mutating: bool = False,
        settings: Optional[type] = None,
        settings_schema: str = "{}",
    ):
        self.name = name
        self.version = version
        self.description = description
        self.mutating = mutating
        self.targets = [tuple(t) for t in targets]
        self.settings = settings
        self.settings_schema = settings_schema
        self._evaluate = evaluate
        if settings is not None and not dataclasses.is_dataclass(settings):
            raise TypeError("settings must be a dataclass")

    # The logic, with plain Python values: what unit tests call.

    def parse_settings(self, settings: Any = None) -> Any:
        """Settings (a dict, JSON text or None) as the settings class;
        raises `SettingsError` (or the `ValueError` of `validate()`)."""
        text = settings if isinstance(settings, str) else _dumps(settings or {})
        return _parse_settings(self.settings, text)

    def targets_kind(self, kind: dict) -> bool:
        group, version, name = kind.get("group", ""), kind.get("version", ""), kind.get("kind", "")
        return any(
            g == group and v in ("*", version) and k in ("*", name) for g, v, k in self.targets
        )

    def check(self, request: dict, settings: Any = None) -> Verdict:
        """Evaluates an AdmissionRequest (with its `object`) natively: for
        tests. Exceptions propagate as they are."""
        rest = {k: v for k, v in request.items() if k != "object"}
        return self._run(rest, request.get("object"), self.parse_settings(settings))

    def _run(self, raw: dict, obj: Any, settings: Any) -> Verdict:
        if (
            not self.targets_kind(raw.get("kind") or {})
            or raw.get("operation") not in _OPERATIONS_WITH_OBJECT
            or obj is None
        ):
            return Verdict.accept()
        verdict = self._evaluate(Request(raw, obj), settings)
        if not isinstance(verdict, Verdict):
            raise TypeError(f"evaluate must return a Verdict, not {type(verdict).__name__}")
        if verdict.fields and not self.mutating:
            raise Error("the policy sets values but its metadata says mutating=False")
        return verdict

    def export(self) -> type:
        """The class componentize-py instantiates: `WitWorld = policy.export()`."""
        policy = self

        class WitWorld:
            def metadata(self) -> Any:
                return _wit.Metadata(
                    name=policy.name,
                    version=policy.version,
                    description=policy.description,
                    mutating=policy.mutating,
                    targets=[_wit.Target(g, v, k) for g, v, k in policy.targets],
                    settings_schema=policy.settings_schema,
                )

            def validate_settings(self, settings: str) -> None:
                try:
                    _parse_settings(policy.settings, settings)
                except BaseException as e:  # noqa: BLE001 - any error, never a trap
                    raise _settings_error(e) from None

            def evaluate(self, request: str, object: str, settings: str) -> Any:
                try:
                    parsed = _parse_settings(policy.settings, settings)
                except BaseException as e:  # noqa: BLE001
                    raise _settings_error(e) from None
                try:
                    raw = json.loads(request)
                    obj = json.loads(object)
                except ValueError as e:
                    raise _Err(f"cannot read the AdmissionRequest: {e}") from None
                try:
                    return policy._run(raw, obj, parsed)._to_wit()
                except BaseException as e:  # noqa: BLE001
                    raise _fail("", e) from None

        return WitWorld
