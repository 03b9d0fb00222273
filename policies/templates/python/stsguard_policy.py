"""A small helper for writing stsguard policies in Python.

It turns the three WIT exports of `stsguard:policy/policy@0.3.0` into a
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
  (`wasm unreachable`) and the reason is lost;
- `get_object()` and `list_objects()` read cluster objects of the kinds the
  policy declares in `reads` (the WIT import `cluster`), as dicts; a read
  with no answer raises `ReadError`.

The same module runs natively (`python3 -m unittest`): the host's log then
goes to stderr, and reads are answered by the fake cluster a test installs
(`with fake_cluster([...]):`). Keep this file as it is; your policy lives in
`policy.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import sys
import traceback
import types
import typing
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Optional, Union

try:  # inside the component: the bindings componentize-py generates
    from componentize_py_types import Err as _Err
    from wit_world.imports import cluster as _cluster
    from wit_world.imports import host as _host
    from wit_world.imports import types as _wit
except ImportError:  # natively, for unit tests
    _cluster = None
    _host = None
    _wit = None

    class _Err(Exception):  # type: ignore[no-redef]
        def __init__(self, value: str):
            super().__init__(value)
            self.value = value


__all__ = [
    "Error",
    "Kind",
    "Policy",
    "ReadError",
    "Request",
    "SettingsError",
    "Verdict",
    "fake_cluster",
    "get",
    "get_object",
    "list_objects",
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
# Reading the cluster


class Kind(NamedTuple):
    """A kind of cluster object, as a manifest names it: `Kind("v1", "Service")`,
    `Kind("policy/v1", "PodDisruptionBudget")`, `Kind("storage.k8s.io/v1",
    "StorageClass")`. One kind by name, no wildcards. A plain `("v1",
    "Service")` tuple is the same kind."""

    api_version: str
    kind: str

    def __str__(self) -> str:
        return f"{self.api_version} {self.kind}"

    @property
    def group(self) -> str:
        """The API group: "" for the core group (`v1`)."""
        return self.api_version.rpartition("/")[0]


class ReadError(Error):
    """A cluster read with no answer. `reason` says why, `message` (and
    `str()`) is the host's explanation:

    - `not_granted`: the kind is not in the policy's `reads`;
    - `not_synced`: the host does not know the kind's objects (its cache has
      not finished its first list, RBAC, the kind is not installed, no
      cluster; natively: no fake cluster installed);
    - `too_large`: a list past a quarter of the policy's memoryLimit in JSON:
      narrow it by namespace or label selector;
    - `invalid`: a bad label selector, a namespace for a cluster-scoped kind,
      none for `get_object` of a namespaced one.

    Not found is no error: `get_object` returns None, `list_objects` [].
    Uncaught, it fails the evaluation with its message (the host then applies
    the policy's failurePolicy), like any `Error`.
    """

    REASONS = ("not_granted", "not_synced", "too_large", "invalid")

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


KindLike = Union[Kind, "tuple[str, str]"]


def get_object(kind: KindLike, namespace: Optional[str], name: str) -> Optional[dict]:
    """`get_object(SERVICE, request.namespace, "web")`: one object as a dict,
    or None when there is none. `namespace` is None for cluster-scoped kinds
    (`get_object(STORAGE_CLASS, None, "fast")`) and required for namespaced
    ones. The kind must be in the policy's `reads`; raises `ReadError`."""
    kind = _kind(kind)
    if _cluster is None:
        text = _native(kind).get(kind, namespace, name)
    else:
        try:
            text = _cluster.get_object(
                _wit.ResourceKind(kind.api_version, kind.kind), namespace, name
            )
        except _Err as e:
            raise _read_error(e.value) from None
    return None if text is None else json.loads(text)


def list_objects(kind: KindLike, namespace: Optional[str] = None, selector: str = "") -> list:
    """`list_objects(PDB, request.namespace, "app=web")`: the objects of a kind
    in one namespace (None: every namespace, and cluster-scoped kinds) that
    the label selector selects (kubectl's syntax, `app=web,tier in
    (a,b),!canary`; "" selects all), as dicts sorted by namespace, then name.
    The kind must be in the policy's `reads`; raises `ReadError`."""
    kind = _kind(kind)
    if _cluster is None:
        parsed = _Selector.parse(selector)
        text = _native(kind).list(kind, namespace, parsed)
    else:
        try:
            text = _cluster.list_objects(
                _wit.ResourceKind(kind.api_version, kind.kind), namespace, selector
            )
        except _Err as e:
            raise _read_error(e.value) from None
    return json.loads(text)


@contextlib.contextmanager
def fake_cluster(objects: Iterable[dict] = (), *, memory_limit: int = 64 << 20) -> Iterator[None]:
    """For native tests: reads inside the `with` block are answered from
    `objects` (dicts with apiVersion, kind and metadata.name; a `List`'s items
    count one by one) by the host's rules, and nothing else (every kind is
    known; a kind without objects lists empty):

        with fake_cluster([{"apiVersion": "v1", "kind": "Service",
                            "metadata": {"name": "web", "namespace": "default"}}]):
            verdict = policy.check(request, settings)

    A read by a policy's `evaluate` of a kind outside its `reads` raises
    ReadError not_granted; a namespaced object without a namespace is in
    `default`; `metadata.managedFields` and the last-applied annotation are
    dropped; a list may hand over a quarter of `memory_limit` (the host's
    default memoryLimit, 64Mi) in JSON. Inside the component this has no effect:
    the host answers."""
    global _fake
    previous, _fake = _fake, _FakeCluster(objects, memory_limit)
    try:
        yield
    finally:
        _fake = previous


_REASONS = {
    "NotGranted": "not_granted",
    "NotSynced": "not_synced",
    "TooLarge": "too_large",
    "Invalid": "invalid",
}


def _read_error(value: Any) -> ReadError:
    # componentize-py raises Err(ReadError_NotGranted("...")) and so on.
    reason = _REASONS.get(type(value).__name__.rpartition("_")[2], "invalid")
    return ReadError(reason, str(getattr(value, "value", value)))


def _kind(kind: Any) -> Kind:
    if isinstance(kind, tuple) and len(kind) == 2 and all(isinstance(k, str) for k in kind):
        return Kind(*kind)
    raise TypeError(f'a kind is Kind(api_version, kind), e.g. Kind("v1", "Service"), not {kind!r}')


def _kind_problem(kind: Kind) -> Optional[str]:
    """What makes `kind` name no one kind (the host's rule), or None."""

    def named(text: str) -> bool:
        return bool(text) and all(c.isascii() and (c.isalnum() or c in "./-") for c in text)

    api_version, name = kind
    if not named(api_version) or api_version.count("/") > 1:
        return (
            f"`{api_version}` is not an apiVersion (expected e.g. `v1`, `policy/v1`, "
            "`storage.k8s.io/v1`)"
        )
    if not named(name) or "/" in name:
        return f"`{name}` is not a kind (expected one kind by name, e.g. `Service`: no wildcards)"
    if not api_version.rpartition("/")[2] or kind.group.endswith("."):
        return f"`{api_version}` is not an apiVersion"
    return None


# The kinds Kubernetes itself defines outside namespaces, by (group, kind):
# what the offline context and the fake take as cluster-scoped (any other kind
# is namespaced).
_CLUSTER_SCOPED = {
    ("", "Namespace"), ("", "Node"), ("", "PersistentVolume"), ("", "ComponentStatus"),
    ("storage.k8s.io", "StorageClass"), ("storage.k8s.io", "CSIDriver"),
    ("storage.k8s.io", "CSINode"), ("storage.k8s.io", "VolumeAttachment"),
    ("storage.k8s.io", "VolumeAttributesClass"), ("scheduling.k8s.io", "PriorityClass"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("apiregistration.k8s.io", "APIService"),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding"),
    ("admissionregistration.k8s.io", "MutatingAdmissionPolicy"),
    ("admissionregistration.k8s.io", "MutatingAdmissionPolicyBinding"),
    ("node.k8s.io", "RuntimeClass"), ("networking.k8s.io", "IngressClass"),
    ("networking.k8s.io", "IPAddress"), ("networking.k8s.io", "ServiceCIDR"),
    ("certificates.k8s.io", "CertificateSigningRequest"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
    ("resource.k8s.io", "DeviceClass"), ("resource.k8s.io", "ResourceSlice"),
}

_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

# The fake cluster a test installs (`fake_cluster`), and the kinds the policy
# being evaluated declares (None outside an evaluation: a helper a test calls
# directly may read any kind).
_fake: Optional["_FakeCluster"] = None
_declared: Optional[list] = None


def _native(kind: Kind) -> "_FakeCluster":
    if _fake is None:
        raise ReadError(
            "not_synced",
            f"{kind} cannot be read: natively, reads are answered only by a fake cluster; "
            "install one in the test: `with fake_cluster([...objects...]):`",
        )
    if _declared is not None and kind not in _declared:
        declares = ", ".join(str(k) for k in _declared) or "none"
        raise ReadError(
            "not_granted",
            f"the policy read {kind}, which its metadata does not declare in `reads` (it "
            f"declares: {declares}); declare it, and the operator grants it in the policy's "
            "`reads`",
        )
    return _fake


class _FakeCluster:
    """Objects by kind, then (namespace, name), each kept as the JSON text a
    read returns; cluster-scoped objects have namespace ""."""

    def __init__(self, objects: Iterable[dict], memory_limit: int):
        self.max_list_bytes = memory_limit // 4
        self.kinds: dict = {}
        for obj in objects:
            if isinstance(obj, dict) and obj.get("kind") == "List":  # `kubectl get -o yaml`
                items = obj.get("items")
                for item in items if isinstance(items, list) else []:
                    self.add(item)
            else:
                self.add(obj)

    def add(self, obj: dict) -> None:
        if not isinstance(obj, dict):
            raise TypeError(f"fake_cluster: an object is a dict, not {type(obj).__name__}")
        obj = json.loads(_dumps(obj))  # a copy, as JSON has it
        string = lambda v: v if isinstance(v, str) else ""  # noqa: E731
        kind = Kind(string(obj.get("apiVersion")), string(obj.get("kind")))
        problem = _kind_problem(kind)
        if problem:
            raise ValueError(f"fake_cluster: an object needs apiVersion and kind: {problem}")
        metadata = obj.get("metadata")
        name = string(metadata.get("name")) if isinstance(metadata, dict) else ""
        if not name:
            raise ValueError(f"fake_cluster: a {kind} without metadata.name")
        namespace = string(metadata.get("namespace"))
        if (kind.group, kind.kind) in _CLUSTER_SCOPED:
            if namespace:
                raise ValueError(
                    f"fake_cluster: {kind} {name} has namespace `{namespace}`, but {kind} is "
                    "cluster-scoped"
                )
            metadata.pop("namespace", None)
        elif not namespace:
            # Where `kubectl apply` would put it.
            namespace = metadata["namespace"] = "default"
        metadata.pop("managedFields", None)
        annotations = metadata.get("annotations")
        if isinstance(annotations, dict):
            annotations.pop(_LAST_APPLIED, None)
            if not annotations:
                del metadata["annotations"]
        labels = metadata.get("labels")
        labels = labels if isinstance(labels, dict) else {}
        labels = {k: v for k, v in labels.items() if isinstance(v, str)}
        self.kinds.setdefault(kind, {})[(namespace, name)] = (labels, _dumps(obj))

    def _namespaced(self, kind: Kind, namespace: Optional[str]) -> bool:
        """Checks the namespace of a read against the kind's scope."""
        namespaced = (kind.group, kind.kind) not in _CLUSTER_SCOPED
        if not namespaced and namespace is not None:
            raise ReadError(
                "invalid",
                f"{kind} is cluster-scoped: read it without a namespace (not `{namespace}`)",
            )
        if namespaced and namespace == "":
            raise ReadError(
                "invalid",
                f"{kind} is namespaced: give a namespace, or none to list every namespace",
            )
        return namespaced

    def get(self, kind: Kind, namespace: Optional[str], name: str) -> Optional[str]:
        if self._namespaced(kind, namespace) and namespace is None:
            raise ReadError(
                "invalid", f"{kind} is namespaced: `get` needs the namespace of `{name}`"
            )
        found = self.kinds.get(kind, {}).get((namespace or "", name))
        return found[1] if found else None

    def list(self, kind: Kind, namespace: Optional[str], selector: "_Selector") -> str:
        self._namespaced(kind, namespace)
        selected = [
            json_text
            for (ns, _), (labels, json_text) in sorted(self.kinds.get(kind, {}).items())
            if (namespace is None or ns == namespace) and selector.matches(labels)
        ]
        size = sum(len(t.encode()) for t in selected) + max(len(selected) - 1, 0) + 2
        if size > self.max_list_bytes:
            scope = "every namespace" if namespace is None else f"namespace {namespace}"
            labelled = f" with labels `{selector}`" if selector.requirements else ""
            raise ReadError(
                "too_large",
                f"listing {kind} in {scope}{labelled} gives {len(selected)} objects, {size} bytes "
                f"of JSON, more than the {self.max_list_bytes} bytes a read may hand this policy "
                "(a quarter of its memoryLimit); narrow the list by namespace or label selector, "
                "or raise memoryLimit",
            )
        return "[" + ",".join(selected) + "]"


class _Selector:
    """A label selector in kubectl's syntax, as the host parses and matches it
    (k8s.io/apimachinery `pkg/labels`): `app=web`, `app==web`, `app!=web`,
    `tier in (a,b)`, `tier notin (a,b)`, `canary`, `!canary`, `n>1`, `n<9`,
    joined by commas, all of which must hold. `!=` and `notin` also select
    objects without the label."""

    _EXAMPLE = "(expected e.g. `app=web,tier in (a,b),!canary`)"

    def __init__(self, requirements: list):
        # (operator, key, values): operator in exists, !, in, notin, >, <.
        self.requirements = requirements

    @classmethod
    def parse(cls, text: str) -> "_Selector":
        try:
            return cls(cls._parse(text))
        except ValueError as e:
            raise ReadError("invalid", str(e)) from None

    @classmethod
    def _parse(cls, text: str) -> list:
        if not isinstance(text, str):
            raise ValueError(f"a label selector is a string, not {text!r}")
        parts, depth, start = [], 0, 0
        for i, c in enumerate(text):
            if c == "(":
                depth += 1
            elif c == ")":
                if depth == 0:
                    raise ValueError(f"label selector `{text}` has a `)` without `(`")
                depth -= 1
            elif c == "," and depth == 0:
                parts.append(text[start:i])
                start = i + 1
        if depth:
            raise ValueError(f"label selector `{text}` has a `(` without `)`")
        parts.append(text[start:])
        requirements = []
        for part in (p.strip() for p in parts):
            if not part:
                if not text.strip():
                    continue
                raise ValueError(
                    f"label selector `{text}` has an empty requirement (two commas, or one at "
                    "the end)"
                )
            try:
                requirements.append(cls._requirement(part))
            except ValueError as e:
                raise ValueError(f"label selector `{text}`: {e} {cls._EXAMPLE}") from None
        return requirements

    @classmethod
    def _requirement(cls, part: str) -> tuple:
        if part.startswith("!"):
            return ("!", _label_key(part[1:].strip()), ())
        for operator, name in (("==", "in"), ("!=", "notin"), ("=", "in"), (">", ">"), ("<", "<")):
            if operator in part:
                key, _, value = part.partition(operator)
                key, value = _label_key(key.strip()), value.strip()
                if name in (">", "<"):
                    return (name, key, (_label_integer(value),))
                return (name, key, (_label_value(value),))
        # `key`, `key in (a,b)`, `key notin (a,b)`
        words = part.split(None, 1)
        key = _label_key(words[0])
        if len(words) == 1:
            return ("exists", key, ())
        rest = words[1].strip()
        space = next((i for i, c in enumerate(rest) if c.isspace()), None)
        if space is not None:
            operator, values = rest[:space], rest[space + 1 :].strip()
        elif "(" in rest:
            at = rest.index("(")
            operator, values = rest[:at].strip(), rest[at:]
        else:
            raise ValueError(f"`{part}` is not a requirement")
        if not (values.startswith("(") and values.endswith(")")):
            raise ValueError(f"`{part}`: the values of `{operator}` go in parentheses")
        values = tuple(_label_value(v.strip()) for v in values[1:-1].split(","))
        if operator not in ("in", "notin"):
            raise ValueError(f"`{part}`: unknown operator `{operator}` (in, notin)")
        return (operator, key, values)

    def matches(self, labels: dict) -> bool:
        for operator, key, values in self.requirements:
            value = labels.get(key)
            if operator == "exists":
                ok = value is not None
            elif operator == "!":
                ok = value is None
            elif operator == "in":
                ok = value is not None and value in values
            elif operator == "notin":
                ok = value is None or value not in values
            else:
                number, bound = _integer_or_none(value), values[0]
                ok = number is not None and (number > bound if operator == ">" else number < bound)
            if not ok:
                return False
        return True

    def __str__(self) -> str:
        def show(operator: str, key: str, values: tuple) -> str:
            if operator == "exists":
                return key
            if operator == "!":
                return f"!{key}"
            if operator in (">", "<"):
                return f"{key}{operator}{values[0]}"
            if len(values) == 1:
                return f"{key}{'=' if operator == 'in' else '!='}{values[0]}"
            return f"{key} {operator} ({','.join(values)})"

        return ",".join(show(*r) for r in self.requirements)


_LABEL_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?")
_LABEL_PREFIX = re.compile(r"[a-z0-9.-]{1,253}")
_INTEGER = re.compile(r"[+-]?[0-9]+")


def _label_key(key: str) -> str:
    """`[prefix/]name`: name 1-63 alphanumerics, `-`, `_`, `.`, beginning and
    ending alphanumeric; prefix a DNS subdomain."""
    prefix, slash, name = key.partition("/")
    if not slash:
        prefix, name = None, key
    if _LABEL_NAME.fullmatch(name) and (prefix is None or _LABEL_PREFIX.fullmatch(prefix)):
        return key
    raise ValueError(f"`{key}` is not a valid label key")


def _label_value(value: str) -> str:
    """Empty, or up to 63 characters as a key's name part."""
    if value == "" or _LABEL_NAME.fullmatch(value):
        return value
    raise ValueError(f"`{value}` is not a valid label value")


def _integer_or_none(value: Optional[str]) -> Optional[int]:
    if value is None or not _INTEGER.fullmatch(value):
        return None
    number = int(value)
    return number if -(2**63) <= number < 2**63 else None


def _label_integer(value: str) -> int:
    number = _integer_or_none(value)
    if number is None:
        raise ValueError(f"`{value}` is not an integer (> and < compare numbers)")
    return number


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
    if isinstance(e, _Err) and isinstance(e.value, str):
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
        reads: Iterable[KindLike] = (),
    ):
        self.name = name
        self.version = version
        self.description = description
        self.mutating = mutating
        self.targets = [tuple(t) for t in targets]
        self.settings = settings
        self.settings_schema = settings_schema
        #: The kinds `evaluate` reads with `get_object` and `list_objects`.
        self.reads: list[Kind] = []
        for kind in reads:
            kind = _kind(kind)
            problem = _kind_problem(kind)
            if problem:
                raise ValueError(f"reads: {problem}")
            if kind in self.reads:
                raise ValueError(f"reads: {kind} is named twice")
            self.reads.append(kind)
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
        tests. Exceptions propagate as they are; cluster reads are answered by
        the fake cluster the test installs (`with fake_cluster([...]):`)."""
        rest = {k: v for k, v in request.items() if k != "object"}
        return self._run(rest, request.get("object"), self.parse_settings(settings))

    def _run(self, raw: dict, obj: Any, settings: Any) -> Verdict:
        if (
            not self.targets_kind(raw.get("kind") or {})
            or raw.get("operation") not in _OPERATIONS_WITH_OBJECT
            or obj is None
        ):
            return Verdict.accept()
        global _declared
        previous, _declared = _declared, self.reads
        try:
            verdict = self._evaluate(Request(raw, obj), settings)
        finally:
            _declared = previous
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
                    reads=[_wit.ResourceKind(k.api_version, k.kind) for k in policy.reads],
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
