//! Exports and reports: the JSON export read back by `cvm report`, charts rendered to images
//! of the expected size, results files of two machines merged side by side, and clear errors
//! for files that are not results.

mod common;

use std::path::Path;

use common::run_cvm;
use cvm::host::HostInfo;
use cvm::plot::{Chart, Quantity, StackedBarChart, StackedCategory};
use cvm::record::{RunRecord, RuntimeKind};
use cvm::report::model::ReportModel;
use cvm::results::{self, CellResult, Environment, ResultsFile};

fn record(runtime: RuntimeKind, workload: &str, total_ns: u64) -> RunRecord {
    let mut r = RunRecord::new(runtime, "host", workload, &[]);
    r.phases_ns.setup = total_ns / 5;
    r.phases_ns.boot = total_ns / 4;
    r.phases_ns.first_output = Some(total_ns / 2);
    r.phases_ns.exit = total_ns * 9 / 10;
    r.phases_ns.teardown = total_ns;
    r.phases_ns.total = total_ns;
    r.memory.peak_rss_bytes = Some(1 << 20);
    r.memory.program_peak_rss_bytes = Some(1 << 20);
    r.memory.runtime_private_bytes = Some(400 << 10);
    r.memory.runtime_added_bytes = Some(60 << 10);
    r.memory.runtime_shared_bytes = Some(5 << 20);
    r.cpu.user_ns = total_ns / 10;
    r.cpu.system_ns = total_ns / 5;
    match workload {
        "cpu" => r.result = Some(serde_json::json!({"workload": "cpu", "ops_per_sec": 1e9 / total_ns as f64})),
        "probe" => {
            r.result = Some(serde_json::json!({"workload": "probe", "kernel_name": "Linux", "kernel_release": "6.1",
                "hostname": format!("{runtime}-host"), "pid": if runtime == RuntimeKind::Process { 4242 } else { 1 },
                "visible_processes": 3, "cap_eff_count": 3, "cap_eff": "00000000a80425fb"}))
        }
        _ => {}
    }
    if runtime == RuntimeKind::Vm {
        r.memory.guest_touched_bytes = Some(3 << 20);
        r.memory.guest_kernel_bytes = Some(70 << 10);
        r.memory.runtime_overhead_bytes = Some(2 << 20);
    }
    r
}

fn cell(runtime: RuntimeKind, workload: &str, base_ns: u64) -> CellResult {
    let mut cell = CellResult::new(runtime, workload, &[], "host");
    cell.requested_runs = 4;
    cell.warmup_runs = 1;
    cell.records = (0..4).map(|i| record(runtime, workload, base_ns + i * base_ns / 50)).collect();
    cell
}

fn results_from(machine: &str) -> ResultsFile {
    let mut environment = Environment::current();
    environment.host = HostInfo { machine: machine.into(), cpu_model: format!("{machine} CPU"), ..HostInfo::default() };
    let mut cells = Vec::new();
    for workload in ["hello", "cpu", "probe"] {
        cells.push(cell(RuntimeKind::Process, workload, 1_000_000));
        cells.push(cell(RuntimeKind::Container, workload, 3_000_000));
        let mut vm = CellResult::new(RuntimeKind::Vm, workload, &[], "builtin");
        vm.unavailable = Some("no /dev/kvm".into());
        cells.push(vm);
    }
    ResultsFile::new(environment, cells)
}

