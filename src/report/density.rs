//! The density part of a report: two tables (memory per instance; start latency and idle CPU),
//! two charts (memory per instance vs N, start latency vs N, one line per runtime) and a reading
//! that sets the figures beside the lecture's claim. Used by `cvm density` and `cvm compare`.

use super::charts::color_of;
use super::document::{Block, Table};
use crate::density::{signed_bytes, DensityResults, DensityRow, Spread};
use crate::plot::{Chart, LineChart, LinePoint, LineSeries, Quantity};
use crate::record::RuntimeKind;
use crate::units::{format_bytes, format_ns};
use crate::vmm::layout::DEFAULT_RAM_BYTES;

const GIB: f64 = 1073741824.0;

/// The two charts, with the file stem each is saved under.
pub fn charts(density: &DensityResults) -> Vec<(&'static str, Chart)> {
    if density.rows.is_empty() {
        return Vec::new();
    }
    let repetitions = density.repetitions;
    let series = |value: &dyn Fn(&DensityRow) -> LinePoint| -> Vec<LineSeries> {
        RuntimeKind::ALL
            .iter()
            .filter_map(|&runtime| {
                let points: Vec<LinePoint> = density.rows.iter().filter(|r| r.runtime == runtime).map(value).collect();
                (!points.is_empty()).then(|| LineSeries {
                    name: runtime.name().into(),
                    color: color_of(runtime),
                    points,
                })
            })
            .collect()
    };
    let memory = LineChart {
        title: "Memory one more instance costs, by instances running at once".into(),
        subtitle: format!("(system used memory with N idle − without them) / N · {}", repetitions_phrase(repetitions)),
        count_label: "instances started at once (log scale)".into(),
        value_label: "used memory per instance".into(),
        quantity: Quantity::Bytes,
        series: series(&|r| LinePoint {
            count: r.instances as f64,
            value: r.marginal_bytes.median,
            low: r.marginal_bytes.min,
            high: r.marginal_bytes.max,
        }),
    };
    let start = LineChart {
        title: "Start latency when N start at once".into(),
        subtitle: "launch of `cvm run` to the program's ready line · point: median, whisker up to p95".into(),
        count_label: "instances started at once (log scale)".into(),
        value_label: "start latency".into(),
        quantity: Quantity::Nanoseconds,
        series: series(&|r| LinePoint {
            count: r.instances as f64,
            value: r.start_p50_ns,
            low: r.start_p50_ns,
            high: r.start_p95_ns,
        }),
    };
    vec![("density-memory", Chart::Lines(memory)), ("density-start", Chart::Lines(start))]
}

fn repetitions_phrase(repetitions: usize) -> String {
    if repetitions == 1 {
        "one measurement".into()
    } else {
        format!("median of {repetitions} repetitions, whiskers: their range")
    }
}

/// A share of one core with three significant digits ("0.0123%").
pub fn percent(value: f64) -> String {
    format!("{}%", crate::plot::axis::significant(value))
}

/// "1.1 MiB (0.9–1.3)" for a byte spread.
fn bytes_spread(spread: &Spread) -> String {
    if spread.max > spread.min {
        format!("{} ({} to {})", signed_bytes(spread.median), signed_bytes(spread.min), signed_bytes(spread.max))
    } else {
        signed_bytes(spread.median)
    }
}

fn count(value: Option<f64>) -> String {
    value.map_or_else(|| "within noise".into(), |v| format!("{:.0}", v))
}

pub fn memory_table(density: &DensityResults) -> Table {
    let header = [
        "runtime",
        "instances",
        "used memory per instance",
        "machine's noise per instance",
        "USS per instance",
        "PSS per instance",
        "cgroup charge per instance",
        "per GiB (used memory)",
        "per GiB (USS)",
    ]
    .map(String::from)
    .to_vec();
    let rows = density
        .rows
        .iter()
        .map(|r| {
            vec![
                r.runtime.name().to_string(),
                r.instances.to_string(),
                bytes_spread(&r.marginal_bytes),
                format!("±{}", format_bytes(r.noise_per_instance_bytes as u64)),
                format_bytes(r.uss_bytes.median as u64),
                format_bytes(r.pss_bytes.median as u64),
                r.cgroup_bytes.map_or_else(|| "—".into(), |c| format_bytes(c.median as u64)),
                count(r.per_gib),
                count(r.per_gib_uss),
            ]
        })
        .collect();
    Table { header, rows, numeric: true }
}

pub fn start_table(density: &DensityResults) -> Table {
    let header =
        ["runtime", "instances", "start p50", "start p95", "start max", "starts per second", "idle CPU per instance"]
            .map(String::from)
            .to_vec();
    let rows = density
        .rows
        .iter()
        .map(|r| {
            vec![
                r.runtime.name().to_string(),
                r.instances.to_string(),
                format_ns(r.start_p50_ns),
                format_ns(r.start_p95_ns),
                format_ns(r.start_max_ns),
                format!("{:.0}", r.starts_per_second.median),
                format!("{} of a core", percent(r.cpu_percent.median)),
            ]
        })
        .collect();
    Table { header, rows, numeric: true }
}

/// The row of `runtime` at the largest instance count measured for it.
fn largest(density: &DensityResults, runtime: RuntimeKind) -> Option<&DensityRow> {
    density.rows.iter().filter(|r| r.runtime == runtime).max_by_key(|r| r.instances)
}

