#!/usr/bin/env bash
# test_monitoring_promtool.sh -- monitoring/ through promtool (Debian package prometheus):
# both Prometheus configurations load (`promtool check config`), the rule file is valid
# (`promtool check rules`), and the rule unit tests pass (`promtool test rules`: every alert
# fires on crafted series of its failure and stays silent on healthy ones).
set -euo pipefail
SRC=${SHE_SOURCE_DIR:?SHE_SOURCE_DIR not set}
T=${SHE_TEST_TMP:-/tmp}/monitoring_promtool
command -v promtool >/dev/null || { echo "skipped: promtool not installed (Debian package prometheus)"; exit 77; }
rm -rf "$T"
mkdir -p "$T"
fail() { echo "FAIL: $*" >&2; exit 1; }

promtool check config "$SRC/monitoring/prometheus.yml" || fail "prometheus.yml"
promtool check rules "$SRC/monitoring/rules/she-alerts.yml" || fail "she-alerts.yml"
(cd "$SRC/monitoring/rules" && promtool test rules she-alerts.test.yml) || fail "rule unit tests"

# The in-cluster configuration: Debian's promtool is built without Kubernetes discovery, so
# where it refuses kubernetes_sd_configs the rest (relabelling, rule files) is checked with the
# discovery swapped for an empty static list.
k8s=$SRC/monitoring/prometheus-kubernetes.yml
if ! out=$(promtool check config "$k8s" 2>&1); then
    grep -q "field kubernetes_sd_configs not found" <<<"$out" || { echo "$out"; fail "prometheus-kubernetes.yml"; }
    mkdir -p "$T/k8s/rules"
    cp "$SRC/monitoring/rules/she-alerts.yml" "$T/k8s/rules/"
    sed 's/^\(\s*\)kubernetes_sd_configs:/\1static_configs:/; s/^\(\s*\)- role: pod$/\1- targets: []/' \
        "$k8s" >"$T/k8s/prometheus.yml"
    grep -q "kubernetes_sd_configs\|role: pod" "$T/k8s/prometheus.yml" && fail "could not swap the discovery"
    promtool check config "$T/k8s/prometheus.yml" || fail "prometheus-kubernetes.yml (discovery swapped)"
fi

# The unit tests can fail: a rule file whose pass-rate alert never fires breaks them.
mkdir -p "$T/broken"
sed 's/she:group_pass_rate:mean15m < 0.05/she:group_pass_rate:mean15m < 0/' \
    "$SRC/monitoring/rules/she-alerts.yml" >"$T/broken/she-alerts.yml"
cmp -s "$T/broken/she-alerts.yml" "$SRC/monitoring/rules/she-alerts.yml" && fail "mutation did not apply"
cp "$SRC/monitoring/rules/she-alerts.test.yml" "$T/broken/"
if (cd "$T/broken" && promtool test rules she-alerts.test.yml >/dev/null 2>&1); then
    fail "the rule unit tests pass on a broken ShePassRateCollapse"
fi
echo "ok"
