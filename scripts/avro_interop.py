#!/usr/bin/env python3
"""avro_interop.py -- checks she's Avro encoding against fastavro, an independent implementation.

Usage: avro_interop.py SCHEMA_DIR WORK_DIR

WORK_DIR holds what `test_messages --interop-write` wrote: <case>.she.avro (single-object
messages encoded by she), expected.json ({case: {"record", "value"}}, the values shaped like
the Avro records, nested messages as objects, bytes as hex) and fingerprints.json ({file:
{"pcf", "fingerprint"}} as she computes them).  This script

  1. compares she's Parsing Canonical Form and CRC-64-AVRO fingerprint of every schema with
     fastavro's;
  2. decodes every <case>.she.avro with fastavro (marker, fingerprint, then schemaless_reader;
     nested messages the same way) and compares every field with expected.json;
  3. writes <case>.py.avro with fastavro from expected.json, and sample_v1.py.avro: the full
     sample written with the older schema sample.v1.avsc (no domain field),
for `test_messages --interop-read` to decode in she.  Exits 1 on any difference, 77 if fastavro
is missing (the test is then skipped).
"""
import io
import json
import math
import os
import re
import sys

try:
    import fastavro
    from fastavro.schema import fingerprint, to_parsing_canonical_form
except ImportError:
    print("skipped: python module fastavro is not installed "
          "(pip install -r scripts/requirements-test.txt)")
    sys.exit(77)

MAGIC = b"\xc3\x01"
# Bytes fields that hold another single-object-encoded message, and its record.
NESTED = {
    ("she.v1.RolloutGroup", "sample"): "she.v1.Sample",
    ("she.v1.RewardedGroup", "rollout"): "she.v1.RolloutGroup",
}


def full_name(schema):
    name = schema["name"]
    return name if "." in name else schema.get("namespace", "") + "." + name


class Registry:
    """Every schema in the directory, by fingerprint; the current one of each record."""

    def __init__(self, schema_dir):
        self.by_fp = {}
        self.current = {}
        self.files = {}
        for f in sorted(os.listdir(schema_dir)):
            if not f.endswith(".avsc"):
                continue
            with open(os.path.join(schema_dir, f)) as fh:
                raw = json.load(fh)
            pcf = to_parsing_canonical_form(raw)
            fp = bytes.fromhex(fingerprint(pcf, "CRC-64-AVRO"))
            entry = {"file": f, "name": full_name(raw), "raw": raw, "pcf": pcf, "fp": fp,
                     "parsed": fastavro.parse_schema(raw)}
            self.by_fp[fp] = entry
            self.files[f] = entry
            if not re.search(r"\.v\d+\.avsc$", f):
                self.current[entry["name"]] = entry

    def decode(self, data, record):
        """A single-object message of `record` -> dict (nested messages decoded too)."""
        if data[:2] != MAGIC:
            raise ValueError("bad marker %s" % data[:2].hex())
        writer = self.by_fp.get(bytes(data[2:10]))
        if writer is None:
            raise ValueError("unknown fingerprint %s" % data[2:10].hex())
        if writer["name"] != record:
            raise ValueError("message is a %s, expected %s" % (writer["name"], record))
        body = io.BytesIO(data[10:])
        value = fastavro.schemaless_reader(body, writer["parsed"],
                                           self.current[record]["parsed"])
        if body.tell() != len(data) - 10:
            raise ValueError("%d trailing bytes" % (len(data) - 10 - body.tell()))
        for (rec, field), inner in NESTED.items():
            if rec == record:
                value[field] = self.decode(value[field], inner)
        return value

    def encode(self, record, value, entry=None):
        """dict (nested messages as dicts, bytes as hex) -> single-object message."""
        entry = entry or self.current[record]
        value = from_json(entry["raw"], value, {})
        for (rec, field), inner in NESTED.items():
            if rec == record:
                value[field] = self.encode(inner, value[field])
        out = io.BytesIO()
        out.write(MAGIC + entry["fp"])
        fastavro.schemaless_writer(out, entry["parsed"], value)
        return out.getvalue()


