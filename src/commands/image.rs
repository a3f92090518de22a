//! `cvm image ...`: the store's OCI images. No daemon: every command opens the store (or a
//! registry folder) itself, takes its lock when it writes, and is done.

use anyhow::{bail, Result};

use crate::cli::{BuildArgs, ImageAction, ImageArgs, ImageName, ImageRmArgs};
use crate::containers;
use crate::image::build::{self, BuildRequest};
use crate::image::reference::Reference;
use crate::image::store::Store;
use crate::image::{bundle, transfer, Image};
use crate::output::{self, text_table};
use crate::report::document::Table;
use crate::units::format_bytes;

pub fn image(args: ImageArgs) -> Result<i32> {
    let store = Store::open()?;
    match args.action {
        ImageAction::Build(build) => build_image(&store, build),
        ImageAction::Ls => list(&store),
        ImageAction::Inspect(name) => inspect(&store, name),
        ImageAction::History(name) => history(&store, name),
        ImageAction::Verify(name) => verify(&store, name),
        ImageAction::Rm(rm) => remove(&store, rm),
        ImageAction::Prune => prune(&store),
        ImageAction::Push { image, registry } => {
            let (image, done) = transfer::push(&store, &Reference::parse(&image)?, &registry)?;
            println!("{}", image.digest());
            eprintln!(
                "cvm: pushed {} to {}: {} blobs copied ({}), {} already there",
                image.reference,
                registry.display(),
                done.copied,
                format_bytes(done.bytes),
                done.already_there
            );
            Ok(0)
        }
        ImageAction::Pull { registry, image } => {
            let (image, done) = transfer::pull(&store, &registry, &Reference::parse(&image)?)?;
            println!("{}", image.digest());
            eprintln!(
                "cvm: pulled {} from {}: {} blobs copied and verified ({}), {} already in the store",
                image.reference,
                registry.display(),
                done.copied,
                format_bytes(done.bytes),
                done.already_there
            );
            Ok(0)
        }
        ImageAction::Save { image, output } => {
            let image = transfer::save(&store, &Reference::parse(&image)?, &output)?;
            eprintln!("cvm: saved {} ({}) to {}", image.reference, image.digest(), output.display());
            Ok(0)
        }
        ImageAction::Load { input } => {
            for image in transfer::load(&store, &input)? {
                println!("{} {}", image.reference, image.digest());
            }
            Ok(0)
        }
        ImageAction::Bundle { image, dir, args } => {
            let image = bundle::bundle(&store, &Reference::parse(&image)?, &dir, &args)?;
            eprintln!(
                "cvm: wrote the OCI runtime bundle of {} to {} (config.json, rootfs); run it with `runc run -b {} NAME`",
                image.reference,
                dir.display(),
                dir.display()
            );
            Ok(0)
        }
    }
}

fn build_image(store: &Store, args: BuildArgs) -> Result<i32> {
    let request = BuildRequest {
        reference: Some(Reference::parse(&args.tag)?),
        from: args.from.as_deref().map(Reference::parse).transpose()?,
        binaries: args.binary,
        adds: args.add,
        entrypoint: args.entrypoint,
        cmd: args.cmd,
        env: args.env,
    };
    let built = build::build(store, &request)?;
    println!("{}", built.image.digest());
    let layers = built.image.manifest.layers.len();
    let inherited = layers - built.new_layers - built.shared_layers;
    let from = if inherited > 0 { format!(", {inherited} from --from") } else { String::new() };
    eprintln!(
        "cvm: built {}: {layers} {} ({} new, {} shared with images already in the store{from}), {}",
        built.image.reference,
        if layers == 1 { "layer" } else { "layers" },
        built.new_layers,
        built.shared_layers,
        format_bytes(built.image.stored_size())
    );
    Ok(0)
}

fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let table = Table { header: header.iter().map(|h| h.to_string()).collect(), rows, numeric: false };
    format!("{}\n", text_table::render(&table, ""))
}

fn list(store: &Store) -> Result<i32> {
    let rows = Image::list(&store.images()?)?
        .iter()
        .map(|image| {
            vec![
                image.reference.name.clone(),
                image.reference.tag.clone(),
                image.digest().short(),
                image.manifest.layers.len().to_string(),
                format_bytes(image.stored_size()),
                image.config.created.clone().unwrap_or_default(),
            ]
        })
        .collect();
    output::emit(&table(&["NAME", "TAG", "DIGEST", "LAYERS", "SIZE", "CREATED"], rows));
    Ok(0)
}

fn find(store: &Store, name: &ImageName) -> Result<Image> {
    Image::find(&store.images()?, &Reference::parse(&name.image)?)
}

