"""`{{name}}`: a stsguard policy in Python.

- StatefulSets asking for more than `maxReplicas` replicas are denied.
- StatefulSets without `spec.minReadySeconds` get the configured value (a new
  pod must stay Ready that long before it counts as available, which slows a
  broken roll-out down). The field may change on UPDATE without restarting
  pods, so the policy sets it on CREATE and UPDATE alike.

Every change is explained by a warning, and a StatefulSet that already
complies comes back unchanged. Build with `stsguard build`; see README.md.
"""

from dataclasses import dataclass

from stsguard_policy import Policy, Request, Verdict, get, read_file


@dataclass
class Settings:
    """`settings:` in the stsguard configuration. JSON keys are the camelCase
    field names (`minReadySeconds`); a missing key takes the default, an
    unknown key or a value of the wrong type is refused."""

    min_ready_seconds: int = 10
    max_replicas: int = 10

    def validate(self) -> None:
        """Checks types cannot express. A ValueError is shown to the operator."""
        if self.min_ready_seconds < 0:
            raise ValueError(f"`minReadySeconds` must be 0 or more, not {self.min_ready_seconds}")
        if self.max_replicas < 1:
            raise ValueError(f"`maxReplicas` must be at least 1, not {self.max_replicas}")


def evaluate(request: Request, settings: Settings) -> Verdict:
    """Called for each CREATE and UPDATE of a StatefulSet; `request.object` is
    the StatefulSet as a dict. Any exception fails the evaluation (the host
    then applies the policy's failurePolicy)."""
    spec = get(request.object, "spec", default={})
    replicas = get(spec, "replicas", default=1)
    if replicas > settings.max_replicas:
        return Verdict.reject(
            f"spec.replicas is {replicas}, more than the {settings.max_replicas} this cluster "
            "allows; lower it or ask the platform team"
        )
    if get(spec, "minReadySeconds") is not None:
        return Verdict.accept()
    # The host sets the value in its copy of the object, so every other field
    # stays as the user sent it.
    return (
        Verdict.accept()
        .set("/spec/minReadySeconds", settings.min_ready_seconds)
        .warn(f"set spec.minReadySeconds to {settings.min_ready_seconds}")
    )


policy = Policy(
    name="{{name}}",
    version="0.1.0",
    description="Denies StatefulSets with more than maxReplicas replicas and gives the "
    "others spec.minReadySeconds.",
    mutating=True,
    # (group, version, kind): the host calls evaluate only for these.
    targets=[("apps", "v1", "StatefulSet")],
    # The kinds of cluster objects evaluate reads with get_object() and
    # list_objects(), e.g. [Kind("v1", "Service")], each granted in the
    # policy's entry in stsguard.yaml (see README.md). This one reads none.
    reads=[],
    settings=Settings,
    # Read at build time: the running component has no file system.
    settings_schema=read_file("settings.schema.json"),
    evaluate=evaluate,
)

# What componentize-py exports (`componentize-py ... componentize policy`).
WitWorld = policy.export()
