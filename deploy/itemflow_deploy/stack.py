"""itemflow on Google Cloud Run v2: everything one stack needs, built by `build(load_config())`.

Shape (DESIGN.md section 7):

- api      Cloud Run service, public (allUsers may invoke), `itemflow serve`; startup probe on
           /readyz (the database answers), liveness probe on /healthz.
- runner   Cloud Run service, ingress internal only, one request per instance, `itemflow runner`;
           runs as a service account with no role at all; only the API's and the worker's
           accounts hold roles/run.invoker on it. The bearer token is checked by the app too.
- worker   Cloud Run worker pool (`itemflow worker`): a pull worker serves no HTTP, so it is a
           worker pool with a fixed number of always-on instances and no ingress at all.
- migrate  Cloud Run job (`itemflow db upgrade`), executed by CI before each rollout.
- Cloud SQL for PostgreSQL 15 and Memorystore Redis on private IPs in the stack's VPC; the API,
  worker and job reach them (and the internal runner) through Direct VPC egress.
- Secret Manager: secret key, runner token, database URL (it carries the database password),
  Redis URL (it carries the AUTH string); each readable only by the accounts that use it.

The image is built and pushed by CI (`docker buildx build --platform linux/amd64 --push`) and
passed in as config `image` (a digest), so the program needs no Docker engine and no extra
provider; it is tested offline with Pulumi's mocks (tests/deploy/test_pulumi_stack.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import quote

import pulumi
import pulumi_gcp as gcp
from pulumi_gcp import cloudrunv2 as run

APIS = (
    "artifactregistry.googleapis.com",
    "compute.googleapis.com",
    "redis.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "servicenetworking.googleapis.com",
    "sqladmin.googleapis.com",
)
SECRET_ACCESSOR = "roles/secretmanager.secretAccessor"  # noqa: S105 (a role name)
RUN_INVOKER = "roles/run.invoker"
R = TypeVar("R", bound=pulumi.Resource)


@dataclass(frozen=True)
class StackConfig:
    project: str
    region: str
    secret_key: pulumi.Input[str]
    runner_token: pulumi.Input[str]
    db_password: pulumi.Input[str]
    image: str | None = None  # default: <registry>/itemflow:latest
    prefix: str = "itemflow"
    api_min_instances: int = 1
    api_max_instances: int = 10
    api_concurrency: int = 80
    runner_max_instances: int = 20
    worker_instances: int = 1
    db_tier: str = "db-custom-1-3840"
    db_high_availability: bool = False
    redis_tier: str = "BASIC"
    redis_memory_gb: int = 1
    subnet_cidr: str = "10.8.0.0/24"
    trusted_proxies: tuple[str, ...] = ()
    deletion_protection: bool = True
    log_level: str = "info"


def load_config() -> StackConfig:
    """Read the stack's configuration (`pulumi config set ...`; see docs/deploy.md)."""
    gcp_config = pulumi.Config("gcp")
    c = pulumi.Config()
    defaults = StackConfig(project="", region="", secret_key="", runner_token="", db_password="")
    proxies = c.get("trustedProxies")
    return StackConfig(
        project=gcp_config.require("project"),
        region=gcp_config.require("region"),
        secret_key=c.require_secret("secretKey"),
        runner_token=c.require_secret("runnerToken"),
        db_password=c.require_secret("dbPassword"),
        image=c.get("image"),
        prefix=c.get("prefix") or defaults.prefix,
        api_min_instances=c.get_int("apiMinInstances", defaults.api_min_instances),
        api_max_instances=c.get_int("apiMaxInstances", defaults.api_max_instances),
        api_concurrency=c.get_int("apiConcurrency", defaults.api_concurrency),
        runner_max_instances=c.get_int("runnerMaxInstances", defaults.runner_max_instances),
        worker_instances=c.get_int("workerInstances", defaults.worker_instances),
        db_tier=c.get("dbTier") or defaults.db_tier,
        db_high_availability=c.get_bool("dbHighAvailability", defaults.db_high_availability),
        redis_tier=c.get("redisTier") or defaults.redis_tier,
        redis_memory_gb=c.get_int("redisMemoryGb", defaults.redis_memory_gb),
        subnet_cidr=c.get("subnetCidr") or defaults.subnet_cidr,
        trusted_proxies=tuple(json.loads(proxies)) if proxies else (),
        deletion_protection=c.get_bool("deletionProtection", defaults.deletion_protection),
        log_level=c.get("logLevel") or defaults.log_level,
    )


