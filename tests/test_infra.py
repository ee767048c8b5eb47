"""The Azure path (infra/, azure.yaml, scripts/azd/), checked as far as can be offline: every Bicep file
parses (pycep-parser), no key or secret is a parameter default, an output or a listKeys() call, every
service has key auth disabled, the role assignments are the ones docs/azure.md names (with the same
built-in ids), the Container App's environment holds every setting the cloud app reads (derived from
labkit/config.py and the Dockerfile's `cloud` stage, not listed here), and azure.yaml points at files
that exist. Nothing here deploys or calls Azure: what only a subscription can show is listed in
docs/azure.md ("What was verified")."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from pycep import BicepParser
from pydantic import SecretStr

from labkit.config import REPO_ROOT, SERVICES, ConfigError, Settings
from labkit.monitor.export import AZURE_CONNECTION_VAR
from labkit.safety.azure import check_configured
from labkit.store import CosmosStore

INFRA = REPO_ROOT / "infra"
HOOK = REPO_ROOT / "scripts" / "azd" / "postprovision.sh"
DOCS = REPO_ROOT / "docs" / "azure.md"
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# a name that says it holds a credential (parameters, outputs, variables written to .env, env vars)
SECRET_NAME = re.compile(r"key|secret|password|passwd|connection|token|credential|sas", re.I)
# azure-identity: DefaultAzureCredential's managed identity takes a user-assigned identity's client id
# from this variable (no key is set in the cloud, so every Azure client signs in this way)
MANAGED_IDENTITY_VAR = "AZURE_CLIENT_ID"


# ---------------------------------------------------------------------------------------------------
# parsing helpers
# ---------------------------------------------------------------------------------------------------
def _bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


@cache
def _parsed(relative: str) -> dict[str, Any]:
    return BicepParser().parse(file_path=REPO_ROOT / relative)


def _all_parsed() -> dict[str, dict[str, Any]]:
    return {str(p.relative_to(REPO_ROOT)): _parsed(str(p.relative_to(REPO_ROOT))) for p in _bicep_files()}


def _body(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource's or module's object, under its `if (...)` condition if it has one."""
    config = resource["config"]
    return config["config"] if "condition" in config else config


