#!/usr/bin/env bash
# test_cli.sh -- the `she` multi-call binary: help, version, unknown commands, and bad
# configuration failing fast with exit status 2 and the file, line and key in the message.
set -u
she=${SHE_BIN:?run through ctest}
tmp=${SHE_TEST_TMP:-/tmp}/cli.$$
mkdir -p "$tmp"
passed=0 failed=0
check() { # check NAME EXPECTED_STATUS EXPECTED_STDERR_REGEX -- command...
    local name=$1 want=$2 pattern=$3
    shift 4
    timeout 20 "$@" >"$tmp/out" 2>"$tmp/err"
    local got=$?
    if [ "$got" -ne "$want" ] || ! grep -Eq -- "$pattern" "$tmp/out" "$tmp/err"; then
        echo "FAILED: $name: exit $got (want $want), output:"; cat "$tmp/out" "$tmp/err"
        failed=$((failed + 1))
    else
        passed=$((passed + 1))
    fi
}

check help 0 'broker' -- "$she" help
check no_args 2 'usage: she' -- "$she"
check version 0 '^she [0-9]+\.[0-9]+\.[0-9]+' -- "$she" version
check version_libs 0 'librdkafka 2\.' -- "$she" --version
check unknown_command 2 "unknown command 'frobnicate'" -- "$she" frobnicate
check broker_help 0 'fault' -- "$she" broker --help
check help_broker 0 'broker.count' -- "$she" help broker

printf 'broker.count=2\n\nbroker.prot=1\n' >"$tmp/unknown.properties"
check unknown_key 2 "unknown.properties:3: unknown key 'broker.prot'" -- "$she" broker --config "$tmp/unknown.properties"
printf 'broker.count=2\nthis is not a property\n' >"$tmp/malformed.properties"
check malformed_line 2 'malformed.properties:2: malformed line' -- "$she" broker --config "$tmp/malformed.properties"
check missing_file 2 "cannot open config file '$tmp/nope.properties'" -- "$she" broker --config "$tmp/nope.properties"
printf 'broker.count=99\n' >"$tmp/range.properties"
check bad_value 2 "range.properties:1: key 'broker.count': 99 is outside" -- "$she" broker --config "$tmp/range.properties"
check bad_env 2 "environment SHE_BROKER_COUNT: key 'broker.count'" -- env SHE_BROKER_COUNT=x "$she" broker
check bad_set 2 "argument 1: unknown key 'no.such'" -- "$she" broker --set no.such=1
check bad_flag 2 "unknown option '--prot'" -- "$she" broker --prot 1
check unbindable_address 1 'cannot listen on 203.0.113.1:39999' -- "$she" broker --listen 203.0.113.1 --port 39999

rm -rf "$tmp"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