@dataclass
class Deployment:
    """What `build` made, by role, for exports and tests."""

    api: run.Service
    runner: run.Service
    worker: run.WorkerPool
    migrate: run.Job
    accounts: dict[str, gcp.serviceaccount.Account]
    secrets: dict[str, gcp.secretmanager.Secret]
    registry: gcp.artifactregistry.Repository
    database: gcp.sql.DatabaseInstance
    redis: gcp.redis.Instance
    image: pulumi.Output[str]
    resources: list[pulumi.Resource] = field(default_factory=list)


def build(cfg: StackConfig) -> Deployment:
    made: list[pulumi.Resource] = []

    def keep(resource: R) -> R:
        made.append(resource)
        return resource

    p = cfg.prefix
    common = {"project": cfg.project}
    regional = {"project": cfg.project, "location": cfg.region}

    apis = [keep(gcp.projects.Service(f"api-{api.split('.')[0]}", service=api, disable_on_destroy=False, **common))
            for api in APIS]
    after_apis = pulumi.ResourceOptions(depends_on=apis)

    # --- Registry and image -------------------------------------------------------------------
    registry = keep(gcp.artifactregistry.Repository(
        "registry", repository_id=p, format="DOCKER", description="itemflow images",
        cleanup_policies=[gcp.artifactregistry.RepositoryCleanupPolicyArgs(
            id="keep-recent", action="KEEP",
            most_recent_versions=gcp.artifactregistry.RepositoryCleanupPolicyMostRecentVersionsArgs(keep_count=30))],
        **regional, opts=after_apis))
    image = pulumi.Output.from_input(cfg.image) if cfg.image else pulumi.Output.concat(
        cfg.region, "-docker.pkg.dev/", cfg.project, "/", registry.repository_id, "/itemflow:latest")

    # --- Network: Direct VPC egress for Cloud Run, private services access for SQL and Redis --
    network = keep(gcp.compute.Network("network", name=p, auto_create_subnetworks=False, **common, opts=after_apis))
    subnet = keep(gcp.compute.Subnetwork(
        "run-subnet", name=f"{p}-run", network=network.id, region=cfg.region, ip_cidr_range=cfg.subnet_cidr,
        # Traffic to *.run.app (the internal runner) and Google APIs leaves through the VPC.
        private_ip_google_access=True, **common))
    peering_range = keep(gcp.compute.GlobalAddress(
        "private-services-range", name=f"{p}-private-services", purpose="VPC_PEERING", address_type="INTERNAL",
        prefix_length=16, network=network.id, **common))
    peering = keep(gcp.servicenetworking.Connection(
        "private-services", network=network.id, service="servicenetworking.googleapis.com",
        reserved_peering_ranges=[peering_range.name]))
    vpc = run.ServiceTemplateVpcAccessArgs(
        egress="ALL_TRAFFIC",
        network_interfaces=[run.ServiceTemplateVpcAccessNetworkInterfaceArgs(network=network.id, subnetwork=subnet.id)])

    # --- Service accounts: one per workload, no project-level role for any of them ---------------
    accounts = {
        role: keep(gcp.serviceaccount.Account(
            f"sa-{role}", account_id=f"{p}-{role}", display_name=f"itemflow {role}", description=description,
            **common, opts=after_apis))
        for role, description in {
            "api": "itemflow API (Cloud Run service)",
            "worker": "itemflow workers (Cloud Run worker pool)",
            "runner": "itemflow code runner: runs user code, holds no role",
            "migrate": "itemflow database migrations (Cloud Run job)",
        }.items()
    }

    # --- Cloud SQL for PostgreSQL, private IP only ---------------------------------------------
    database = keep(gcp.sql.DatabaseInstance(
        "postgres", name=f"{p}-pg", database_version="POSTGRES_15", region=cfg.region,
        deletion_protection=cfg.deletion_protection,
        settings=gcp.sql.DatabaseInstanceSettingsArgs(
            tier=cfg.db_tier, edition="ENTERPRISE",
            availability_type="REGIONAL" if cfg.db_high_availability else "ZONAL",
            deletion_protection_enabled=cfg.deletion_protection,
            disk_autoresize=True,
            ip_configuration=gcp.sql.DatabaseInstanceSettingsIpConfigurationArgs(
                ipv4_enabled=False, private_network=network.id, ssl_mode="ENCRYPTED_ONLY"),
            backup_configuration=gcp.sql.DatabaseInstanceSettingsBackupConfigurationArgs(
                enabled=True, point_in_time_recovery_enabled=True),
        ),
        **common, opts=pulumi.ResourceOptions(depends_on=[peering, *apis])))
    keep(gcp.sql.Database("postgres-db", name="itemflow", instance=database.name, **common))
    keep(gcp.sql.User("postgres-user", name="itemflow", instance=database.name, password=cfg.db_password, **common))
    database_url = pulumi.Output.secret(pulumi.Output.all(cfg.db_password, database.private_ip_address).apply(
        lambda a: f"postgresql+psycopg://itemflow:{quote(a[0], safe='')}@{a[1]}:5432/itemflow?sslmode=require"))

    # --- Memorystore Redis (rate-limit counters shared by API replicas) -------------------------
    redis = keep(gcp.redis.Instance(
        "redis", name=f"{p}-redis", tier=cfg.redis_tier, memory_size_gb=cfg.redis_memory_gb, region=cfg.region,
        redis_version="REDIS_7_2", authorized_network=network.id, connect_mode="PRIVATE_SERVICE_ACCESS",
        auth_enabled=True, deletion_protection=cfg.deletion_protection,
        **common, opts=pulumi.ResourceOptions(depends_on=[peering, *apis])))
    redis_url = pulumi.Output.secret(pulumi.Output.all(redis.auth_string, redis.host, redis.port).apply(
        lambda a: f"redis://:{quote(a[0], safe='')}@{a[1]}:{a[2]}/0"))

    # --- Secrets, each readable by exactly the accounts that use it -----------------------------
    readers = {
        "secret-key": (cfg.secret_key, ("api", "worker")),
        "runner-token": (cfg.runner_token, ("api", "worker", "runner")),
        "database-url": (database_url, ("api", "worker", "migrate")),
        "redis-url": (redis_url, ("api",)),
    }
    secrets: dict[str, gcp.secretmanager.Secret] = {}
    versions: dict[str, gcp.secretmanager.SecretVersion] = {}
    for name, (value, who) in readers.items():
        secret = keep(gcp.secretmanager.Secret(
            f"secret-{name}", secret_id=f"{p}-{name}", deletion_protection=cfg.deletion_protection,
            replication=gcp.secretmanager.SecretReplicationArgs(auto=gcp.secretmanager.SecretReplicationAutoArgs()),
            **common, opts=after_apis))
        secrets[name] = secret
        versions[name] = keep(gcp.secretmanager.SecretVersion(
            f"secret-{name}-version", secret=secret.id, secret_data=pulumi.Output.secret(value)))
        for role in who:
            keep(gcp.secretmanager.SecretIamMember(
                f"secret-{name}-{role}", secret_id=secret.id, role=SECRET_ACCESSOR, member=accounts[role].member,
                **common))
    access = [r for r in made if isinstance(r, gcp.secretmanager.SecretIamMember)]

    def secret_env(var: str, name: str) -> run.ServiceTemplateContainerEnvArgs:
        # Pinned to the version this stack wrote: a new value rolls out a new revision.
        ref = run.ServiceTemplateContainerEnvValueSourceSecretKeyRefArgs(
            secret=secrets[name].secret_id, version=versions[name].version)
        return run.ServiceTemplateContainerEnvArgs(
            name=var, value_source=run.ServiceTemplateContainerEnvValueSourceArgs(secret_key_ref=ref))

    def env(var: str, value: pulumi.Input[str]) -> run.ServiceTemplateContainerEnvArgs:
        return run.ServiceTemplateContainerEnvArgs(name=var, value=value)

    # --- Code runner: private, one request per instance, an account with no role ----------------
    runner = keep(run.Service(
        "runner", name=f"{p}-runner", ingress="INGRESS_TRAFFIC_INTERNAL_ONLY",
        deletion_protection=cfg.deletion_protection, invoker_iam_disabled=False,
        template=run.ServiceTemplateArgs(
            service_account=accounts["runner"].email,
            max_instance_request_concurrency=1,
            # bubblewrap needs namespaces: the second-generation environment is a full Linux VM.
            execution_environment="EXECUTION_ENVIRONMENT_GEN2",
            timeout="120s",
            scaling=run.ServiceTemplateScalingArgs(min_instance_count=0, max_instance_count=cfg.runner_max_instances),
            containers=[run.ServiceTemplateContainerArgs(
                image=image, commands=["itemflow"], args=["runner", "--host", "0.0.0.0"],  # noqa: S104
                ports=run.ServiceTemplateContainerPortsArgs(container_port=8080),
                envs=[secret_env("ITEMFLOW_RUNNER_TOKEN", "runner-token"),
                      env("ITEMFLOW_SANDBOX_POOL_SIZE", "1"), env("ITEMFLOW_LOG_LEVEL", cfg.log_level)],
                resources=run.ServiceTemplateContainerResourcesArgs(
                    limits={"cpu": "1", "memory": "1Gi"}, cpu_idle=True, startup_cpu_boost=True),
                startup_probe=_startup_probe("/healthz"),
                liveness_probe=_liveness_probe("/healthz"),
            )],
        ),
        **regional, opts=pulumi.ResourceOptions(depends_on=[*apis, *access])))

    app_env = [
        env("ITEMFLOW_ENVIRONMENT", "production"),
        env("ITEMFLOW_EMBEDDED_WORKER", "false"),
        env("ITEMFLOW_SANDBOX_URL", runner.uri),
        env("ITEMFLOW_SANDBOX_GOOGLE_ID_TOKEN", "true"),  # Cloud Run IAM on the private runner
        env("ITEMFLOW_LOG_LEVEL", cfg.log_level),
        secret_env("ITEMFLOW_SECRET_KEY", "secret-key"),
        secret_env("ITEMFLOW_RUNNER_TOKEN", "runner-token"),
        secret_env("ITEMFLOW_DATABASE_URL", "database-url"),
    ]

    # --- API: public ----------------------------------------------------------------------------
    api_env = [*app_env, secret_env("ITEMFLOW_REDIS_URL", "redis-url")]
    if cfg.trusted_proxies:
        api_env.append(env("ITEMFLOW_TRUSTED_PROXIES", json.dumps(list(cfg.trusted_proxies))))
    api = keep(run.Service(
        "api", name=f"{p}-api", ingress="INGRESS_TRAFFIC_ALL", deletion_protection=cfg.deletion_protection,
        invoker_iam_disabled=False,
        template=run.ServiceTemplateArgs(
            service_account=accounts["api"].email,
            max_instance_request_concurrency=cfg.api_concurrency,
            execution_environment="EXECUTION_ENVIRONMENT_GEN2",
            scaling=run.ServiceTemplateScalingArgs(
                min_instance_count=cfg.api_min_instances, max_instance_count=cfg.api_max_instances),
            vpc_access=vpc,
            containers=[run.ServiceTemplateContainerArgs(
                image=image, commands=["itemflow"], args=["serve", "--host", "0.0.0.0"],  # noqa: S104
                ports=run.ServiceTemplateContainerPortsArgs(container_port=8000),
                envs=api_env,
                resources=run.ServiceTemplateContainerResourcesArgs(
                    limits={"cpu": "1", "memory": "512Mi"}, cpu_idle=True, startup_cpu_boost=True),
                startup_probe=_startup_probe("/readyz"),
                liveness_probe=_liveness_probe("/healthz"),
            )],
        ),
        **regional, opts=pulumi.ResourceOptions(depends_on=[*apis, *access])))
    keep(run.ServiceIamMember("api-public", name=api.name, role=RUN_INVOKER, member="allUsers", **regional))

    # Only the API and the workers may call the runner (Cloud Run checks their ID tokens).
    for role in ("api", "worker"):
        keep(run.ServiceIamMember(f"runner-invoker-{role}", name=runner.name, role=RUN_INVOKER,
                                  member=accounts[role].member, **regional))

    # --- Workers: always on, no ingress ---------------------------------------------------------
    worker = keep(run.WorkerPool(
        "worker", name=f"{p}-worker", deletion_protection=cfg.deletion_protection, launch_stage="BETA",
        scaling=run.WorkerPoolScalingArgs(scaling_mode="MANUAL", manual_instance_count=cfg.worker_instances),
        template=run.WorkerPoolTemplateArgs(
            service_account=accounts["worker"].email,
            vpc_access=run.WorkerPoolTemplateVpcAccessArgs(
                egress="ALL_TRAFFIC",
                network_interfaces=[run.WorkerPoolTemplateVpcAccessNetworkInterfaceArgs(
                    network=network.id, subnetwork=subnet.id)]),
            containers=[run.WorkerPoolTemplateContainerArgs(
                image=image, commands=["itemflow"], args=["worker"],
                envs=[_worker_env(e) for e in app_env],
                resources=run.WorkerPoolTemplateContainerResourcesArgs(limits={"cpu": "1", "memory": "512Mi"}),
            )],
        ),
        **regional, opts=pulumi.ResourceOptions(depends_on=[*apis, *access])))

    # --- Migrations: a job CI executes before rolling out a new image ---------------------------
    migrate = keep(run.Job(
        "migrate", name=f"{p}-migrate", deletion_protection=cfg.deletion_protection,
        template=run.JobTemplateArgs(task_count=1, template=run.JobTemplateTemplateArgs(
            service_account=accounts["migrate"].email, max_retries=1, timeout="600s",
            vpc_access=run.JobTemplateTemplateVpcAccessArgs(
                egress="ALL_TRAFFIC",
                network_interfaces=[run.JobTemplateTemplateVpcAccessNetworkInterfaceArgs(
                    network=network.id, subnetwork=subnet.id)]),
            containers=[run.JobTemplateTemplateContainerArgs(
                image=image, commands=["itemflow"], args=["db", "upgrade"],
                envs=[run.JobTemplateTemplateContainerEnvArgs(
                    name="ITEMFLOW_DATABASE_URL", value_source=run.JobTemplateTemplateContainerEnvValueSourceArgs(
                        secret_key_ref=run.JobTemplateTemplateContainerEnvValueSourceSecretKeyRefArgs(
                            secret=secrets["database-url"].secret_id, version=versions["database-url"].version)))],
            )],
        )),
        **regional, opts=pulumi.ResourceOptions(depends_on=[*apis, *access])))

    return Deployment(api=api, runner=runner, worker=worker, migrate=migrate, accounts=accounts, secrets=secrets,
                      registry=registry, database=database, redis=redis, image=image, resources=made)