def _resources(type_: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(file, symbolic name, body) of every deployed (not `existing`) resource of one type."""
    return [(f, name, _body(r)) for f, doc in _all_parsed().items()
            for name, r in (doc.get("resources") or {}).items() if r["type"] == type_ and not r["existing"]]


def _walk(node: Any) -> Any:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _functions(node: Any) -> set[str]:
    return {n["function"]["type"] for n in _walk(node) if isinstance(n, dict) and isinstance(n.get("function"), dict)}


def _container_app() -> dict[str, Any]:
    ((_, _, app),) = _resources("Microsoft.App/containerApps")
    return app


def _container() -> dict[str, Any]:
    (container,) = _container_app()["properties"]["template"]["containers"]
    return container


def _dockerfile_stages() -> list[tuple[str, str]]:
    """(name, text) of every stage of the Dockerfile, in order."""
    text = (REPO_ROOT / "Dockerfile").read_text()
    parts = re.split(r"^FROM ", text, flags=re.M)[1:]
    return [(re.search(r"\sAS\s+(\S+)", p.splitlines()[0], re.I)[1], p) for p in parts]  # type: ignore[index]


def _hook_written_names() -> list[str]:
    """The variable names the postprovision hook writes to .env: its ENV_VARS array and literal lines."""
    text = HOOK.read_text()
    array = re.search(r"^ENV_VARS=\(\n(.*?)^\)", text, re.M | re.S)
    assert array, "scripts/azd/postprovision.sh must list what it writes in ENV_VARS=( ... )"
    names = array[1].split()
    names += re.findall(r"printf '#? ?([A-Z][A-Z0-9_]*)=", text)
    return names


# ---------------------------------------------------------------------------------------------------
# Bicep: parses, no keys anywhere
# ---------------------------------------------------------------------------------------------------
def test_every_bicep_file_parses_and_every_module_and_loaded_file_exists() -> None:
    files = _bicep_files()
    assert INFRA / "main.bicep" in files and len(files) >= 8, files
    for path in files:
        doc = _parsed(str(path.relative_to(REPO_ROOT)))  # raises on a syntax pycep does not accept
        for name, module in (doc.get("modules") or {}).items():
            assert module["type"] == "local", f"{path.name}: module {name} is not a local file"
            assert (path.parent / module["detail"]["path"]).is_file(), f"{path.name}: module {name}"
        for node in _walk(doc):
            if isinstance(node, dict) and isinstance(node.get("function"), dict) \
                    and node["function"]["type"].startswith("load_"):
                assert (path.parent / node["function"]["parameters"]["file_path"]).is_file(), path.name
    assert _parsed("infra/main.bicep")["globals"]["scope"]["value"] == "subscription"


def test_no_secret_is_a_parameter_default_and_no_key_is_listed_or_output() -> None:
    for file, doc in _all_parsed().items():
        for name, param in (doc.get("parameters") or {}).items():
            secure = any(d.get("type") == "secure" for d in param["decorators"])
            if secure or SECRET_NAME.search(name):
                assert param.get("default") is None, f"{file}: parameter {name} has a default"
        # listKeys(), listConnectionStrings(), list*(): none, in any form
        assert not {f for f in _functions(doc) if f.startswith("list")}, file
        for name, output in (doc.get("outputs") or {}).items():
            assert not SECRET_NAME.search(name), f"{file}: output {name}"
            text = json.dumps(output["value"])
            assert not re.search(r"ConnectionString|InstrumentationKey|[kK]eys?\b|primary|secondary", text), \
                f"{file}: output {name} reads a secret"
    raw = "\n".join(p.read_text() for p in INFRA.rglob("*") if p.is_file())
    assert not re.search(r"\blist[A-Z]\w*\s*\(", raw), "no list*() call (listKeys, listConnectionStrings...)"
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    for name in parameters:
        assert not SECRET_NAME.search(name), f"main.parameters.json: {name}"


def test_every_service_has_key_auth_disabled() -> None:
    accounts = _resources("Microsoft.CognitiveServices/accounts")
    assert {b["kind"] for _, _, b in accounts} == {"OpenAI", "ContentSafety"}
    for file, name, body in accounts:
        props = body["properties"]
        assert props["disableLocalAuth"] is True, f"{file}: {name}"
        assert props["customSubDomainName"], f"{file}: {name} needs a custom subdomain for Entra ID"
    for type_ in ("Microsoft.Search/searchServices", "Microsoft.DocumentDB/databaseAccounts"):
        ((file, name, body),) = _resources(type_)
        assert body["properties"]["disableLocalAuth"] is True, f"{file}: {name}"
        assert "authOptions" not in body["properties"], f"{file}: {name}: authOptions would re-enable keys"
    ((_, _, registry),) = _resources("Microsoft.ContainerRegistry/registries")
    assert registry["properties"]["adminUserEnabled"] is False
    ((_, _, environment),) = _resources("Microsoft.App/managedEnvironments")
    assert environment["properties"]["appLogsConfiguration"]["destination"] == "azure-monitor"  # no shared key


def test_cosmos_database_and_container_are_what_the_store_uses() -> None:
    doc = _parsed("infra/modules/cosmos.bicep")
    ((_, _, account),) = _resources("Microsoft.DocumentDB/databaseAccounts")
    assert {"name": "EnableServerless"} in account["properties"]["capabilities"]
    ((_, _, container),) = _resources("Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers")
    assert doc["variables"]["containerName"]["value"] == CosmosStore.CONTAINER
    assert container["properties"]["resource"]["partitionKey"] == {"paths": ["/id"], "kind": "Hash"}
    main = _parsed("infra/main.bicep")["parameters"]
    assert main["cosmosDatabaseName"]["default"] == Settings.model_fields["azure_cosmos_database"].default


# ---------------------------------------------------------------------------------------------------
# roles: docs/azure.md, infra/roles.json and the assignments agree
# ---------------------------------------------------------------------------------------------------
def _documented_roles() -> dict[str, tuple[str, set[str]]]:
    """docs/azure.md's role table: name -> (id, {app, learner})."""
    rows = re.findall(r"^\| ([A-Za-z][^|]*?) \| `([0-9a-f-]{36})` \| ([a-z, ]+?) \| [^|]+ \|$", DOCS.read_text(), re.M)
    assert rows, "docs/azure.md needs the role table: | role | `id` | app, learner | resource |"
    return {name: (role_id, {w.strip() for w in who.split(",")}) for name, role_id, who in rows}


def _role_key(expression: Any) -> str:
    """`roles.<key>.id` inside a roleDefinitionId (subscriptionResourceId(...) or a Cosmos id string)."""
    if isinstance(expression, str):
        match = re.fullmatch(r"\$\{\w+\.id\}/sqlRoleDefinitions/\$\{roles\.(\w+)\.id\}", expression)
        assert match, expression
        return match[1]
    function = expression["function"]
    assert function["type"] == "subscription_resource_id", expression
    assert function["parameters"]["resource_type"] == "Microsoft.Authorization/roleDefinitions"
    accessor = function["parameters"]["resource_name_1"]["operator"]["operands"]
    assert accessor["operand_1"] == "roles", expression
    inner = accessor["operand_2"]["operator"]["operands"]
    assert inner["operand_2"] == "id", expression
    return str(inner["operand_1"])


def test_role_ids_and_assignments_match_the_docs() -> None:
    roles = {k: v for k, v in json.loads((INFRA / "roles.json").read_text()).items() if not k.startswith("_")}
    documented = _documented_roles()
    assert {r["name"]: r["id"] for r in roles.values()} == {n: i for n, (i, _) in documented.items()}
    assert all(GUID.match(r["id"]) for r in roles.values())
    assigned: dict[str, set[str]] = {}
    for type_ in ("Microsoft.Authorization/roleAssignments",
                  "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments"):
        for file, name, body in _resources(type_):
            key = _role_key(body["properties"]["roleDefinitionId"])
            assert key in roles, f"{file}: {name} uses roles.{key}, which infra/roles.json does not define"
            principal = body["properties"]["principalId"]
            who = {"appPrincipalId": "app", "identityPrincipalId": "app", "userPrincipalId": "learner"}[principal]
            assigned.setdefault(roles[key]["name"], set()).add(who)
            if type_.endswith("/roleAssignments"):
                # a person is a User, a managed identity a ServicePrincipal (ARM needs it for new principals)
                expected = "userPrincipalType" if who == "learner" else "ServicePrincipal"
                assert body["properties"]["principalType"] == expected, f"{file}: {name}"
                assert body["scope"], f"{file}: {name} must be scoped to its resource, not the group"
    assert assigned == {n: who for n, (_, who) in documented.items()}
    # the learner's roles exist only when azd knows who signed in
    main = _parsed("infra/main.bicep")["parameters"]
    assert main["principalId"]["default"] == "" and main["principalType"]["default"] == "User"


# ---------------------------------------------------------------------------------------------------
# the Container App
# ---------------------------------------------------------------------------------------------------
def _cloud_required_settings(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """What the cloud image needs set, from the code: the Dockerfile's `cloud` ENV, then
    Settings.missing_for every service and the Content Safety guard's own check, on an empty environment."""
    for name in list(os.environ):
        if name.startswith(("LABKIT_", "AZURE_", "OPENAI_")):
            monkeypatch.delenv(name, raising=False)
    (cloud,) = [text for name, text in _dockerfile_stages() if name == "cloud"]
    env_line = re.search(r"^ENV ((?:.*\\\n)*.*)$", cloud, re.M)
    assert env_line
    for name, value in re.findall(r"([A-Z_][A-Z0-9_]*)=(\S+)", env_line[1]):
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.labkit_backend == "azure"
    required = {name for service in SERVICES for name in settings.missing_for(service)}
    if settings.labkit_safety_backend == "azure":
        with pytest.raises(ConfigError) as error:
            check_configured(settings)
        required |= set(error.value.missing)
    return required | {MANAGED_IDENTITY_VAR, AZURE_CONNECTION_VAR}


def test_the_container_app_sets_every_setting_the_cloud_app_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    required = _cloud_required_settings(monkeypatch)
    assert {"AZURE_OPENAI_ENDPOINT", "AZURE_SEARCH_ENDPOINT", "AZURE_COSMOS_ENDPOINT",
            "AZURE_CONTENT_SAFETY_ENDPOINT"} <= required  # the derivation itself works
    env = {e["name"]: e for e in _container()["env"]}
    assert required <= set(env), f"missing in the Container App's env: {sorted(required - set(env))}"
    assert env["LABKIT_BACKEND"]["value"] == "azure" and env["LABKIT_SAFETY_BACKEND"]["value"] == "azure"
    # the notebooks' indexes (built by the hook from .env) and the app must agree: everything the hook
    # writes is an azd output and is set in the app too
    outputs = _parsed("infra/main.bicep")["outputs"]
    for name in _hook_written_names():
        if name.startswith("AZURE_"):
            assert name in env, f"{name} is written to .env but not set in the Container App"
            assert name in outputs, f"{name} is written to .env but is no output of infra/main.bicep"


def test_no_key_reaches_the_container_and_its_one_secret_is_a_reference() -> None:
    secret_fields = {name.upper() for name, field in Settings.model_fields.items()
                     if SecretStr in (getattr(field.annotation, "__args__", None) or (field.annotation,))}
    assert {"AZURE_OPENAI_API_KEY", "AZURE_SEARCH_API_KEY", "AZURE_COSMOS_KEY"} <= secret_fields
    env = {e["name"]: e for e in _container()["env"]}
    assert not secret_fields & set(env)
    for name, entry in env.items():
        if SECRET_NAME.search(name):
            assert set(entry) == {"name", "secretRef"}, f"{name} must come from a Container Apps secret"
    secrets = _container_app()["properties"]["configuration"]["secrets"]
    assert {s["name"] for s in secrets} == {e["secretRef"] for e in env.values() if "secretRef" in e}
    for secret in secrets:
        # read from the resource at deployment time, never a literal or a parameter
        assert isinstance(secret["value"], dict) and "ConnectionString" in json.dumps(secret["value"]), secret
    for path in [*INFRA.rglob("*"), HOOK, REPO_ROOT / "azure.yaml"]:
        if path.is_file():
            text = path.read_text()
            assert not [n for n in secret_fields if re.search(rf"\b{n}=", text)], f"{path} sets a key variable"


def test_the_container_app_serves_on_8000_with_health_probes() -> None:
    app = _container_app()
    ingress = app["properties"]["configuration"]["ingress"]
    assert ingress["targetPort"] == 8000 and ingress["external"] is True and ingress["allowInsecure"] is False
    (cloud,) = [text for name, text in _dockerfile_stages() if name == "cloud"]
    assert "EXPOSE 8000" in cloud and '"--port", "8000"' in cloud
    assert app["identity"]["type"] == "UserAssigned"
    assert app["properties"]["configuration"]["registries"][0]["identity"] == "identityId"  # AcrPull, no password
    # probes with the real image only: azd's placeholder does not listen on 8000 and would stall the deployment
    app_bicep = _parsed("infra/modules/app.bicep")
    placeholder = app_bicep["variables"]["placeholderImage"]["value"]
    assert placeholder.startswith("mcr.microsoft.com/") and _container()["image"] == "image"
    probes = _container()["probes"]["operator"]
    assert probes["type"] == "conditional"
    assert probes["operands"]["condition"] == {"operator": {"type": "equals", "operands": {
        "operand_1": "image", "operand_2": "placeholderImage"}}}
    assert probes["operands"]["true_value"] == []
    variable = probes["operands"]["false_value"]
    by_type = {p["type"]: p["httpGet"] for p in app_bicep["variables"][variable]["value"]}
    assert by_type["Liveness"] == {"path": "/health", "port": 8000}
    assert by_type["Startup"] == {"path": "/health", "port": 8000}
    assert by_type["Readiness"] == {"path": "/ready", "port": 8000}
    scale = app["properties"]["template"]["scale"]
    assert scale["maxReplicas"] == "maxReplicas"  # <= 1: sign-in tokens live in the replica (docs/azure.md)
    assert app_bicep["parameters"]["maxReplicas"]["default"] == 1


# ---------------------------------------------------------------------------------------------------
# azure.yaml, main.parameters.json, the hook
# ---------------------------------------------------------------------------------------------------
# keys azd's schema allows (Azure/azure-dev schemas/v1.0/azure.yaml.json): docker has no build target
DOCKER_KEYS = {"path", "context", "platform", "registry", "image", "tag", "buildArgs", "network", "remoteBuild"}
HOOK_KEYS = {"shell", "run", "continueOnError", "interactive", "windows", "posix", "secrets", "kind", "dir", "config"}


def test_azure_yaml_points_at_files_that_exist() -> None:
    project = yaml.safe_load((REPO_ROOT / "azure.yaml").read_text())
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", project["name"])
    infra = project["infra"]
    assert (REPO_ROOT / infra["path"] / f"{infra['module']}.bicep").is_file()
    assert (REPO_ROOT / infra["path"] / f"{infra['module']}.parameters.json").is_file()
    assert set(project["services"]) == {"api"}
    api = project["services"]["api"]
    assert api["host"] == "containerapp" and (REPO_ROOT / api["project"]).is_dir()
    assert set(api["docker"]) <= DOCKER_KEYS, set(api["docker"]) - DOCKER_KEYS
    assert (REPO_ROOT / api["project"] / api["docker"]["path"]).is_file()
    assert (REPO_ROOT / api["project"] / api["docker"]["context"]).is_dir()
    # azd builds the last stage: it must be `cloud`
    assert _dockerfile_stages()[-1][0] == "cloud"
    # the tag azd finds the app by
    assert _parsed("infra/modules/app.bicep")["parameters"]["serviceName"]["default"] == "api"
    runs = []
    for event, hook in project["hooks"].items():
        assert event in {"preprovision", "postprovision", "predeploy", "postdeploy", "preup", "postup",
                         "predown", "postdown"}, event
        for platform_hook in [hook, *(hook[k] for k in ("posix", "windows") if k in hook)]:
            assert set(platform_hook) <= HOOK_KEYS, platform_hook
            if "run" in platform_hook:
                runs.append(platform_hook["run"])
    assert runs == ["./scripts/azd/postprovision.sh"]
    for run in runs:
        script = REPO_ROOT / run
        assert script.is_file() and script.stat().st_mode & stat.S_IXUSR, f"{run} must exist and be executable"


def test_main_parameters_match_the_template() -> None:
    params = _parsed("infra/main.bicep")["parameters"]
    values = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert set(values) <= set(params), set(values) - set(params)
    assert {n for n, p in params.items() if p.get("default") is None} <= set(values)
    for name, entry in values.items():
        match = re.fullmatch(r"\$\{([A-Z][A-Z0-9_]*)(?:=(.*))?\}", entry["value"])
        assert match, f"{name}: {entry['value']}"
        if match[2] is not None:  # ${VAR=default}: the same default as the template's
            default = params[name]["default"]
            assert match[2] == (str(default).lower() if isinstance(default, bool) else str(default)), name


def test_the_hook_writes_only_settings_the_kit_reads_and_never_a_key() -> None:
    text = HOOK.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    written = _hook_written_names()
    fields = {name.upper() for name in Settings.model_fields}
    assert set(written) <= fields, set(written) - fields
    assert not [n for n in written if SECRET_NAME.search(n)], written
    assert MANAGED_IDENTITY_VAR not in written  # the app's identity, not the learner's
    assert "index build --strategy all" in text and "data load" in text
    subprocess.run(["bash", "-n", str(HOOK)], check=True, timeout=30)


def test_the_hook_writes_env_from_the_azd_environment(tmp_path: Path) -> None:
    """Runs the hook in a copy of the layout with a stand-in `azd` (no data step)."""
    outputs = {name: f"value-of-{name.lower()}" for name in _hook_written_names() if name.startswith("AZURE_")}
    (tmp_path / "scripts" / "azd").mkdir(parents=True)
    shutil.copy(HOOK, tmp_path / "scripts" / "azd" / HOOK.name)
    fake = tmp_path / "bin" / "azd"
    fake.parent.mkdir()
    lines = "\n".join(f'{k}="{v}"' for k, v in {"AZURE_ENV_NAME": "dev", **outputs}.items())
    fake.write_text(f"#!/bin/sh\ncat <<'EOF'\n{lines}\nEOF\n")
    fake.chmod(0o755)
    (tmp_path / ".env").write_text("AZURE_OPENAI_API_KEY=old\n")
    env = {"PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}", "LABKIT_AZD_SKIP_DATA": "1",
           "HOME": str(tmp_path)}
    subprocess.run(["sh", str(tmp_path / "scripts" / "azd" / HOOK.name)], cwd=tmp_path, env=env, check=True,
                   capture_output=True, timeout=60)
    written = dict(line.split("=", 1) for line in (tmp_path / ".env").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert written == {"LABKIT_BACKEND": "azure", **outputs}
    assert stat.S_IMODE((tmp_path / ".env").stat().st_mode) == 0o600
    (backup,) = (tmp_path / ".labkit" / "env-backups").iterdir()  # the earlier .env, kept out of git
    assert backup.read_text() == "AZURE_OPENAI_API_KEY=old\n"


# ---------------------------------------------------------------------------------------------------
# the docs
# ---------------------------------------------------------------------------------------------------
def test_docs_start_with_the_cost_warning_and_name_what_is_unverified() -> None:
    text = DOCS.read_text()
    head = "\n".join(text.splitlines()[:15])
    assert "azd down --purge" in head and "idle" in head, "the cost warning comes first"
    assert "## What was verified" in text and "Not verified" in text
    for variable in _hook_written_names():
        assert f"`{variable}`" in text, f"docs/azure.md does not name {variable}"
    assert "docs/azure.md" in (REPO_ROOT / "README.md").read_text()


def test_pycep_is_the_pinned_parser() -> None:
    pins = (REPO_ROOT / "requirements" / "base.txt").read_text()
    assert re.search(r"^pycep-parser~=0\.7\.\d+\s+#", pins, re.M)  # test_pins checks the installed version
