#!/bin/sh
# The peer benchmark: cvm's three runtimes and the industry's tools (runc, crun, unshare,
# QEMU booting cvm's guest kernel) side by side, every run one whole command from spawn to
# exit, as hyperfine times it. Then what `--binary` costs against the builtin workload.
#
#   scripts/peer-benchmark.sh            # about two minutes; RUNS=50 for tighter figures
#
# Writes reports/peers/ (report.html, report.md, results.json, charts/) and
# reports/peers/binary.md (hyperfine's table). Needs root (namespaces), /dev/kvm, and the
# peers on PATH (`cvm doctor` lists them; missing ones are shown as unavailable).
set -eu
cd "$(dirname "$0")/.."
runs=${RUNS:-30}
out=${OUT:-reports/peers}
cargo build --release --quiet
cvm=$PWD/target/x86_64-unknown-linux-musl/release/cvm

rm -rf "$out"
"$cvm" compare hello --peers --runs "$runs" --warmup 3 --no-density --out "$out"

# --binary of a 2 MB static program (busybox) against the builtin workload, each next to the
# program's own run, so the difference net of the program is cvm's cost of --binary.
busybox=/bin/busybox
if command -v hyperfine >/dev/null && [ -x "$busybox" ]; then
    # The workload file the peers ran (unshare's command line names it).
    workload=$(python3 -c '
import json, sys
cells = json.load(open(sys.argv[1]))["cells"]
argv = [a for c in cells if c.get("whole_command") for r in c["records"] for a in r.get("command", {}).get("argv", [])]
print(next(a for a in argv if "/cvm-workload-" in a))' "$out/results.json")
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
echo "Peer benchmark written to $out"