def export(d: Deployment, cfg: StackConfig) -> None:
    pulumi.export("api_url", d.api.uri)
    pulumi.export("runner_url", d.runner.uri)
    pulumi.export("worker_pool", d.worker.name)
    pulumi.export("migrate_job", d.migrate.name)
    pulumi.export("registry", pulumi.Output.concat(
        cfg.region, "-docker.pkg.dev/", cfg.project, "/", d.registry.repository_id))
    pulumi.export("image", d.image)
    pulumi.export("database_instance", d.database.connection_name)


def _startup_probe(path: str) -> run.ServiceTemplateContainerStartupProbeArgs:
    # Up to a minute to start (migrations done, pool warm) before Cloud Run gives up.
    return run.ServiceTemplateContainerStartupProbeArgs(
        http_get=run.ServiceTemplateContainerStartupProbeHttpGetArgs(path=path),
        initial_delay_seconds=0, period_seconds=3, timeout_seconds=2, failure_threshold=20)


def _liveness_probe(path: str) -> run.ServiceTemplateContainerLivenessProbeArgs:
    return run.ServiceTemplateContainerLivenessProbeArgs(
        http_get=run.ServiceTemplateContainerLivenessProbeHttpGetArgs(path=path),
        period_seconds=15, timeout_seconds=3, failure_threshold=3)


def _worker_env(e: run.ServiceTemplateContainerEnvArgs) -> run.WorkerPoolTemplateContainerEnvArgs:
    source = None
    if e.value_source is not None:
        ref = e.value_source.secret_key_ref
        source = run.WorkerPoolTemplateContainerEnvValueSourceArgs(
            secret_key_ref=run.WorkerPoolTemplateContainerEnvValueSourceSecretKeyRefArgs(
                secret=ref.secret, version=ref.version))
    return run.WorkerPoolTemplateContainerEnvArgs(name=e.name, value=e.value, value_source=source)
