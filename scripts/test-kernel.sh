#!/bin/bash
# `npm run test:kernel`: the kernel's own ublk selftests
# (tools/testing/selftests/ublk/test_*.sh of the release the VM boots) run in
# the VM (4 vCPUs) against ublk-ts, through our kublk-compatible front end
# (test/kernel/kublk.ts), with PASS/FAIL/SKIP per test and a summary line.
#
#   scripts/test-kernel.sh [--kublk] [PATTERN...]
#
# --kublk runs them against the real kublk instead (scripts/build-kublk.sh),
# for comparison. A PATTERN keeps the tests whose name contains it (e.g.
# `null_0`, `loop`). The selftests come from scripts/kernel-selftests.sh
# (Debian's linux-source, cached; nothing of the kernel is committed); they are
# copied into .cache/kernel-selftests/<server>/ (or $UBLK_TS_SELFTEST_WORK, inside
# the checkout, which the VM writes), with each test's output in
# logs/. A test passes when it exits 0 and its output has no "[FAIL]" and no
# "failure": some scripts run their cases as background jobs whose failures
# never reach the exit code (test_recover_*, test_stress_*). Exit 4 is a skip
# (a feature or tool the VM lacks). Exit status: 0 if nothing failed.
set -euo pipefail

here=$(dirname "$(readlink -f "$0")")
root=$(dirname "$here")
say() { echo "test-kernel: $*" >&2; }
die() { say "$*"; exit 1; }

server=ublk-ts
# Seconds per test. The kselftest runner allows 150 (the suite's settings
# file) on real hardware; the emulated VM is several times slower, and the
# recover and stress tests start dozens of servers (each a Node process).
per_test=${UBLK_TS_SELFTEST_TIMEOUT:-600}
# UBLK_TS_SELFTEST_REPEAT=N runs each test N times (hunting a rare failure; a failed round's log is kept as logs/TEST.ROUND.log).
repeat=${UBLK_TS_SELFTEST_REPEAT:-1}
[[ $repeat =~ ^[1-9][0-9]*$ ]] || die "UBLK_TS_SELFTEST_REPEAT must be a positive count, not '$repeat'"
vm_app=/tmp/ublk-ts-app # where the VM runs the app from (see below)
if [ "${1:-}" = --kublk ]; then server=kublk; shift; fi
patterns=("$@")

sel=$("$here/kernel-selftests.sh" | tail -n1)
# UBLK_TS_SELFTEST_WORK: another work directory, so that two runs (npm test's subset, a whole run) do not share one.
work=${UBLK_TS_SELFTEST_WORK:-$root/.cache/kernel-selftests/$server}
rm -rf "$work"
mkdir -p "$work/logs"
cp -a "$sel"/. "$work/"

if [ "$server" = kublk ]; then
  cp "$("$here/build-kublk.sh" | tail -n1)" "$work/kublk"
else
  [ -f "$root/dist/test/kernel/kublk.js" ] || die "build first (npm run build): dist/test/kernel/kublk.js is missing"
  # A copy of the built package, so that rebuilding the checkout meanwhile cannot change a run.
  app=$work/app
  mkdir -p "$app/build/Release"
  cp -a "$root/bin" "$root/dist" "$root/package.json" "$app/"
  cp "$root/build/Release/ublk_native.node" "$app/build/Release/"
  # The VM sees this checkout over 9p, where every stat is a round trip: Node's
  # module resolution alone made each `kublk list` take 3-4 s, and
  # test_generic_06 allows 5 s for three of them (and a second). run-in-vm.sh copies the app
  # to the VM's tmpfs first, and the front end runs from there.
  # Each kublk call is a Node start: the front end is bundled into one file,
  # for the same reason (23 modules cost 1.3 s more per call in the VM), and
  # as CommonJS: an ES module main starts Node's ES module loader, about 0.1 s
  # more per call there. scripts/bundle.mjs bundles it as it bundles the CLI.
  node "$root/scripts/bundle.mjs" "$root/dist/test/kernel/kublk.js" "$app/dist/test/kernel/kublk.bundle.cjs" ||
    die "cannot bundle the front end (npm ci installs esbuild)"
  printf '#!/bin/sh\nexec %s %s "$@"\n' "$(command -v node)" "$vm_app/dist/test/kernel/kublk.bundle.cjs" > "$work/kublk"
  chmod +x "$work/kublk"
fi
# The integrity tests' helper (FS_IOC_GETLBMD_CAP), built against the VM kernel's UAPI headers.
uapi=$("$here/uapi-headers.sh" | tail -n1)
gcc -O2 -I "$uapi" -o "$work/metadata_size" "$work/metadata_size.c" 2>"$work/logs/metadata_size.build" ||
  say "metadata_size did not build (the integrity tests will fail): see $work/logs/metadata_size.build"