def from_json(schema, v, named):
    """Hex strings to bytes where the schema says bytes; nested messages are left alone."""
    if isinstance(v, (bytes, dict)) and schema == "bytes":
        return v
    if isinstance(schema, str):
        if schema == "bytes":
            return bytes.fromhex(v)
        return from_json(named[schema], v, named) if schema in named else v
    if isinstance(schema, list):
        if v is None:
            return None
        return from_json(next(s for s in schema if s != "null"), v, named)
    t = schema["type"]
    if t in ("record", "enum", "fixed"):
        named[schema["name"]] = schema
        named[full_name(schema)] = schema
    if t == "record":
        return {f["name"]: from_json(f["type"], v[f["name"]], named)
                for f in schema["fields"] if f["name"] in v}
    if t == "array":
        return [from_json(schema["items"], x, named) for x in v]
    if t == "map":
        return {k: from_json(schema["values"], x, named) for k, x in v.items()}
    return from_json(t, v, named) if t == "bytes" else v


def to_json(v):
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dict):
        return {k: to_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [to_json(x) for x in v]
    return v


def differences(expected, actual, path="$"):
    if isinstance(expected, dict) and isinstance(actual, dict):
        if set(expected) != set(actual):
            return ["%s: fields %s vs %s" % (path, sorted(expected), sorted(actual))]
        return [d for k in expected for d in differences(expected[k], actual[k], path + "." + k)]
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return ["%s: %d elements vs %d" % (path, len(expected), len(actual))]
        return [d for i, (e, a) in enumerate(zip(expected, actual))
                for d in differences(e, a, "%s[%d]" % (path, i))]
    if isinstance(expected, float) or isinstance(actual, float):
        if isinstance(expected, (int, float)) and isinstance(actual, (int, float)) and \
                math.isclose(expected, actual, rel_tol=1e-7, abs_tol=1e-30):
            return []
    elif expected == actual and type(expected) is type(actual):
        return []
    return ["%s: expected %r, got %r" % (path, expected, actual)]


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    schema_dir, work = sys.argv[1], sys.argv[2]
    reg = Registry(schema_dir)
    problems = []

    with open(os.path.join(work, "fingerprints.json")) as fh:
        she_fps = json.load(fh)
    if set(she_fps) != set(reg.files):
        problems.append("schema files: she %s, fastavro %s" % (sorted(she_fps), sorted(reg.files)))
    for f, entry in sorted(reg.files.items()):
        got = she_fps.get(f, {})
        if got.get("pcf") != entry["pcf"]:
            problems.append("%s: canonical form differs:\n  she      %s\n  fastavro %s"
                            % (f, got.get("pcf"), entry["pcf"]))
        if got.get("fingerprint") != entry["fp"].hex():
            problems.append("%s: fingerprint she %s, fastavro %s"
                            % (f, got.get("fingerprint"), entry["fp"].hex()))
        print("fingerprint %-24s %s %s" % (f, entry["fp"].hex(), entry["name"]))

    with open(os.path.join(work, "expected.json")) as fh:
        expected = json.load(fh)
    for case, spec in sorted(expected.items()):
        with open(os.path.join(work, case + ".she.avro"), "rb") as fh:
            data = fh.read()
        try:
            got = to_json(reg.decode(data, spec["record"]))
        except Exception as e:  # noqa: BLE001 -- any failure is a finding to report
            problems.append("%s: fastavro cannot decode she's bytes: %s" % (case, e))
            continue
        diffs = differences(spec["value"], got)
        problems += ["%s: %s" % (case, d) for d in diffs]
        if not diffs:
            print("ok fastavro decodes %s (%d bytes)" % (case, len(data)))
        with open(os.path.join(work, case + ".py.avro"), "wb") as fh:
            fh.write(reg.encode(spec["record"], spec["value"]))

    old = dict(expected["sample_full"]["value"])
    del old["domain"]
    old["schema_version"] = 1
    with open(os.path.join(work, "sample_v1.py.avro"), "wb") as fh:
        fh.write(reg.encode("she.v1.Sample", old, reg.files["sample.v1.avsc"]))

    for p in problems:
        print("FAIL", p)
    print("%d problems" % len(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