/// What the figures say, in sentences, beside the lecture's claim.
pub fn findings(density: &DensityResults) -> Vec<String> {
    let mut out = Vec::new();
    let container = largest(density, RuntimeKind::Container);
    let vm = largest(density, RuntimeKind::Vm);
    let exclusive = (GIB / DEFAULT_RAM_BYTES as f64).round();
    if let (Some(c), Some(v)) = (container, vm) {
        let ratio = match (c.per_gib, v.per_gib) {
            (Some(cg), Some(vg)) => Some(cg / vg),
            _ => None,
        };
        let per_gib = match (c.per_gib, v.per_gib, ratio) {
            (Some(cg), Some(vg), Some(r)) => {
                format!("about {cg:.0} containers or {vg:.0} micro-VMs per GiB: {r:.1}× as many containers")
            }
            _ => "one of the two is within the machine's memory noise, so no per-GiB ratio is given".into(),
        };
        let verdict = match ratio {
            Some(r) if r >= 4.0 => "the claim holds here, by a wide margin",
            Some(r) if r >= 1.2 => "the direction holds, the size does not",
            Some(_) => "here it does not hold: a micro-VM costs about as much as a container, or less",
            None => "the figures cannot tell the two apart here",
        };
        out.push(format!(
            "With {} containers and {} micro-VMs idle at once, each container added {} to the system's used memory \
             and each micro-VM {}: {per_gib}. The lecture says a VM holds its memory exclusively and containers are \
             much lighter: {verdict}. cvm's micro-VM runs a tiny guest kernel, the host backs guest RAM only where \
             the guest touched it, and the program's code is shared from the page cache; a VM that held its {} MiB \
             of configured RAM exclusively would fit {exclusive:.0} per GiB.",
            c.instances,
            v.instances,
            signed_bytes(c.marginal_bytes.median),
            signed_bytes(v.marginal_bytes.median),
            DEFAULT_RAM_BYTES >> 20
        ));
        out.push(format!(
            "Per instance, the processes' own private memory (USS) was {} for a container (cvm's supervisor and the \
             program) and {} for a micro-VM (the VMM with the guest pages it touched); the rest of the used-memory \
             figure is kernel memory only the system-wide view sees (page tables, KVM's per-VM state, namespaces, \
             the cgroup).",
            format_bytes(c.uss_bytes.median as u64),
            format_bytes(v.uss_bytes.median as u64)
        ));
        out.push(format!(
            "Idle, a micro-VM used {} of a core and a container {}: while the guest sleeps, the VMM parks the \
             vCPU's thread instead of letting the guest spin.",
            percent(v.cpu_percent.median),
            percent(c.cpu_percent.median)
        ));
        out.push(format!(
            "Started {} at once, containers were ready after {} (median; p95 {}) and micro-VMs after {} (p95 {}): \
             {:.0} and {:.0} starts per second on this machine.",
            v.instances.max(c.instances),
            format_ns(c.start_p50_ns),
            format_ns(c.start_p95_ns),
            format_ns(v.start_p50_ns),
            format_ns(v.start_p95_ns),
            c.starts_per_second.median,
            v.starts_per_second.median
        ));
    }
    if let Some(p) = largest(density, RuntimeKind::Process) {
        out.push(format!(
            "The baseline: a plain process started by cvm (cvm's launcher plus the program) added {} each, at {} at once.",
            signed_bytes(p.marginal_bytes.median),
            p.instances
        ));
    }
    if let Some(stopped) = &density.stopped {
        out.push(format!("The run did not finish: {stopped}; {}.", crate::density::how_far(&density.steps)));
    }
    for (runtime, why) in &density.unavailable {
        out.push(format!("{runtime} was not measured: {why}."));
    }
    out
}

/// The whole section: reading, both tables, the charts (already rendered) and the method.
pub fn blocks(density: &DensityResults, charts: Vec<Block>, level: u8) -> Vec<Block> {
    let mut blocks = vec![Block::Bullets(findings(density))];
    blocks.push(Block::Heading(level, "Memory per instance".into()));
    blocks.push(Block::Table(memory_table(density)));
    blocks.push(Block::Heading(level, "Start latency and idle CPU".into()));
    blocks.push(Block::Table(start_table(density)));
    blocks.extend(charts);
    blocks.push(Block::Heading(level, "How it was measured".into()));
    blocks.push(Block::Bullets(method(density)));
    blocks
}

pub fn method(density: &DensityResults) -> Vec<String> {
    vec![
        format!(
            "An instance is what a user starts: one `cvm run --runtime R idle S` process. N of them are launched at \
             once, each prints a ready line when its program runs, and all of them idle together. Steps go runtime \
             after runtime for each N ({}), so a drift of the machine hits every runtime alike.",
            if density.repetitions == 1 { "once".to_string() } else { format!("{} times", density.repetitions) }
        ),
        "Used memory is the system's, from the kernel's own counters in /proc/meminfo (anonymous and shared \
         memory, kernel stacks, page tables, unreclaimable slab, vmalloc, per-CPU), sampled before the launch, \
         during the window and after the teardown (medians); per instance = (during − the mean of before and \
         after) / N, so a steady drift of the machine cancels out. It includes kernel memory (page tables, KVM, \
         namespaces, cgroups) and leaves out the page cache, which every instance shares. Not MemTotal − MemFree: \
         freed pages wait on per-CPU lists before MemFree counts them, which makes that difference too small. \
         The machine's noise (the samples' spread / N) is shown beside the figure."
            .into(),
        "USS and PSS are summed over every process of every instance (the `cvm run` processes and the programs \
         they started) from /proc/PID/smaps_rollup. A container's cgroup charge is the run cgroup's memory.current."
            .into(),
        format!(
            "Idle CPU is the CPU time of every thread of those processes (schedstat) over a {:.1} s window, per \
             instance, as a percentage of one core.",
            density.window_ns as f64 / 1e9
        ),
        "Start latency: from just before launching `cvm run` to reading the program's ready line, so cvm's own \
         start-up (exec, image and cgroup set-up, VM creation) is counted, as the user waits for it."
            .into(),
    ]
}
