//! `cvm image build`: an image made of layers, each from one option of the command line, on top
//! of another image's layers and config (`--from`) or of nothing. Layers are written
//! reproducibly, so the same program file makes the same layer (and two images share it).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::layer::{self, EntryKind, LayerEntry};
use super::oci::{self, History, ImageConfig, Manifest, RootFs};
use super::reference::Reference;
use super::store::Store;
use super::{now_rfc3339, Image};
use crate::elf::ElfFile;
use crate::program::MAX_PROGRAM_BYTES;

/// The PATH a new image gets unless `--env` sets one (Docker's default).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to build.
#[derive(Clone, Debug, Default)]
pub struct BuildRequest {
    pub reference: Option<Reference>,
    pub from: Option<Reference>,
    /// Programs, each a layer with the file at `/bin/<its name>`.
    pub binaries: Vec<PathBuf>,
    /// `SRC:DEST`, each a layer with a host file or folder at DEST.
    pub adds: Vec<String>,
    /// Replaces the entrypoint (default: the last `--binary`).
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `K=V`, added to (or replacing in) the base's environment.
    pub env: Vec<String>,
}

/// One layer to write, and the history line that says what made it.
struct PlannedLayer {
    entries: Vec<LayerEntry>,
    created_by: String,
}

/// The result: the image, and how many of its layers were new to the store.
pub struct Built {
    pub image: Image,
    pub new_layers: usize,
    pub shared_layers: usize,
}

pub fn build(store: &Store, request: &BuildRequest) -> Result<Built> {
    let reference = request.reference.clone().context("image build needs -t NAME[:TAG]")?;
    if request.from.is_none() && request.binaries.is_empty() && request.adds.is_empty() {
        bail!("image build needs --binary PATH or --from IMAGE (and may add --add SRC:DEST)");
    }
    // Everything that can be wrong with the input is found before anything is written.
    let mut planned = Vec::new();
    for binary in &request.binaries {
        planned.push(binary_layer(binary)?);
    }
    for add in &request.adds {
        planned.push(add_layer(add)?);
    }
    for pair in &request.env {
        if !pair.contains('=') || pair.starts_with('=') {
            bail!("--env {pair}: write KEY=VALUE");
        }
    }

    let _lock = store.lock()?;
    let layout = store.images()?;
    let base = request.from.as_ref().map(|from| Image::find(&layout, from)).transpose()?;
    let (mut manifest_layers, mut config) = match &base {
        Some(image) => (image.manifest.layers.clone(), image.config.clone()),
        None => (
            Vec::new(),
            ImageConfig {
                architecture: "amd64".into(),
                os: "linux".into(),
                rootfs: RootFs { kind: "layers".into(), diff_ids: Vec::new() },
                ..ImageConfig::default()
            },
        ),
    };
    let created = now_rfc3339();
    let (mut new_layers, mut shared_layers) = (0, 0);
    for layer in planned {
        let built = layer::write_layer(&layout, &layer.entries)?;
        if built.new {
            new_layers += 1;
        } else {
            shared_layers += 1;
        }
        manifest_layers.push(built.blob);
        config.rootfs.diff_ids.push(built.diff_id);
        config.history.push(History {
            created: Some(created.clone()),
            created_by: Some(layer.created_by),
            comment: None,
            empty_layer: false,
        });
    }
    apply_run_config(&mut config, request);
    config.history.push(History {
        created: Some(created.clone()),
        created_by: Some(describe_run_config(&config)),
        comment: Some("cvm image build".into()),
        empty_layer: true,
    });
    config.created = Some(created);

    let config_blob = layout.write_blob(oci::MEDIA_CONFIG, &serde_json::to_vec(&config)?)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MEDIA_MANIFEST.into()),
        config: config_blob,
        layers: manifest_layers,
        annotations: Default::default(),
        extra: Default::default(),
    };
    let manifest_blob = layout.write_blob(oci::MEDIA_MANIFEST, &serde_json::to_vec(&manifest)?)?;
    layout.tag(&reference, &manifest_blob)?;
    let image = Image::read(&layout, reference, manifest_blob)?;
    Ok(Built { image, new_layers, shared_layers })
}

/// Entrypoint, command and environment from the request, over the base's.
fn apply_run_config(config: &mut ImageConfig, request: &BuildRequest) {
    let run = &mut config.config;
    if !request.entrypoint.is_empty() {
        run.entrypoint = Some(request.entrypoint.clone());
        run.cmd = None;
    } else if let Some(last) = request.binaries.last() {
        run.entrypoint = Some(vec![format!("/bin/{}", file_name(last))]);
        // A new entrypoint resets the base's command, as a Dockerfile's ENTRYPOINT does.
        run.cmd = None;
    }
    if !request.cmd.is_empty() {
        run.cmd = Some(request.cmd.clone());
    }
    let mut env = run.env.clone().unwrap_or_else(|| vec![DEFAULT_PATH.to_string()]);
    for pair in &request.env {
        let key = pair.split('=').next().unwrap_or_default();
        env.retain(|existing| existing.split('=').next() != Some(key));
        env.push(pair.clone());
    }
    run.env = Some(env);
}

