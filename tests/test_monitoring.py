#!/usr/bin/env python3
"""test_monitoring.py -- checks of monitoring/ (Prometheus rules, Grafana dashboards) that need
no running pipeline, and the assertions of the live test (tests/test_monitoring_live.sh).

  test_monitoring.py static SHE_BIN
      dashboards: valid JSON, unique panel ids, every panel has targets with an expression and
      unique refIds, the provisioned datasource uid, panels inside the 24-column grid and not
      overlapping, unique dashboard uids; provisioning YAML names the datasource uid the panels
      use and a dashboards path; every recording rule a dashboard or rule uses is defined; every
      metric name referenced follows the she_ naming rules (core/metrics.h); prometheus.yml's
      static targets are the metrics addresses the code listens on by default
      (`she <command> --help`), one per component, and its rule files exist.
  test_monitoring.py names
      prints every metric name referenced by the rules and dashboards (one per line).
  test_monitoring.py config OUT TARGETS_JSON COMPONENT=HOST:PORT...
      writes OUT: monitoring/prometheus.yml for the live test -- its rule file, its she-local
      job with the given components' addresses (the others dropped), its she-pipeline job
      reading TARGETS_JSON (what `she pipeline` writes), one-second intervals.
  test_monitoring.py traffic SERVE_URL SECONDS
      judge requests to `she serve` (distinct queries, so both roles get some) and a few
      malformed ones, one a second, for SECONDS.
  test_monitoring.py live PROMETHEUS_URL METRICS_URL...
      against a Prometheus scraping a running pipeline: the expected series answer PromQL
      queries, every rule evaluates without error, every dashboard query runs, and every
      metric referenced by an alert, a recording rule or a panel exists in the union of the
      components' live /metrics outputs ("no dead panels").

Exit status 0 = pass, 1 = fail (the reasons on stderr)."""
import glob
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml

SRC = os.environ.get("SHE_SOURCE_DIR") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MON = os.path.join(SRC, "monitoring")
RULES = os.path.join(MON, "rules", "she-alerts.yml")
DASHBOARDS = sorted(glob.glob(os.path.join(MON, "grafana", "dashboards", "*.json")))
DATASOURCES = os.path.join(MON, "grafana", "provisioning", "datasources", "she-prometheus.yml")
PROVIDERS = os.path.join(MON, "grafana", "provisioning", "dashboards", "she.yml")

# A metric name in PromQL: she_... not part of a longer identifier or of a recording rule name
# (she:<what>:<window>); label names never start with she_.
METRIC_RE = re.compile(r"(?<![\w:])she_[A-Za-z0-9_]+(?![\w:])")
RECORDING_RE = re.compile(r"(?<![\w:])she:[A-Za-z0-9_:]+")
# Grafana's variables, with what stands in for them in a query sent to Prometheus.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}

# Which component serves which family (for the report of missing metrics).
OWNERS = [("she_serve_", "serve"), ("she_eval", "evaluate"), ("she_canary_", "canary"),
          ("she_stable_version", "canary"), ("she_learner_", "learn"),
          ("she_logprob_gap", "learn"), ("she_reward_", "reward"),
          ("she_group_pass_rate", "reward"), ("she_samples_", "rollout"),
          ("she_rollouts_", "rollout"), ("she_tokens_", "rollout"),
          ("she_checkpoint_age", "rollout"), ("she_difficulty_", "control/rollout"),
          ("she_curriculum_", "control/rollout")]

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg, file=sys.stderr)


def owner(name):
    for prefix, comp in OWNERS:
        if name.startswith(prefix):
            return comp
    return "every Kafka component"


def load_rules():
    with open(RULES) as f:
        return yaml.safe_load(f)


def rule_exprs():
    """(where, expr) of every rule."""
    out = []
    for g in load_rules()["groups"]:
        for r in g["rules"]:
            out.append(("rule %s" % (r.get("alert") or r.get("record")), r["expr"]))
    return out


def dashboard_exprs():
    """(where, expr) of every panel target and annotation query of every dashboard."""
    out = []
    for path in DASHBOARDS:
        with open(path) as f:
            d = json.load(f)
        name = os.path.basename(path)
        for p in d.get("panels", []):
            for t in p.get("targets", []):
                out.append(("%s panel %d %r" % (name, p.get("id"), p.get("title")), t.get("expr", "")))
        for a in d.get("annotations", {}).get("list", []):
            if "expr" in a:
                out.append(("%s annotation %r" % (name, a.get("name")), a["expr"]))
    return out