fn png_dimensions(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert!(bytes.len() > 1000, "{} is suspiciously small", path.display());
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn json_export_round_trips_into_cvm_report() {
    let dir = tempfile::tempdir().unwrap();
    let original = results_from("laptop");
    let path = dir.path().join("bench.json");
    cvm::export::json::write(&path, &original).unwrap();
    assert!(results::load(&path).unwrap() == vec![original.clone()], "the JSON export does not read back equal");

    let out = dir.path().join("report");
    let status = run_cvm(&["report", path.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(status.status.success(), "cvm report failed: {}", String::from_utf8_lossy(&status.stderr));
    assert!(results::load(&out.join("results.json")).unwrap() == vec![original], "the report's results.json differs");

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<svg"), "charts are inlined as SVG");
    for external in ["<script", "<link", "src=\"http", "href=\"http", "@import"] {
        assert!(!html.contains(external), "report.html must open offline, found {external}");
    }
    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(markdown.contains("not run: no /dev/kvm") || markdown.contains("was not run: no /dev/kvm"));
    assert!(markdown.contains("charts/startup-phases.png"));
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 6 * 4, "one CSV row per measured run");
    for stem in ["startup-phases", "startup-distribution", "memory", "cpu-time", "throughput"] {
        let (width, height) = png_dimensions(&out.join("charts").join(format!("{stem}.png")));
        assert_eq!(width, 1000, "{stem}");
        assert!(height >= 380, "{stem}");
        assert!(std::fs::metadata(out.join("charts").join(format!("{stem}.svg"))).unwrap().len() > 1000);
    }
}

#[test]
fn a_chart_has_the_expected_size() {
    let chart = Chart::Stacked(StackedBarChart {
        title: "test".into(),
        subtitle: String::new(),
        value_label: "time".into(),
        quantity: Quantity::Nanoseconds,
        segments: vec!["a".into(), "b".into()],
        categories: (0..6)
            .map(|i| StackedCategory {
                label: format!("row {i}"),
                values: vec![1e6 * i as f64, 5e5],
                annotation: None,
                shaded: i % 2 == 1,
            })
            .collect(),
    });
    // 190 px of title, legend and axis plus 52 px per row.
    assert_eq!(chart.size(), (1000, 190 + 52 * 6));
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("chart.png");
    chart.write_png(&png).unwrap();
    assert_eq!(png_dimensions(&png), (1000, 502));
    let svg = chart.to_svg().unwrap();
    assert!(svg.contains("<svg") && svg.contains("width=\"1000\"") && svg.contains("row 5"));
}

#[test]
fn two_machines_are_merged_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
    cvm::export::json::write(&a, &results_from("laptop")).unwrap();
    cvm::export::json::write(&b, &results_from("server")).unwrap();

    let files: Vec<ResultsFile> = [&a, &b].iter().flat_map(|p| results::load(p).unwrap()).collect();
    let model = ReportModel::from_results(&files);
    assert_eq!(model.machines.len(), 2);
    assert_eq!(model.series_label(&model.machines[1], RuntimeKind::Container), "container @ server");

    // The same machine twice merges into one, with the runs of both files.
    let twice = ReportModel::from_results(&[files[0].clone(), files[0].clone()]);
    assert_eq!(twice.machines.len(), 1);
    assert_eq!(twice.machines[0].cell("hello", RuntimeKind::Process).unwrap().summary.runs, 8);

    let out = dir.path().join("merged");
    let status = run_cvm(&["report", a.to_str().unwrap(), b.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(markdown.contains("process @ laptop") && markdown.contains("process @ server"));
    // The merged folder's results.json is a set that `cvm report` reads again.
    assert_eq!(results::load(&out.join("results.json")).unwrap().len(), 2);
}

#[test]
fn bad_results_files_are_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.json");
    std::fs::write(&corrupt, "{\"kind\": \"cvm-results\", \"cells\": [").unwrap();
    let missing = dir.path().join("missing.json");
    for (path, expected) in [(&corrupt, "not a usable cvm results file"), (&missing, "cannot read results file")] {
        let out = run_cvm(&["report", path.to_str().unwrap(), "--out", dir.path().join("r").to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(expected), "stderr: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line, no panic: {stderr}");
    }
}

#[test]
fn bench_exports_all_formats_from_real_process_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (json, md, csv) = (dir.path().join("r.json"), dir.path().join("r.md"), dir.path().join("r.csv"));
    let out = run_cvm(&[
        "bench",
        "--runtimes",
        "process",
        "--workloads",
        "hello,cpu:1000",
        "--runs",
        "3",
        "--warmup",
        "1",
        "--export-json",
        json.to_str().unwrap(),
        "--export-markdown",
        md.to_str().unwrap(),
        "--export-csv",
        csv.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Time (mean ± σ)") && stdout.contains("Range (min … max)"), "{stdout}");
    let files = results::load(&json).unwrap();
    assert_eq!(files[0].cells.len(), 2);
    assert_eq!(files[0].cells[1].args, vec!["1000".to_string()]);
    assert!(files[0].cells.iter().all(|c| c.records.len() == 3 && c.warmup_runs == 1));
    assert!(files[0].environment.command_line.contains("--workloads hello,cpu:1000"));
    assert!(std::fs::read_to_string(&md).unwrap().contains("| runtime |"));
    assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 1 + 6);
}

#[test]
fn compare_runs_the_default_matrix_and_says_where_the_report_is() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("compare");
    let run =
        run_cvm(&["compare", "--runtimes", "process", "--runs", "2", "--warmup", "0", "--out", out.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains(&format!("Report: {}", out.join("report.html").display())), "{stdout}");
    assert!(stdout.contains("kernel the program saw"), "the isolation facts are printed: {stdout}");
    let files = results::load(&out.join("results.json")).unwrap();
    let workloads: Vec<String> = files[0].cells.iter().map(|c| c.workload_label()).collect();
    let two_cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    let expected: &[&str] = if two_cpus {
        &["hello", "cpu 100000", "cpu 100000 2", "mem 16", "probe"]
    } else {
        &["hello", "cpu 100000", "mem 16", "probe"]
    };
    assert_eq!(workloads, expected);
    assert!(files[0].cells.iter().all(|c| c.records.len() == 2 && c.summary.succeeded == 2));
    for file in ["report.md", "report.html", "results.csv", "charts/startup-phases.svg", "charts/throughput.png"] {
        assert!(out.join(file).exists(), "{file} is missing");
    }
    assert_eq!(out.join("charts/cpu-scaling.svg").exists(), two_cpus, "the CPU-scaling chart");
}

/// `cpu N` and `cpu N 2` cells make the CPU-scaling view: a chart in the report, and a reading
/// that gives each runtime's speed-up over its own 1-thread run.
#[test]
fn cpu_cells_with_thread_counts_make_the_scaling_view() {
    let scaled = |runtime: RuntimeKind, threads: &[&str], ops: f64| {
        let args: Vec<String> = threads.iter().map(|t| t.to_string()).collect();
        let mut cell = CellResult::new(runtime, "cpu", &args, "host");
        cell.records = (0..3)
            .map(|i| {
                let mut r = RunRecord::new(runtime, "host", "cpu", &args);
                r.phases_ns.total = 1_000_000;
                r.result = Some(serde_json::json!({"workload": "cpu", "ops_per_sec": ops + f64::from(i)}));
                r
            })
            .collect();
        cell
    };
    let mut environment = Environment::current();
    environment.host = HostInfo { machine: "m".into(), cpu_count: 2, ..HostInfo::default() };
    let cells = vec![
        scaled(RuntimeKind::Process, &["1000"], 1000.0),
        scaled(RuntimeKind::Vm, &["1000"], 900.0),
        scaled(RuntimeKind::Process, &["1000", "2"], 1900.0),
        scaled(RuntimeKind::Vm, &["1000", "2"], 1800.0),
    ];
    let model = ReportModel::from_results(&[ResultsFile::new(environment, cells)]);
    let charts = cvm::report::charts::build_all(&model);
    let scaling = charts.iter().find(|c| c.stem == "cpu-scaling").expect("a scaling chart");
    assert!(scaling.chart.to_svg().unwrap().contains("CPU scaling"));
    let reading = cvm::report::scaling::reading(&model.machines[0]).expect("a reading");
    assert!(reading.contains("with 2 threads, the process 1.90×"), "{reading}");
    assert!(reading.contains("the vm (2 vCPUs) 2.00×"), "{reading}");

    // Without a second thread count there is no view.
    let plain = ReportModel::from_results(&[results_from("laptop")]);
    assert!(!cvm::report::charts::build_all(&plain).iter().any(|c| c.stem == "cpu-scaling"));
}