fn describe_run_config(config: &ImageConfig) -> String {
    let words = |list: &Option<Vec<String>>| list.as_ref().map_or("none".into(), |l| format!("{l:?}"));
    format!("config: entrypoint {} cmd {}", words(&config.config.entrypoint), words(&config.config.cmd))
}

/// `--binary PATH`: an x86-64 program (static, or dynamically linked if the image also carries
/// its loader and libraries) at `/bin/<its name>`.
fn binary_layer(path: &Path) -> Result<PlannedLayer> {
    let meta = std::fs::metadata(path).with_context(|| format!("--binary {}: cannot read it", path.display()))?;
    if !meta.is_file() {
        bail!("--binary {}: not a regular file", path.display());
    }
    if meta.len() > MAX_PROGRAM_BYTES {
        bail!("--binary {}: larger than {} MiB", path.display(), MAX_PROGRAM_BYTES >> 20);
    }
    let bytes = std::fs::read(path).with_context(|| format!("--binary {}: cannot read it", path.display()))?;
    ElfFile::parse_any(&bytes).with_context(|| format!("--binary {}: not an x86-64 program", path.display()))?;
    let name = file_name(path);
    let file =
        std::fs::canonicalize(path).with_context(|| format!("--binary {}: cannot resolve it", path.display()))?;
    Ok(PlannedLayer {
        entries: vec![LayerEntry::new(&format!("bin/{name}"), EntryKind::File(file), 0o755)],
        created_by: format!("cvm image build --binary {}  # /bin/{name}", path.display()),
    })
}

/// `--add SRC:DEST`: a host file or folder at DEST (a folder's contents, recursively; a
/// DEST ending in / receives a file under its own name).
fn add_layer(spec: &str) -> Result<PlannedLayer> {
    let (source, dest) = spec
        .rsplit_once(':')
        .filter(|(s, d)| !s.is_empty() && d.starts_with('/'))
        .with_context(|| format!("--add {spec}: write SRC:DEST with DEST an absolute path in the image"))?;
    let source = Path::new(source);
    // The source itself is followed if it is a symlink (its content is what the user means:
    // /lib64/ld-linux-x86-64.so.2 is a link on most hosts); symlinks inside a folder stay links.
    let meta =
        std::fs::metadata(source).with_context(|| format!("--add {spec}: {} does not exist", source.display()))?;
    let mut entries = Vec::new();
    if meta.is_dir() {
        collect(source, dest.trim_end_matches('/'), &mut entries)?;
    } else if meta.is_file() {
        use std::os::unix::fs::PermissionsExt;
        let dest = if dest.ends_with('/') { format!("{dest}{}", file_name(source)) } else { dest.to_string() };
        let mode = meta.permissions().mode() & 0o7777;
        let file = std::fs::canonicalize(source)
            .with_context(|| format!("--add {spec}: cannot resolve {}", source.display()))?;
        entries.push(LayerEntry::new(&dest, EntryKind::File(file), mode));
    } else {
        bail!(
            "--add {spec}: {} is a device, socket or FIFO: only files, folders and symlinks go into an image",
            source.display()
        );
    }
    Ok(PlannedLayer { entries, created_by: format!("cvm image build --add {spec}") })
}

/// `source` (file, symlink or folder, recursively) as entries at `dest`.
fn collect(source: &Path, dest: &str, entries: &mut Vec<LayerEntry>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(source).with_context(|| format!("reading {}", source.display()))?;
    let mode = meta.permissions().mode() & 0o7777;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(source)?;
        entries.push(LayerEntry::new(dest, EntryKind::Symlink(target), 0o777));
    } else if meta.is_file() {
        entries.push(LayerEntry::new(dest, EntryKind::File(source.to_path_buf()), mode));
    } else if meta.is_dir() {
        if !dest.is_empty() {
            entries.push(LayerEntry::new(dest, EntryKind::Directory, mode));
        }
        let mut children: Vec<_> = std::fs::read_dir(source)?.flatten().map(|e| e.path()).collect();
        children.sort();
        for child in children {
            let name = child.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            collect(&child, &format!("{dest}/{name}"), entries)?;
        }
    } else {
        bail!("{} is a device, socket or FIFO: only files, folders and symlinks go into an image", source.display());
    }
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| "program".into(), |n| n.to_string_lossy().into_owned())
}