def referenced_metrics():
    """{metric name: [where it is referenced]} over rules and dashboards."""
    refs = {}
    for where, expr in rule_exprs() + dashboard_exprs():
        for m in METRIC_RE.findall(expr):
            refs.setdefault(m, []).append(where)
    return refs


# ---------------------------------------------------------------- static checks

def check_dashboards(ds_uid):
    uids = set()
    if len(DASHBOARDS) < 5:
        fail("expected the five dashboards in monitoring/grafana/dashboards, found %d" % len(DASHBOARDS))
    for path in DASHBOARDS:
        name = os.path.basename(path)
        try:
            with open(path) as f:
                d = json.load(f)
        except ValueError as e:
            fail("%s: not valid JSON: %s" % (name, e))
            continue
        for key in ("uid", "title", "panels", "schemaVersion"):
            if key not in d:
                fail("%s: no %s" % (name, key))
        if d.get("uid") in uids:
            fail("%s: dashboard uid %s used twice" % (name, d.get("uid")))
        uids.add(d.get("uid"))
        ids, cells = set(), {}
        for p in d.get("panels", []):
            pid, title = p.get("id"), p.get("title")
            where = "%s panel %r" % (name, title)
            if not isinstance(pid, int):
                fail("%s: no integer id" % where)
            elif pid in ids:
                fail("%s: panel id %d used twice" % (where, pid))
            ids.add(pid)
            if not title:
                fail("%s panel %s: no title" % (name, pid))
            targets = p.get("targets") or []
            if not targets:
                fail("%s: no targets" % where)
            refids = [t.get("refId") for t in targets]
            if len(set(refids)) != len(refids) or None in refids:
                fail("%s: refIds missing or repeated: %s" % (where, refids))
            for t in targets:
                if not (t.get("expr") or "").strip():
                    fail("%s: target %s has no expression" % (where, t.get("refId")))
                if (t.get("datasource") or p.get("datasource") or {}).get("uid") != ds_uid:
                    fail("%s: target %s does not use datasource %s" % (where, t.get("refId"), ds_uid))
            g = p.get("gridPos") or {}
            if not all(isinstance(g.get(k), int) for k in ("x", "y", "w", "h")):
                fail("%s: gridPos incomplete: %s" % (where, g))
                continue
            if g["x"] < 0 or g["w"] < 1 or g["x"] + g["w"] > 24:
                fail("%s: outside the 24-column grid: %s" % (where, g))
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    if (x, y) in cells:
                        fail("%s overlaps panel %r" % (where, cells[(x, y)]))
                        break
                    cells[(x, y)] = title
                else:
                    continue
                break
        for a in d.get("annotations", {}).get("list", []):
            if "expr" in a and (a.get("datasource") or {}).get("uid") != ds_uid:
                fail("%s annotation %r: not on datasource %s" % (name, a.get("name"), ds_uid))


def check_provisioning():
    with open(DATASOURCES) as f:
        ds = yaml.safe_load(f)
    prom = [d for d in ds.get("datasources", []) if d.get("type") == "prometheus"]
    if len(prom) != 1 or not prom[0].get("uid") or not prom[0].get("url"):
        fail("%s: expected one prometheus datasource with a uid and a url" % DATASOURCES)
        return None
    with open(PROVIDERS) as f:
        prov = yaml.safe_load(f)
    ps = prov.get("providers", [])
    if len(ps) != 1 or ps[0].get("type") != "file" or not ps[0].get("options", {}).get("path"):
        fail("%s: expected one file provider with options.path" % PROVIDERS)
    return prom[0]["uid"]


def check_references():
    recorded = {r["record"] for g in load_rules()["groups"] for r in g["rules"] if "record" in r}
    for where, expr in rule_exprs() + dashboard_exprs():
        for name in RECORDING_RE.findall(expr):
            if name not in recorded:
                fail("%s uses the recording rule %s, which she-alerts.yml does not define" % (where, name))
    for name, where in sorted(referenced_metrics().items()):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        units = re.search(r"_(ms|milliseconds|us|microseconds|minutes|hours|kb|mb|gb)(_|$)", base)
        if units:
            fail("%s (in %s): not a base unit" % (name, where[0]))
    for g in load_rules()["groups"]:
        for r in g["rules"]:
            if "alert" not in r:
                continue
            lab, ann = r.get("labels", {}), r.get("annotations", {})
            if "for" not in r or lab.get("severity") not in ("critical", "warning", "info") or \
                    not ann.get("summary") or not ann.get("description"):
                fail("alert %s: needs for:, a severity label (critical|warning|info), a summary "
                     "and a description" % r["alert"])


