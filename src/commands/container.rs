//! `cvm create`, `start`, `ps`, `diff`, `rm`, `commit`: containers that keep their state,
//! Docker's container lifecycle on cvm's own store (no daemon: each command acts on the store
//! directly, and a running container is a `cvm start` in progress).

use anyhow::{Context, Result};

use super::run::{finish_run, parse_limits};
use crate::cli::{CommitArgs, CreateArgs, LimitArgs, NameArg, PsArgs, RmArgs, StartArgs};
use crate::containers::{Container, RunOptions, Status};
use crate::explain::Narrator;
use crate::image::reference::Reference;
use crate::image::store::Store;
use crate::program::{ImageProgram, Program};
use crate::record::RuntimeKind;
use crate::runtime::{self, RunSpec};

pub fn create(args: CreateArgs) -> Result<i32> {
    let options = run_options(&args.options)?;
    let store = Store::open()?;
    let reference = Reference::parse(&args.image)?;
    let container = Container::create(&store, &args.name, &reference, &args.args, options)?;
    println!("{}", container.state.name);
    eprintln!(
        "cvm: created container {} from {} ({}); `cvm start {}` runs it",
        container.state.name, container.state.image, container.state.image_manifest.digest, container.state.name
    );
    Ok(0)
}

fn run_options(options: &LimitArgs) -> Result<RunOptions> {
    // Like Docker's containers, a created one runs until it ends (a week at most).
    let timeout = options.timeout.unwrap_or(crate::units::MAX_TIMEOUT_SECS);
    let limits = parse_limits(options.memory.as_deref(), options.cpus, options.pids, timeout)?;
    Ok(RunOptions {
        memory_bytes: limits.memory_bytes,
        cpus: limits.cpus,
        pids: limits.pids,
        timeout_s: limits.timeout.as_secs_f64(),
        seccomp: options.seccomp,
        volumes: crate::runtime::container::volumes::parse_all(&options.volume)?,
    })
}

pub fn start(args: StartArgs) -> Result<i32> {
    let store = Store::open()?;
    let mut container = Container::open(&store, &args.name)?;
    let _running = container.begin_start()?;
    let image = container.image(&store)?;
    let program = ImageProgram::prepare_image(&store, &image, &container.state.args)?;
    let mut spec = RunSpec::new(Program::Image(program), container.state.args.clone());
    spec.started = crate::runtime::process_start();
    let options = &container.state.options;
    spec.memory_bytes = options.memory_bytes;
    spec.cpus = options.cpus;
    spec.pids = options.pids;
    spec.timeout = std::time::Duration::from_secs_f64(options.timeout_s);
    spec.seccomp = options.seccomp;
    spec.volumes = options.volumes.clone();
    spec.narrator = Narrator::new(false);
    spec.echo_output = !args.json;
    spec.writable = Some(container.writable());
    let deadline = std::time::Instant::now() + spec.timeout;
    let runtime = runtime::runtime(RuntimeKind::Container);
    runtime.check_available()?;
    let result = runtime.run(&spec);
    let record = match result {
        Ok(record) => record,
        Err(err) => {
            let _ = container.finish_start(125, "not started");
            return Err(err);
        }
    };
    container.finish_start(record.exit_code, record.outcome.label()).context("recording how the start ended")?;
    finish_run(&record, args.json, false, deadline, false)
}

pub fn ps(args: PsArgs) -> Result<i32> {
    let store = Store::open()?;
    let rows: Vec<[String; 5]> = Container::list(&store)?
        .into_iter()
        .filter_map(|c| {
            let status = c.status();
            (args.all || status == Status::Running).then(|| {
                let last = c.state.last_exit_code.map_or("-".into(), |code| code.to_string());
                let status = match status {
                    Status::Exited(_) => "exited".to_string(),
                    other => other.describe(),
                };
                [c.state.name, c.state.image, status, last, c.state.created]
            })
        })
        .collect();
    let table = crate::report::document::Table {
        header: ["NAME", "IMAGE", "STATUS", "LAST EXIT", "CREATED"].map(String::from).to_vec(),
        rows: rows.into_iter().map(|r| r.to_vec()).collect(),
        numeric: false,
    };
    crate::output::emit(&format!("{}\n", crate::output::text_table::render(&table, "")));
    Ok(0)
}

pub fn diff(args: NameArg) -> Result<i32> {
    let store = Store::open()?;
    let container = Container::open(&store, &args.name)?;
    for (kind, path) in container.diff(&store)? {
        println!("{kind} {path}");
    }
    Ok(0)
}

pub fn rm(args: RmArgs) -> Result<i32> {
    let store = Store::open()?;
    let container = Container::open(&store, &args.name)?;
    let (name, image, digest) =
        (container.state.name.clone(), container.state.image.clone(), container.state.image_manifest.digest.clone());
    container.remove(&store, args.force)?;
    println!("{name}");
    eprintln!("cvm: removed container {name}; its image {image} ({digest}) is unchanged");
    Ok(0)
}

pub fn commit(args: CommitArgs) -> Result<i32> {
    let store = Store::open()?;
    let container = Container::open(&store, &args.name)?;
    let reference = Reference::parse(&args.image)?;
    let image = container.commit(&store, &reference)?;
    println!("{}", image.digest());
    eprintln!(
        "cvm: {} = {} layers: the {} of {} plus one with the changes of container {}",
        image.reference,
        image.manifest.layers.len(),
        image.manifest.layers.len() - 1,
        container.state.image,
        container.state.name
    );
    Ok(0)
}
