#!/usr/bin/env bash
# bench_pipeline.sh -- measures the streaming pipeline for reports/pipeline.md: runs
# `she pipeline` (extra arguments are passed on, e.g. --policy DIR to skip the SFT) and reads
# its logs for
#   - end-to-end throughput: samples trained per second by the learner, from its first step to
#     its last, and rollout groups per second;
#   - the share of the learner's step time spent in Kafka + Avro (polls that returned a group,
#     decoding, announcing, committing) against the SRPO steps (`she learn`'s own accounting);
#   - groups trained, and groups too stale to train on (their samples go back to she.samples);
#   - the time from a checkpoint announcement to the rollout consumer using it (policy_watch's
#     log: verified, loaded and swapped in between two batches);
#   - the peak resident memory (VmHWM) of every component (produce logs its own).
# Usage: scripts/bench_pipeline.sh build/she OUT [she pipeline options...]
set -euo pipefail
she=${1:?usage: bench_pipeline.sh SHE OUT [pipeline options]}
out=${2:?usage: bench_pipeline.sh SHE OUT [pipeline options]}
shift 2
rm -rf "$out"
start=$(date +%s)
"$she" pipeline --out "$out" "$@" 2>"$out.pipeline.log" >"$out.stdout" || {
    tail -20 "$out.pipeline.log"; exit 1; }
echo "pipeline run: $(( $(date +%s) - start )) s ($*)"
libs=$(ldd "$she" | awk '$3 ~ /^\// {print $3}' | tr '\n' ' ')
python3 - "$out" "$out.pipeline.log" "$libs" <<'EOF'
import ctypes, re, sys, datetime
out, plog, libs = sys.argv[1], sys.argv[2], sys.argv[3].split()

def ts(line):
    return datetime.datetime.strptime(line[:23], "%Y-%m-%dT%H:%M:%S.%f")

learn = open(f"{out}/logs/learn.log").read().splitlines()
steps = [l for l in learn if re.search(r"learn: step \d+: \d+ groups", l)]
groups = sum(int(re.search(r": (\d+) groups", l).group(1)) for l in steps)
span = (ts(steps[-1]) - ts(steps[0])).total_seconds() if len(steps) > 1 else float("nan")
per_step = groups / len(steps) if steps else 0
rate = (groups - per_step) / span if span and span > 0 else float("nan")
done = [l for l in learn if "s in Kafka + Avro" in l]
share = re.search(r"([\d.]+) s in SRPO steps, ([\d.]+) s in Kafka \+ Avro \(([\d.]+)%", done[-1])
rollout = open(f"{out}/logs/rollout.log").read()
lat = [float(x) for x in re.findall(r"; ([\d.]+) s after it was announced", rollout)]
n_roll = len(re.findall(r"rolling out", rollout))
mem = dict(re.findall(r"stopping (\w+) \(peak memory (\d+) MiB\)", open(plog).read()))
# produce exits before the others: it reports its own peak as it ends.
m = re.search(r"produced .*\(peak memory (\d+) MiB\)", open(f"{out}/logs/produce.log").read())
if m:
    mem["produce"] = m.group(1)
m = re.search(r"learner done: .*\(peak memory (\d+) MiB\)", open(plog).read())
if m:
    mem["learn"] = m.group(1)
print(f"| learner steps | {len(steps)} ({groups} groups) |")
print(f"| samples trained per second (first to last step) | {rate:.2f} |")
acc = re.search(r"(\d+) groups trained, (\d+) duplicates skipped, (\d+) stale re-queued", done[-1])
pauses = len(re.findall(r"not yet consumed downstream .*: pausing", rollout))
print(f"| groups trained / stale re-queued / duplicates | {acc.group(1)} / {acc.group(3)} / "
      f"{acc.group(2)} (rollout paused {pauses} times on the backlog bound) |")
print(f"| learner: SRPO steps / Kafka + Avro | {share.group(1)} s / {share.group(2)} s "
      f"(**{share.group(3)}%** of step time) |")
if lat:
    print(f"| announcement -> rollout uses it | {len(lat)} swaps: mean {sum(lat)/len(lat):.2f} s, "
          f"max {max(lat):.2f} s |")
print("| peak memory (MiB) | " + ", ".join(f"{k} {v}" for k, v in sorted(mem.items())) + " |")

# What every process pays before it does anything: the shared libraries `she` links, loaded one
# by one into this Python process (resident anonymous + file-backed pages after each).
def rss():
    st = open("/proc/self/status").read()
    return [int(re.search(k + r":\s+(\d+)", st).group(1)) / 1024 for k in ("RssAnon", "RssFile")]
base, cost = rss(), []
for lib in libs:
    before = rss()
    try:
        ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
    except OSError:
        continue
    after = rss()
    cost.append((after[0] - before[0] + after[1] - before[1], lib.rsplit("/", 1)[-1]))
total = sum(c for c, _ in cost)
top = ", ".join(f"{n} {c:.0f}" for c, n in sorted(cost, reverse=True)[:3])
print(f"| of which loading the linked libraries (every process) | {total:.0f} MiB: {top} |")
EOF