def help_default(she, cmd, key):
    out = subprocess.run([she, cmd, "--help"], capture_output=True, text=True)
    if out.returncode != 0:
        return None
    m = re.search(r"^\s*%s\s.*\[default: ([^\]]*)\]" % re.escape(key), out.stdout, re.M)
    return m.group(1) if m else None


def check_targets(she):
    with open(os.path.join(MON, "prometheus.yml")) as f:
        conf = yaml.safe_load(f)
    for rf in conf.get("rule_files", []):
        if not os.path.exists(os.path.join(MON, rf)):
            fail("prometheus.yml: rule file %s does not exist" % rf)
    local = [j for j in conf["scrape_configs"] if j["job_name"] == "she-local"]
    if len(local) != 1:
        fail("prometheus.yml: no she-local job")
        return
    by_comp = {}
    for sc in local[0]["static_configs"]:
        comp = sc.get("labels", {}).get("component")
        if not comp or len(sc["targets"]) != 1:
            fail("prometheus.yml: static target %s needs one address and a component" % sc["targets"])
            continue
        if comp in by_comp:
            fail("prometheus.yml: component %s listed twice" % comp)
        by_comp[comp] = sc["targets"][0]
    keys = {"produce": "metrics.listen", "rollout": "metrics.listen", "reward": "metrics.listen",
            "learn": "metrics.listen", "control": "metrics.listen", "evaluate": "metrics.listen",
            "canary": "metrics.listen", "serve": "serve.listen"}
    for comp, key in keys.items():
        default = help_default(she, comp, key)
        if default is None:
            fail("`she %s --help` shows no default for %s" % (comp, key))
        elif by_comp.get(comp) != default:
            fail("prometheus.yml scrapes %s at %s, but `she %s` listens on %s by default (%s)"
                 % (comp, by_comp.get(comp), comp, default, key))
    extra = set(by_comp) - set(keys)
    if extra:
        fail("prometheus.yml: unknown components %s" % sorted(extra))
    pipe = [j for j in conf["scrape_configs"] if j["job_name"] == "she-pipeline"]
    files = [f for j in pipe for sd in j.get("file_sd_configs", []) for f in sd["files"]]
    if files != ["../demo-out/metrics_targets.json"]:
        fail("prometheus.yml: the she-pipeline job should read ../demo-out/metrics_targets.json "
             "(what `she pipeline` writes for make demo), not %s" % files)


def cmd_static(she):
    uid = check_provisioning()
    check_dashboards(uid)
    check_references()
    check_targets(she)
    n = len(referenced_metrics())
    print("%d dashboards, %d rules, %d metric names referenced" % (len(DASHBOARDS), len(rule_exprs()), n))


# ---------------------------------------------------------------- live checks

def get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode("utf-8", "replace")


def query(prom, expr):
    body = get("%s/api/v1/query?%s" % (prom, urllib.parse.urlencode({"query": expr})))
    d = json.loads(body)
    if d.get("status") != "success":
        raise RuntimeError("%s: %s" % (expr, d.get("error")))
    return d["data"]["result"]


