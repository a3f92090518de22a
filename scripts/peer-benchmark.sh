#!/bin/sh
# The peer benchmark: cvm's three runtimes and the industry's tools (runc, crun, unshare,
# QEMU booting cvm's guest kernel) side by side, every run one whole command from spawn to
# exit, as hyperfine times it. Then what `--binary` costs against the builtin workload, and
# cvm's micro-VM against QEMU timed by hyperfine back to back (each command's runs in a row).
#
#   scripts/peer-benchmark.sh            # about two minutes; RUNS=50 for tighter figures
#
# Writes reports/peers/ (report.html, report.md, results.json, charts/) and
# reports/peers/binary.md and vmm.md (hyperfine's tables). Needs root (namespaces), /dev/kvm,
# and the peers on PATH (`cvm doctor` lists them; missing ones are shown as unavailable). As
# root on Debian or Ubuntu it installs the ones that are missing.
set -eu
cd "$(dirname "$0")/.."
packages="hyperfine busybox-static runc crun qemu-system-x86"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    missing=""
    for package in $packages; do
        dpkg -s "$package" >/dev/null 2>&1 || missing="$missing $package"
    done
    if [ -n "$missing" ]; then
        echo "installing$missing"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    fi
fi
runs=${RUNS:-30}
out=${OUT:-reports/peers}
cargo build --release --quiet
cvm=$PWD/target/x86_64-unknown-linux-musl/release/cvm

# From the peer runs' records: the first argument containing $2 (`argument`), or the whole
# command line that contains one (`command`, shell-quoted); nothing if no run recorded one.
recorded() {
    python3 - "$out/results.json" "$1" "$2" <<'PY'
import json, shlex, sys
path, what, needle = sys.argv[1:]
for cell in json.load(open(path))["cells"]:
    for record in cell["records"]:
        argv = record.get("command", {}).get("argv", [])
        found = [a for a in argv if needle in a]
        if found:
            print(found[0] if what == "argument" else shlex.join(argv))
            raise SystemExit
PY
}

rm -rf "$out"
"$cvm" compare hello --peers --runs "$runs" --warmup 3 --no-density --out "$out"

# --binary of a 2 MB static program (busybox) against the builtin workload, each next to the
# program's own run, so the difference net of the program is cvm's cost of --binary.
busybox=/bin/busybox
if command -v hyperfine >/dev/null && [ -x "$busybox" ]; then
    # The workload file the peers ran (unshare's command line names it).
    workload=$(recorded argument /cvm-workload-)
    [ -n "$workload" ] || { echo "no peer run named the workload file in $out/results.json" >&2; exit 1; }
    hyperfine -N --warmup 5 --runs "$runs" --export-markdown "$out/binary.md" --export-json "$out/binary.json" \
        "$busybox true" \
        "$workload hello" \
        "$cvm run --runtime process --binary $busybox true" \
        "$cvm run --runtime process hello" \
        "$cvm run --runtime container --binary $busybox true" \
        "$cvm run --runtime container hello" \
        "$cvm run --runtime vm --binary $busybox true" \
        "$cvm run --runtime vm hello"
    python3 - "$out/binary.json" "$cvm" "$workload" "$busybox" <<'PY' | tee "$out/binary.txt"
import json, sys
path, cvm, workload, busybox = sys.argv[1:]
median = {r["command"]: r["median"] * 1e3 for r in json.load(open(path))["results"]}
for runtime in ["process", "container", "vm"]:
    binary = median[f"{cvm} run --runtime {runtime} --binary {busybox} true"] - median[f"{busybox} true"]
    builtin = median[f"{cvm} run --runtime {runtime} hello"] - median[f"{workload} hello"]
    print(f"--binary busybox on {runtime}: cvm's own part {binary:.2f} ms, builtin hello {builtin:.2f} ms "
          f"(medians net of each program's own run): {binary - builtin:+.2f} ms")
PY
else
    echo "hyperfine or $busybox missing: skipping the --binary comparison (apt-get install hyperfine busybox-static)"
fi

# cvm's micro-VM against QEMU booting the same guest kernel and program, timed by hyperfine as
# a user would time them: each command's runs back to back. The interleaved view above runs
# every command right after another tool's, which costs a few-millisecond command more than a
# two-minute one (docs/performance.md, "the order of the runs").
qemu=$(recorded command qemu-system)
if command -v hyperfine >/dev/null && [ -n "$qemu" ]; then
    # -i: QEMU's status is the guest's through isa-debug-exit (2 x status + 1), never 0; the
    # interleaved view above records whether each run succeeded.
    hyperfine -N -i --warmup 3 --runs "$runs" --export-markdown "$out/vmm.md" --export-json "$out/vmm.json" \
        "$cvm run --runtime vm hello" "$qemu"
    python3 - "$out/vmm.json" <<'PY' | tee "$out/vmm.txt"
import json, sys
vm, qemu = (r["median"] * 1e3 for r in json.load(open(sys.argv[1]))["results"])
print(f"back to back (hyperfine): cvm vm {vm:.2f} ms, QEMU {qemu:.2f} ms: {vm / qemu:.3f}x")
PY
fi
echo "Peer benchmark written to $out"
