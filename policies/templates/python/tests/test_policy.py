"""Native unit tests: `python3 -m unittest` in the project folder. They call the
policy's logic with plain dicts, without building the component; `stsguard
test` (tests.yaml) then checks the built component through the real engine."""

import json
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from policy import WitWorld, policy  # noqa: E402
from stsguard_policy import (  # noqa: E402
    Kind,
    Policy,
    ReadError,
    SettingsError,
    Verdict,
    fake_cluster,
    get,
    get_object,
)


def request(**spec):
    """A CREATE AdmissionRequest for a StatefulSet with this spec."""
    return {
        "uid": "test",
        "kind": {"group": "apps", "version": "v1", "kind": "StatefulSet"},
        "operation": "CREATE",
        "name": "web",
        "namespace": "default",
        "object": {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"serviceName": "web", **spec},
        },
    }


class PolicyTest(unittest.TestCase):
    def test_sets_min_ready_seconds_and_says_so(self):
        verdict = policy.check(request(replicas=3), {"minReadySeconds": 30})
        self.assertTrue(verdict.allowed)
        self.assertEqual(verdict.fields, [("/spec/minReadySeconds", 30)])
        self.assertEqual(verdict.warnings, ["set spec.minReadySeconds to 30"])

    def test_a_compliant_statefulset_is_left_alone(self):
        verdict = policy.check(request(replicas=3, minReadySeconds=5), {})
        self.assertEqual((verdict.allowed, verdict.fields, verdict.warnings), (True, [], []))

    def test_too_many_replicas_are_denied(self):
        verdict = policy.check(request(replicas=3), {"maxReplicas": 2})
        self.assertFalse(verdict.allowed)
        self.assertEqual(
            verdict.message,
            "spec.replicas is 3, more than the 2 this cluster allows; lower it or ask the "
            "platform team",
        )

    def test_bad_settings_are_refused(self):
        with self.assertRaisesRegex(ValueError, "`maxReplicas` must be at least 1, not 0"):
            policy.parse_settings({"maxReplicas": 0})
        with self.assertRaisesRegex(SettingsError, "unknown field `maxreplicas`"):
            policy.parse_settings({"maxreplicas": 3})

    def test_an_exception_becomes_the_wit_error(self):
        # What the component returns as `result::err` (natively a stand-in Err).
        world = WitWorld()
        rest = {k: v for k, v in request(replicas=3).items() if k != "object"}
        with self.assertRaises(Exception) as caught:
            world.evaluate(json.dumps(rest), json.dumps(request()["object"]), '{"maxReplicas": "x"}')
        self.assertEqual(
            caught.exception.value,
            'invalid settings: `maxReplicas`: expected an integer, not string "x"',
        )


# A policy that reads the cluster, tested with a fake one: a StatefulSet's
# serviceName must name a Service in its namespace.
SERVICE = Kind("v1", "Service")


def needs_its_service(request, settings):
    name = get(request.object, "spec", "serviceName")
    if name and get_object(SERVICE, request.namespace, name) is None:
        return Verdict.reject(f"no Service {name} in {request.namespace}: create it")
    return Verdict.accept()


needs_service = Policy(
    name="needs-service",
    version="0.1.0",
    description="StatefulSets name an existing Service.",
    targets=[("apps", "v1", "StatefulSet")],
    reads=[SERVICE],
    evaluate=needs_its_service,
)


class ReadingTheClusterTest(unittest.TestCase):
    def test_reads_are_answered_by_the_fake_cluster(self):
        web = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}}  # in default
        with fake_cluster([web]):
            self.assertTrue(needs_service.check(request(replicas=3)).allowed)
        with fake_cluster([]):  # an empty cluster: the Service is not found
            verdict = needs_service.check(request(replicas=3))
            self.assertEqual(verdict.message, "no Service web in default: create it")
        # Without a fake cluster a read raises ReadError, as an unsynced cache
        # does in the server; uncaught, it fails the evaluation.
        with self.assertRaises(ReadError) as caught:
            needs_service.check(request(replicas=3))
        self.assertEqual(caught.exception.reason, "not_synced")

    def test_the_example_reads_nothing(self):
        self.assertEqual(policy.reads, [])


if __name__ == "__main__":
    unittest.main()