# The tests, in the Makefile's order.
mapfile -t all < <(awk '/^TEST_PROGS[ \t]*[:+]?=/ { sub(/^TEST_PROGS[ \t]*[:+]?=[ \t]*/, ""); n = split($0, a, /[ \t\\]+/); for (i = 1; i <= n; i++) if (a[i] ~ /^test_.*\.sh$/) print a[i] }' "$work/Makefile")
tests=()
for t in "${all[@]}"; do
  if [ ${#patterns[@]} -eq 0 ]; then tests+=("$t"); continue; fi
  for p in "${patterns[@]}"; do if [[ $t == *"$p"* ]]; then tests+=("$t"); break; fi; done
done
[ ${#tests[@]} -gt 0 ] || die "no test matches: ${patterns[*]}"
# fio >= 3.42 for test_integrity_02 (scripts/build-fio.sh builds it once into the cache; where it cannot fetch
# fio's source, which can take a while to find out, that test skips): only when that test runs.
fio_dir=
if [[ " ${tests[*]} " == *" test_integrity_02.sh "* ]]; then
  fio_dir=$("$here/build-fio.sh" 2>"$work/logs/fio.build" | tail -n1) ||
    { fio_dir=; say "no fio 3.42 (test_integrity_02 will skip): see $work/logs/fio.build"; }
fi

cat > "$work/run-in-vm.sh" <<EOF
#!/bin/bash
# Generated by scripts/test-kernel.sh: runs each selftest, prints one verdict line per test.
cd "$work"
export TMPDIR=/tmp
$( [ -n "$fio_dir" ] && echo "export PATH='$fio_dir':\$PATH" )
# No udev in the VM: the integrity tests read <(...) through /dev/fd.
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
$( [ "$server" = ublk-ts ] && echo "cp -a '$work/app' '$vm_app'" )
for t in ${tests[*]}; do
 for round in \$(seq $repeat); do
  start=\$(date +%s)
  timeout -k 10 $per_test bash "./\$t" > "logs/\$t.log" 2>&1 && rc=0 || rc=\$?
  secs=\$(( \$(date +%s) - start ))
  if [ \$rc -eq 4 ]; then v=SKIP
  elif [ \$rc -eq 0 ] && ! grep -q -e '\[FAIL\]' -e 'failure' "logs/\$t.log"; then v=PASS
  else v=FAIL; fi
  note=""
  if [ \$rc -eq 124 ]; then
    note=" (timed out)"
    # What was still going on, for the log: devices, servers, and any task stuck in the kernel.
    # Bounded: a control command queues behind a STOP_DEV that waits for stuck requests.
    { echo "=== at the timeout: devices, processes, blocked tasks"; timeout -k 5 20 "$work/kublk" list; ps -eo pid,stat,etime,args | grep -e ublk -e fio -e kublk | grep -v grep
      for p in /proc/[0-9]*; do [ "\$(awk '{print \$3}' \$p/stat 2>/dev/null)" = D ] && { echo "D: \$(tr '\\0' ' ' < \$p/cmdline)"; cat \$p/stack 2>/dev/null; }; done
      echo "=== the servers' log (last lines)"; tail -n 20 /run/ublk-ts/server.log 2>/dev/null
    } >> "logs/\$t.log" 2>&1
  fi
  printf '%-4s %-22s %4ss  exit %s%s\n' "\$v" "\${t%.sh}" "\$secs" "\$rc" "\$note"
  # A failure's last lines go to the output too: CI keeps only that.
  [ \$v = FAIL ] && tail -n 25 "logs/\$t.log" | sed 's/^/     | /'
  # Whatever a failed test left behind must not spoil the next one; a cleanup that hangs is reported, not waited for.
  timeout -k 10 120 "$work/kublk" del -a >> "logs/\$t.log" 2>&1 || echo "     cleanup after \${t%.sh}: 'kublk del -a' failed or hung (exit \$?)"
  # The servers' own logs (one per device, and the shared one), beside the test's.
  [ "$server" = ublk-ts ] && { tail -n +1 /run/ublk-ts/*.log > "logs/\$t.servers.log" 2>/dev/null; rm -f /run/ublk-ts/*.log; }
  [ \$v = PASS ] || [ $repeat -eq 1 ] || { cp "logs/\$t.log" "logs/\$t.\$round.log"; cp "logs/\$t.servers.log" "logs/\$t.\$round.servers.log" 2>/dev/null; }
 done
done
EOF
chmod +x "$work/run-in-vm.sh"

say "${#tests[@]} test(s) against $server, in a 4-CPU VM; logs in $work/logs/"
out=$work/results.txt
tmo=$(( ${#tests[@]} * repeat * (per_test + 30) + 300 ))
# Under an overall deadline (UBLK_TS_TEST_DEADLINE, Unix seconds: CI's), the VM
# ends in time to report; the tests not reached count as not run.
if [ -n "${UBLK_TS_TEST_DEADLINE:-}" ]; then
  left=$(( UBLK_TS_TEST_DEADLINE - $(date +%s) - 60 ))
  [ "$left" -ge 120 ] || die "not run: the overall deadline (UBLK_TS_TEST_DEADLINE) is too close"
  [ "$left" -lt "$tmo" ] && tmo=$left
fi
"$here/vmrun" -c 4 -m 4096 -t "$tmo" -- bash "$work/run-in-vm.sh" | tee "$out" || true
pass=$(grep -c '^PASS' "$out" || true)
fail=$(grep -c '^FAIL' "$out" || true)
skip=$(grep -c '^SKIP' "$out" || true)
ran=$((pass + fail + skip))
runs=$(( ${#tests[@]} * repeat ))
echo "kernel selftests against $server: $pass passed, $fail failed, $skip skipped of $runs$([ "$ran" -lt $runs ] && echo " ($(( runs - ran )) did not run)")"
[ "$fail" -eq 0 ] && [ "$ran" -eq $runs ]
