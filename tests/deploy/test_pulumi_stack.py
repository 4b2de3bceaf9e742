"""The Pulumi program, run offline against Pulumi's mocks (no CLI, no plugin, no cloud).

docs/architecture.md section 6 lists the traps; how this file avoids them:
- every run builds the stack *inside* a `@pulumi.runtime.test` function (resources made in a
  fixture are not awaited, and assertions would race them);
- checks run in an `.apply()` on the Output that decorated function returns, after every
  resource's URN has resolved, so a failed assertion fails the test (an assertion in an
  undecorated `.apply()` would be dropped silently): `test_a_failing_check_fails` proves it;
- each run gets a fresh `Mocks` object and a fresh event loop, set before `set_mocks`, on a
  thread of its own.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pulumi = pytest.importorskip("pulumi", reason="the deploy extra (pulumi) is not installed")
pytest.importorskip("pulumi_gcp", reason="the deploy extra (pulumi-gcp) is not installed")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
sys.path.insert(0, str(DEPLOY))

from itemflow_deploy.stack import Deployment, build, load_config  # noqa: E402

PROJECT = "itemflow-test"
REGION = "europe-west1"
IMAGE = f"{REGION}-docker.pkg.dev/{PROJECT}/itemflow/itemflow@sha256:" + "a" * 64
CONFIG = {
    "gcp:project": PROJECT,
    "gcp:region": REGION,
    "itemflow:image": IMAGE,
    "itemflow:secretKey": "test-secret-key",
    "itemflow:runnerToken": "test-runner-token",
    "itemflow:dbPassword": "p@ss/word",
}
# pulumi_gcp warns about its own deprecated aliases when its modules load.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pulumi_gcp")

SECRET_KEYS = ["itemflow:secretKey", "itemflow:runnerToken", "itemflow:dbPassword"]


@dataclass
class Registered:
    typ: str
    name: str
    inputs: dict[str, Any]
    state: dict[str, Any]


@dataclass
class Mocks(pulumi.runtime.Mocks):
    """Records every registration; fills in the outputs the program reads from its resources."""

    registered: list[Registered] = field(default_factory=list)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        state = dict(args.inputs)
        t, name = args.typ, args.name
        if t == "gcp:serviceaccount/account:Account":
            state["email"] = f"{args.inputs['accountId']}@{PROJECT}.iam.gserviceaccount.com"
            state["member"] = f"serviceAccount:{state['email']}"
        elif t == "gcp:cloudrunv2/service:Service":
            state["uri"] = f"https://{args.inputs['name']}-abc123-ew.a.run.app"
        elif t == "gcp:sql/databaseInstance:DatabaseInstance":
            state["privateIpAddress"] = "10.20.0.3"
            state["connectionName"] = f"{PROJECT}:{REGION}:{args.inputs['name']}"
        elif t == "gcp:redis/instance:Instance":
            state.update(host="10.20.1.4", port=6379, authString="redis-auth")
        elif t == "gcp:secretmanager/secretVersion:SecretVersion":
            state["version"] = "1"
        elif t == "gcp:secretmanager/secret:Secret":
            state["name"] = f"projects/{PROJECT}/secrets/{args.inputs['secretId']}"
        self.registered.append(Registered(t, name, dict(args.inputs), state))
        return f"{name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        raise AssertionError(f"the program must not call provider functions offline: {args.token}")

    # -- queries for the checks ---------------------------------------------------------------
    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.registered if r.typ == typ]

    def named(self, typ: str, name: str) -> Registered:
        found = [r for r in self.of_type(typ) if r.name == name]
        assert len(found) == 1, f"expected one {typ} named {name}, found {len(found)}"
        return found[0]


Check = Callable[[Deployment, Mocks], None]


def run_program(check: Check, config: dict[str, str] | None = None) -> Mocks:
    """Build the whole stack on a fresh mocks object, then run `check` once all of it resolved.

    The program runs on a thread of its own with a new event loop, set before `set_mocks`
    (required on Python 3.12+), so the test session's own loop is never touched.
    """
    mocks = Mocks()
    failure: list[BaseException] = []

    def main() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            pulumi.runtime.set_all_config({**CONFIG, **(config or {})}, SECRET_KEYS)
            pulumi.runtime.set_mocks(mocks, project="itemflow", stack="test", preview=False)

            @pulumi.runtime.test
            def program() -> pulumi.Output[None]:
                deployment = build(load_config())  # created inside the decorated function
                urns = [r.urn for r in deployment.resources]
                return pulumi.Output.all(*urns).apply(lambda _: check(deployment, mocks))

            program()
        except BaseException as exc:
            failure.append(exc)
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    thread = threading.Thread(target=main, name="pulumi-program")
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive(), "the Pulumi program did not finish in 120 s"
    if failure:
        raise failure[0]
    return mocks


def _nothing(_d: Deployment, _m: Mocks) -> None:
    return None


@pytest.fixture
def stack() -> Mocks:
    return run_program(_nothing)


SERVICE = "gcp:cloudrunv2/service:Service"
SERVICE_IAM = "gcp:cloudrunv2/serviceIamMember:ServiceIamMember"
SECRET_IAM = "gcp:secretmanager/secretIamMember:SecretIamMember"
SA = "gcp:serviceaccount/account:Account"


def sa_member(role: str) -> str:
    return f"serviceAccount:itemflow-{role}@{PROJECT}.iam.gserviceaccount.com"


def container(service: Registered) -> dict[str, Any]:
    (c,) = service.inputs["template"]["containers"]
    return c


SECRET_SIG = "4dabf18193072939515e22adb298388d"  # how Pulumi marks a secret value on the wire


def secret_value(v: Any) -> Any:
    """The plain value of an input that must have been sent as a secret."""
    assert isinstance(v, dict) and v.get(SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270", f"not a secret: {v!r}"
    return v["value"]


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueSource")) for e in c.get("envs", [])}


# --- the harness itself ---------------------------------------------------------------------------


def test_a_failing_check_fails() -> None:
    """A wrong expectation, run through the same helper, must fail: the harness is not vacuous."""

    def wrong(d: Deployment, m: Mocks) -> None:
        runner = m.named(SERVICE, "runner")
        assert runner.inputs["ingress"] == "INGRESS_TRAFFIC_ALL", "deliberately wrong"

    with pytest.raises(AssertionError, match="deliberately wrong"):
        run_program(wrong)


def test_checks_run_after_every_resource_registered() -> None:
    seen: list[int] = []

    def count(d: Deployment, m: Mocks) -> None:
        seen.append(len(m.registered))
        assert len(m.registered) >= len(d.resources)

    mocks = run_program(count)
    assert seen == [len(mocks.registered)], "the check must run once, with every resource registered"


def test_each_run_gets_fresh_mocks() -> None:
    first = run_program(_nothing)
    second = run_program(_nothing)
    assert first is not second
    assert len(first.registered) == len(second.registered) > 0


# --- the code runner ----------------------------------------------------------------------------


def test_runner_is_private_single_request_and_gen2(stack: Mocks) -> None:
    runner = stack.named(SERVICE, "runner")
    assert runner.inputs["ingress"] == "INGRESS_TRAFFIC_INTERNAL_ONLY"
    assert runner.inputs["template"]["maxInstanceRequestConcurrency"] == 1
    assert runner.inputs["template"]["executionEnvironment"] == "EXECUTION_ENVIRONMENT_GEN2"
    assert runner.inputs["template"]["serviceAccount"] == sa_member("runner").removeprefix("serviceAccount:")
    assert runner.inputs.get("invokerIamDisabled") is False
    c = container(runner)
    assert c["commands"] + c["args"] == ["itemflow", "runner", "--host", "0.0.0.0"]
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    env = env_of(c)
    assert set(env) == {"ITEMFLOW_RUNNER_TOKEN", "ITEMFLOW_SANDBOX_POOL_SIZE", "ITEMFLOW_LOG_LEVEL"}
    assert env["ITEMFLOW_SANDBOX_POOL_SIZE"] == "1"
    # The runner is given nothing but its token: no database, no secret key.
    assert "ITEMFLOW_DATABASE_URL" not in env and "ITEMFLOW_SECRET_KEY" not in env


def test_runner_account_holds_no_role(stack: Mocks) -> None:
    runner = sa_member("runner")
    # No project, folder or organization IAM of any kind is created by the stack...
    project_iam = [r for r in stack.registered if r.typ.startswith(("gcp:projects/iam", "gcp:organizations/iam",
                                                                    "gcp:folder/iam"))]
    assert project_iam == []
    # ...and the runner's account appears in exactly one binding: reading its own token.
    bindings = [r for r in stack.registered if r.inputs.get("member") == runner]
    assert [(b.typ, b.inputs["role"]) for b in bindings] == [(SECRET_IAM, "roles/secretmanager.secretAccessor")]
    assert bindings[0].name == "secret-runner-token-runner"


def test_only_api_and_worker_may_invoke_the_runner(stack: Mocks) -> None:
    invokers = sorted(r.inputs["member"] for r in stack.of_type(SERVICE_IAM)
                      if r.inputs["name"] == "itemflow-runner")
    assert invokers == [sa_member("api"), sa_member("worker")]
    assert all(r.inputs["role"] == "roles/run.invoker" for r in stack.of_type(SERVICE_IAM))


# --- the API --------------------------------------------------------------------------------------


def test_api_is_public_with_probes_and_scaling(stack: Mocks) -> None:
    api = stack.named(SERVICE, "api")
    assert api.inputs["ingress"] == "INGRESS_TRAFFIC_ALL"
    public = [r for r in stack.of_type(SERVICE_IAM) if r.inputs["member"] == "allUsers"]
    assert [(r.inputs["name"], r.inputs["role"]) for r in public] == [("itemflow-api", "roles/run.invoker")]
    scaling = api.inputs["template"]["scaling"]
    assert scaling["minInstanceCount"] >= 1
    assert scaling["maxInstanceCount"] >= scaling["minInstanceCount"]
    c = container(api)
    assert c["commands"] + c["args"] == ["itemflow", "serve", "--host", "0.0.0.0"]
    assert c["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["image"] == IMAGE


def test_api_talks_to_the_runner_and_runs_no_embedded_worker(stack: Mocks) -> None:
    env = env_of(container(stack.named(SERVICE, "api")))
    assert env["ITEMFLOW_EMBEDDED_WORKER"] == "false"
    assert env["ITEMFLOW_ENVIRONMENT"] == "production"
    assert env["ITEMFLOW_SANDBOX_URL"] == "https://itemflow-runner-abc123-ew.a.run.app"
    for var in ("ITEMFLOW_SECRET_KEY", "ITEMFLOW_RUNNER_TOKEN", "ITEMFLOW_DATABASE_URL", "ITEMFLOW_REDIS_URL"):
        ref = env[var]["secretKeyRef"]
        assert ref["version"] == "1", f"{var} must be pinned to the version the stack wrote"
    # Reaching the internal runner, Cloud SQL and Redis: all traffic through the VPC.
    assert stack.named(SERVICE, "api").inputs["template"]["vpcAccess"]["egress"] == "ALL_TRAFFIC"


# --- the workers and the migration job --------------------------------------------------------


def test_workers_are_always_on_without_ingress(stack: Mocks) -> None:
    (pool,) = stack.of_type("gcp:cloudrunv2/workerPool:WorkerPool")
    assert pool.inputs["scaling"]["scalingMode"] == "MANUAL"
    assert pool.inputs["scaling"]["manualInstanceCount"] >= 1
    assert "ingress" not in pool.inputs
    (c,) = pool.inputs["template"]["containers"]
    assert c["commands"] + c["args"] == ["itemflow", "worker"]
    env = env_of(c)
    assert env["ITEMFLOW_SANDBOX_URL"] == "https://itemflow-runner-abc123-ew.a.run.app"
    assert "ITEMFLOW_REDIS_URL" not in env
    assert pool.inputs["template"]["serviceAccount"].startswith("itemflow-worker@")
    assert pool.inputs["template"]["vpcAccess"]["egress"] == "ALL_TRAFFIC"
    # Nobody may invoke the workers: they pull from PostgreSQL.
    assert not [r for r in stack.registered if "workerPoolIam" in r.typ]


def test_migrate_job_runs_db_upgrade_with_only_the_database_url(stack: Mocks) -> None:
    (job,) = stack.of_type("gcp:cloudrunv2/job:Job")
    (c,) = job.inputs["template"]["template"]["containers"]
    assert c["commands"] + c["args"] == ["itemflow", "db", "upgrade"]
    assert [e["name"] for e in c["envs"]] == ["ITEMFLOW_DATABASE_URL"]


def test_worker_count_and_api_scaling_come_from_config() -> None:
    mocks = run_program(_nothing, {"itemflow:workerInstances": "3", "itemflow:apiMinInstances": "2",
                                   "itemflow:apiMaxInstances": "7"})
    (pool,) = mocks.of_type("gcp:cloudrunv2/workerPool:WorkerPool")
    assert pool.inputs["scaling"]["manualInstanceCount"] == 3
    scaling = mocks.named(SERVICE, "api").inputs["template"]["scaling"]
    assert (scaling["minInstanceCount"], scaling["maxInstanceCount"]) == (2, 7)


# --- secrets and accounts -------------------------------------------------------------------------


def test_each_secret_is_readable_only_by_the_accounts_that_use_it(stack: Mocks) -> None:
    readers: dict[str, set[str]] = {}
    for r in stack.of_type(SECRET_IAM):
        assert r.inputs["role"] == "roles/secretmanager.secretAccessor"
        secret = r.inputs["secretId"].removesuffix("-id").removeprefix("secret-")
        readers.setdefault(secret, set()).add(r.inputs["member"])
    assert readers == {
        "secret-key": {sa_member("api"), sa_member("worker")},
        "runner-token": {sa_member("api"), sa_member("worker"), sa_member("runner")},
        "database-url": {sa_member("api"), sa_member("worker"), sa_member("migrate")},
        "redis-url": {sa_member("api")},
    }


def test_one_account_per_workload(stack: Mocks) -> None:
    assert sorted(r.inputs["accountId"] for r in stack.of_type(SA)) == [
        "itemflow-api", "itemflow-migrate", "itemflow-runner", "itemflow-worker"]
    assert stack.named(SERVICE, "api").inputs["template"]["serviceAccount"].startswith("itemflow-api@")


def test_secret_values_come_from_config_and_stay_secret() -> None:
    def check(d: Deployment, m: Mocks) -> None:
        written = m.of_type("gcp:secretmanager/secretVersion:SecretVersion")
        versions = {r.name: secret_value(r.inputs["secretData"]) for r in written}
        assert versions["secret-secret-key-version"] == "test-secret-key"
        assert versions["secret-runner-token-version"] == "test-runner-token"
        # The password is URL-quoted into the database URL; the database is on its private IP.
        assert versions["secret-database-url-version"] == (
            "postgresql+psycopg://itemflow:p%40ss%2Fword@10.20.0.3:5432/itemflow?sslmode=require")
        assert versions["secret-redis-url-version"] == "redis://:redis-auth@10.20.1.4:6379/0"

    mocks = run_program(check)
    user = mocks.named("gcp:sql/user:User", "postgres-user")
    assert secret_value(user.inputs["password"]) == "p@ss/word"


# --- data, deletion protection, registry ----------------------------------------------------------


def test_database_and_redis_are_private(stack: Mocks) -> None:
    (db,) = stack.of_type("gcp:sql/databaseInstance:DatabaseInstance")
    assert db.inputs["databaseVersion"] == "POSTGRES_15"
    ip = db.inputs["settings"]["ipConfiguration"]
    assert ip["ipv4Enabled"] is False and ip["privateNetwork"] == "network-id"
    assert ip["sslMode"] == "ENCRYPTED_ONLY"
    assert db.inputs["settings"]["backupConfiguration"]["enabled"] is True
    (redis,) = stack.of_type("gcp:redis/instance:Instance")
    assert redis.inputs["authEnabled"] is True
    assert redis.inputs["connectMode"] == "PRIVATE_SERVICE_ACCESS"


PROTECTED = {
    SERVICE, "gcp:cloudrunv2/workerPool:WorkerPool", "gcp:cloudrunv2/job:Job",
    "gcp:sql/databaseInstance:DatabaseInstance", "gcp:redis/instance:Instance", "gcp:secretmanager/secret:Secret",
}


def test_deletion_protection_is_explicit_and_on_by_default(stack: Mocks) -> None:
    found = [r for r in stack.registered if r.typ in PROTECTED]
    assert {r.typ for r in found} == PROTECTED
    for r in found:
        assert r.inputs.get("deletionProtection") is True, f"{r.typ} {r.name}"
    (db,) = stack.of_type("gcp:sql/databaseInstance:DatabaseInstance")
    assert db.inputs["settings"]["deletionProtectionEnabled"] is True


def test_deletion_protection_can_be_turned_off_explicitly() -> None:
    mocks = run_program(_nothing, {"itemflow:deletionProtection": "false"})
    for r in (r for r in mocks.registered if r.typ in PROTECTED):
        # False, not absent: Cloud Run's own default is true.
        assert r.inputs.get("deletionProtection") is False, f"{r.typ} {r.name}"


def test_registry_and_default_image() -> None:
    def check(d: Deployment, m: Mocks) -> None:
        (repo,) = m.of_type("gcp:artifactregistry/repository:Repository")
        assert (repo.inputs["format"], repo.inputs["location"]) == ("DOCKER", REGION)

    mocks = run_program(check, {"itemflow:image": ""})
    api_image = container(mocks.named(SERVICE, "api"))["image"]
    assert api_image == f"{REGION}-docker.pkg.dev/{PROJECT}/itemflow/itemflow:latest"
    images = {container(s)["image"] for s in mocks.of_type(SERVICE)}
    assert images == {api_image}


def test_pulumi_yaml_defaults_match_the_program() -> None:
    """Pulumi.yaml documents the defaults; the program must apply the same ones."""
    import re
    from dataclasses import fields

    import yaml
    from itemflow_deploy.stack import StackConfig

    declared = yaml.safe_load((DEPLOY / "Pulumi.yaml").read_text())["config"]
    defaults = {f.name: f.default for f in fields(StackConfig)}
    checked = 0
    for key, spec in declared.items():
        assert ":" not in key, f"{key}: declare only this project's keys"
        if "default" in spec:
            field_name = re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()
            assert defaults[field_name] == spec["default"], key
            checked += 1
        else:
            assert key in {"secretKey", "runnerToken", "dbPassword"}, f"{key} would be required"
    assert checked >= 5