def wait_for(prom, expr, what, timeout):
    """Polls until expr returns a series; returns the result or [] (after reporting)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            r = query(prom, expr)
            if r:
                return r
        except (OSError, RuntimeError):
            pass
        time.sleep(1)
    fail("no %s within %d s (query: %s)" % (what, timeout, expr))
    return []


def exposition_names(text):
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, 1)[0])
    return names


def cmd_config(out, targets_json, addrs):
    with open(os.path.join(MON, "prometheus.yml")) as f:
        conf = yaml.safe_load(f)
    conf["global"]["scrape_interval"] = conf["global"]["evaluation_interval"] = "1s"
    conf["rule_files"] = [os.path.join(MON, rf) for rf in conf["rule_files"]]
    want = dict(a.split("=", 1) for a in addrs)
    for job in conf["scrape_configs"]:
        job.pop("scrape_interval", None)
        if job["job_name"] == "she-local":
            kept = []
            for sc in job["static_configs"]:
                comp = sc["labels"]["component"]
                if comp in want:
                    sc["targets"] = [want.pop(comp)]
                    kept.append(sc)
            job["static_configs"] = kept
        for sd in job.get("file_sd_configs", []):
            sd["files"] = [targets_json]
            sd["refresh_interval"] = "1s"
    if want:
        fail("prometheus.yml's she-local job has no target for %s" % sorted(want))
    conf["scrape_configs"] = [j for j in conf["scrape_configs"]
                              if j.get("static_configs") != [] or j.get("file_sd_configs")]
    with open(out, "w") as f:
        yaml.safe_dump(conf, f, sort_keys=False)


def cmd_traffic(url, seconds):
    words = ["cordless drill", "brass hinge", "led bulb", "oak shelf", "garden hose", "wall paint"]
    t0, i = time.time(), 0
    while time.time() - t0 < seconds:
        body = {"query": "%s %d" % (words[i % len(words)], i), "title": "%s kit" % words[(i * 7) % len(words)]}
        bad = [b"{not json", b'{"query": 3}'][i % 2] if i % 5 == 4 else None
        req = urllib.request.Request(url + "/v1/judge", data=bad or json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=30).read()
        except urllib.error.HTTPError as e:
            if not bad or e.code >= 500:
                print("judge request %d: HTTP %d %s" % (i, e.code, e.read()[:200]), file=sys.stderr)
        except OSError as e:
            print("judge request %d: %s" % (i, e), file=sys.stderr)
        i += 1
        time.sleep(max(0.0, t0 + i * 1.0 - time.time()))


def cmd_live(prom, metrics_urls):
    wait = float(os.environ.get("SHE_MONITORING_WAIT_S", "120"))
    # the pipeline's targets, through its metrics_targets.json
    up = wait_for(prom, 'count(up{job="she-pipeline"} == 1) >= 5', "5 pipeline targets up", wait)
    steps = wait_for(prom, "sum(she_learner_steps_total) > 0", "learner steps", wait)
    if steps:
        print("learner steps in Prometheus: %s" % steps[0]["value"][1])
    wait_for(prom, 'she_policy_version{component="learn"} >= 1', "learner checkpoint", wait)
    wait_for(prom, 'she_checkpoint_age_seconds{component="rollout"}', "rollout hot reload", wait)
    wait_for(prom, 'she_messages_dead_lettered_total{component="rollout",topic="she.samples"} > 0',
             "dead-lettered malformed sample", wait)
    wait_for(prom, 'she_messages_failed_total{component="produce",reason="bad_row"} > 0',
             "bad row counted by produce", wait)
    flows = {(r["metric"]["topic"], r["metric"]["direction"]) for r in
             query(prom, "sum by (topic, direction) (she_messages_total) > 0")}
    for want in [("she.samples", "out"), ("she.samples", "in"), ("she.rollouts", "out"),
                 ("she.rollouts", "in"), ("she.rewarded", "out"), ("she.rewarded", "in"),
                 ("she.passrate", "out"), ("she.passrate", "in"), ("she.checkpoints", "out"),
                 ("she.deadletter", "out")]:
        if want not in flows:
            fail("she_messages_total has no %s %s series above 0 (got %s)" % (want + (sorted(flows),)))
    comps = {r["metric"].get("component") for r in query(prom, "she_consumer_lag_messages")}
    for c in ("rollout", "reward", "learn", "control"):
        if c not in comps:
            fail("no she_consumer_lag_messages from %s (got %s)" % (c, sorted(comps)))
    for expr, what in [('she_reward_mean{component="reward",step="all"}', "reward per step"),
                       ("she_group_pass_rate_count > 0", "pass-rate histogram"),
                       ('she_samples_rejected_total{reason="skip_unseen"} > 0', "rejections by reason"),
                       ('she_difficulty_threshold{component="control",bound="low"}', "difficulty band"),
                       ("she_learner_entropy", "learner entropy"),
                       ("she_reward_responses_total > 0", "rewarded responses")]:
        if not query(prom, expr):
            fail("no %s (query: %s)" % (what, expr))
    # hybrid rewards: the reward model judges steps 1 and 2, and is checked against their truth
    for metric in ("she_reward_model_score_mean", "she_reward_model_checks_total"):
        steps = {r["metric"].get("step") for r in query(prom, "count by (step) (%s)" % metric)}
        if steps != {"1", "2"}:
            fail("%s: steps %s, expected 1 and 2 (hybrid mode)" % (metric, sorted(steps)))
    if query(prom, "she_reward_format_failures_total > she_reward_responses_total"):
        fail("more format failures than responses")
    # the services, where the live test started them
    started = {r["metric"].get("component") for r in query(prom, 'up{job="she-local"}')}
    for comp, expr, what in [
            ("serve", 'count(sum by (role) (she_serve_requests_total{code="200"}) > 0) == 2',
             "judge requests answered by both roles"),
            ("serve", 'she_serve_rejected_requests_total{reason="invalid"} > 0', "rejected requests"),
            ("serve", "sum(she_serve_shadow_comparisons_total) > 0", "shadow comparisons"),
            ("evaluate", "she_evaluations_total > 0", "evaluations"),
            ("evaluate", "she_eval_macro_f1", "macro F1 per version"),
            ("canary", "she_canary_active", "canary state")]:
        if comp in started:
            wait_for(prom, expr, what, wait)
    down = query(prom, "up == 0")
    if down:
        fail("targets down: %s" % ", ".join("%s %s" % (r["metric"].get("component"), r["metric"]["instance"])
                                            for r in down))
    n_up = query(prom, "count(up == 1)")
    if not n_up or int(float(n_up[0]["value"][1])) != len(metrics_urls):
        fail("Prometheus scrapes %s targets, the test started %d" % (n_up and n_up[0]["value"][1], len(metrics_urls)))

    # every rule evaluates (let a few evaluation rounds pass first)
    time.sleep(3)
    rules = json.loads(get(prom + "/api/v1/rules"))["data"]["groups"]
    n_rules = 0
    for g in rules:
        for r in g["rules"]:
            n_rules += 1
            if r.get("health") != "ok":
                fail("rule %s: health %s %s" % (r["name"], r.get("health"), r.get("lastError", "")))
    if n_rules != len(rule_exprs()):
        fail("Prometheus loaded %d rules, she-alerts.yml has %d" % (n_rules, len(rule_exprs())))
    # every dashboard query runs
    for where, expr in dashboard_exprs():
        q = expr
        for k, v in GRAFANA_VARS.items():
            q = q.replace(k, v)
        try:
            query(prom, q)
        except (OSError, RuntimeError) as e:
            fail("%s: query fails: %s" % (where, e))

    # no dead panels: every referenced metric is in some component's live /metrics
    live, seen = set(), {}
    for url in metrics_urls:
        try:
            names = exposition_names(get(url))
        except OSError as e:
            fail("cannot read %s: %s" % (url, e))
            continue
        seen[url] = len(names)
        live |= names
    refs = referenced_metrics()
    missing = sorted(set(refs) - live)
    by_comp = {}
    for m in missing:
        by_comp.setdefault(owner(m), []).append(m)
    for comp, names in sorted(by_comp.items()):
        for m in names:
            fail("dead panel: %s (%s) is in no live /metrics output; referenced by %s"
                 % (m, comp, "; ".join(refs[m][:3])))
    print("live /metrics: %s" % json.dumps(seen))
    print("%d referenced metric names, %d found live, %d missing%s" % (
        len(refs), len(refs) - len(missing), len(missing),
        "".join("\n  missing from %s: %s" % (c, " ".join(n)) for c, n in sorted(by_comp.items()))))


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    mode = sys.argv[1]
    if mode == "static" and len(sys.argv) == 3:
        cmd_static(sys.argv[2])
    elif mode == "names":
        print("\n".join(sorted(referenced_metrics())))
    elif mode == "config" and len(sys.argv) >= 4:
        cmd_config(sys.argv[2], sys.argv[3], sys.argv[4:])
    elif mode == "traffic" and len(sys.argv) == 4:
        cmd_traffic(sys.argv[2].rstrip("/"), float(sys.argv[3]))
    elif mode == "live" and len(sys.argv) >= 4:
        cmd_live(sys.argv[2].rstrip("/"), sys.argv[3:])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    if failures:
        print("%d failure(s)" % len(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