fn inspect(store: &Store, name: ImageName) -> Result<i32> {
    let image = find(store, &name)?;
    let history = image.config.layer_history();
    let layers: Vec<serde_json::Value> = image
        .manifest
        .layers
        .iter()
        .zip(&image.config.rootfs.diff_ids)
        .zip(history)
        .map(|((blob, diff_id), step)| {
            serde_json::json!({
                "digest": blob.digest,
                "size": blob.size,
                "media_type": blob.media_type,
                "diff_id": diff_id,
                "created_by": step.and_then(|s| s.created_by.clone()),
            })
        })
        .collect();
    let shown = serde_json::json!({
        "name": image.reference.to_string(),
        "digest": image.digest(),
        "config_digest": image.manifest.config.digest,
        "created": image.config.created,
        "architecture": image.config.architecture,
        "os": image.config.os,
        "size": image.stored_size(),
        "config": image.config.config,
        "layers": layers,
        "store": store.root(),
    });
    output::emit(&format!("{}\n", serde_json::to_string_pretty(&shown)?));
    Ok(0)
}

fn history(store: &Store, name: ImageName) -> Result<i32> {
    let image = find(store, &name)?;
    let mut layers = image.manifest.layers.iter();
    let mut rows = Vec::new();
    for step in &image.config.history {
        let (layer, size) = if step.empty_layer {
            ("-".to_string(), "0 B".to_string())
        } else {
            match layers.next() {
                Some(blob) => (blob.digest.short(), format_bytes(blob.size)),
                None => ("?".to_string(), "?".to_string()),
            }
        };
        rows.push(vec![
            layer,
            step.created.clone().unwrap_or_default(),
            step.created_by.clone().unwrap_or_default(),
            size,
        ]);
    }
    rows.reverse();
    output::emit(&table(&["LAYER", "CREATED", "CREATED BY", "SIZE"], rows));
    Ok(0)
}

fn verify(store: &Store, name: ImageName) -> Result<i32> {
    let layout = store.images()?;
    let image = find(store, &name)?;
    let mut broken = 0;
    for blob in image.blobs() {
        match layout.verify_blob(&blob) {
            Ok(()) => println!("ok       {} {}", blob.digest, format_bytes(blob.size)),
            Err(err) => {
                broken += 1;
                println!("CORRUPT  {err:#}");
            }
        }
    }
    if broken > 0 {
        bail!("{broken} blob(s) of {} do not match their digest", image.reference);
    }
    eprintln!("cvm: every blob of {} matches its digest", image.reference);
    Ok(0)
}

fn remove(store: &Store, args: ImageRmArgs) -> Result<i32> {
    let reference = Reference::parse(&args.image)?;
    let _lock = store.lock()?;
    let layout = store.images()?;
    let image = Image::find(&layout, &reference)?;
    let in_use = containers::images_in_use(store)?;
    if !args.force && in_use.iter().any(|d| d.digest == *image.digest()) {
        bail!("the image {reference} is used by a container (`cvm ps -a`); remove the container first, or use --force");
    }
    layout.untag(&reference)?;
    let (freed, unpacked) = collect_garbage(store)?;
    let unpacked = if unpacked {
        ""
    } else {
        "; its unpacked layers stay until no container run uses them (`cvm image prune` removes them then)"
    };
    println!("{reference}");
    eprintln!("cvm: removed {reference} ({}); {} of blobs freed{unpacked}", image.digest(), format_bytes(freed));
    Ok(0)
}

fn prune(store: &Store) -> Result<i32> {
    let _lock = store.lock()?;
    let (freed, unpacked) = collect_garbage(store)?;
    eprintln!(
        "cvm: {} of blobs no image or container needs removed{}",
        format_bytes(freed),
        if unpacked { ", and their unpacked layers" } else { "; unpacked layers stay while a container runs" }
    );
    Ok(0)
}

/// Removes the blobs and unpacked layers that no named image and no container needs (with the
/// store's lock held): the bytes of blobs freed, and whether unpacked layers could go too.
pub fn collect_garbage(store: &Store) -> Result<(u64, bool)> {
    let layout = store.images()?;
    let mut keep = Vec::new();
    let mut diff_ids = Vec::new();
    for image in Image::list(&layout)? {
        diff_ids.extend(image.config.rootfs.diff_ids.clone());
    }
    for descriptor in containers::images_in_use(store)? {
        let placeholder = Reference::parse("container-image").expect("a valid name");
        if let Ok(used) = Image::read(&layout, placeholder, descriptor) {
            keep.extend(used.blobs().into_iter().map(|b| b.digest));
            diff_ids.extend(used.config.rootfs.diff_ids.clone());
        }
    }
    let freed = layout.collect_garbage(&keep)?;
    Ok((freed, store.remove_unused_layers(&diff_ids)?))
}
