//! The program a run executes: the embedded workload or any static x86-64 Linux ELF given with
//! `--binary`. Bad programs are refused here, with one clear reason, before any runtime starts.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use std::io::Read;

use anyhow::{bail, Context, Result};

use crate::elf::ElfFile;
use crate::embedded;
use crate::image::reference::Reference;
use crate::image::store::Store;
use crate::image::tree::Tree;

/// Why the process and vm runtimes refuse `--image`.
pub const IMAGE_RUNTIME_ONLY: &str = "--image runs in the container runtime only (--runtime container): \
     a VM boots a kernel and one static program, and a plain process has no image to stand in";

/// Largest program file accepted (the VM further limits it to what fits its guest RAM).
pub const MAX_PROGRAM_BYTES: u64 = 256 << 20;

#[derive(Clone, Debug)]
pub enum Program {
    /// The workload built into cvm; `name` is one of [`embedded::WORKLOADS`].
    Workload { name: String },
    /// A static program file given with `--binary`, checked, and the digest of its content.
    Binary { path: PathBuf, digest: crate::image::digest::Digest },
    /// An image of the store (`--image`): the container runtime only.
    Image(ImageProgram),
}

/// An image ready to run: its unpacked layers and what to start in it.
#[derive(Clone, Debug)]
pub struct ImageProgram {
    /// `NAME:TAG` and the manifest digest.
    pub reference: String,
    pub digest: String,
    /// Read-only layers, top first (overlayfs's `lowerdir` order), the store's init layer
    /// (mount points) included.
    pub layers: Vec<PathBuf>,
    /// The full argv: the entrypoint, then the user's arguments or the image's command.
    pub argv: Vec<String>,
    pub env: Vec<String>,
    /// Keeps the store from removing the unpacked layers while the program may run.
    pub layers_in_use: std::sync::Arc<crate::image::layout::LockFile>,
}

impl ImageProgram {
    /// Resolves `reference` in `store`, unpacks its layers and checks that what it would start
    /// is there: the program and, for a dynamically linked one, its loader. (Missing libraries
    /// are named by the loader itself when the program starts.)
    pub fn prepare(store: &Store, reference: &Reference, args: &[String]) -> Result<ImageProgram> {
        let image = crate::image::Image::find(&store.images()?, reference)?;
        ImageProgram::prepare_image(store, &image, args)
    }

    /// The same for an image already read (a created container's, by digest).
    pub fn prepare_image(store: &Store, image: &crate::image::Image, args: &[String]) -> Result<ImageProgram> {
        let reference = &image.reference;
        let argv = image.config.argv(args);
        let Some(program) = argv.first() else {
            bail!("the image {reference} has no entrypoint or command: give the program to run after the image name");
        };
        let layers_in_use = std::sync::Arc::new(store.use_layers()?);
        let mut layers = vec![store.init_layer()];
        layers.extend(image.layer_dirs(store)?);
        let tree = Tree { layers: layers.clone() };
        check_image_program(&tree, reference, program)?;
        let env = image.config.config.env.clone().unwrap_or_default();
        Ok(ImageProgram {
            reference: reference.to_string(),
            digest: image.digest().to_string(),
            layers,
            argv,
            env,
            layers_in_use,
        })
    }
}

/// The program must be in the image; a dynamically linked one needs its loader there too.
fn check_image_program(tree: &Tree, reference: &Reference, program: &str) -> Result<()> {
    if !program.starts_with('/') {
        bail!("the image {reference} starts {program:?}: an entrypoint must be an absolute path in the image");
    }
    let entry = tree.resolve(program).with_context(|| format!("the image {reference} has no {program}"))?;
    if entry.kind != crate::image::tree::Kind::File {
        bail!("{program} in the image {reference} is not a regular file");
    }
    let mut head = Vec::new();
    std::fs::File::open(&entry.host)?.take(MAX_PROGRAM_BYTES).read_to_end(&mut head)?;
    if head.starts_with(b"#!") {
        return Ok(());
    }
    let elf = ElfFile::parse_any(&head).with_context(|| format!("{program} in the image {reference}"))?;
    if let Some(loader) = &elf.interpreter {
        if tree.resolve(loader).is_none() {
            bail!(
                "{program} in the image {reference} is dynamically linked and needs its loader {loader}, which is not \
                 in the image: add it and the libraries it loads as layers (--add), or build the program static"
            );
        }
    }
    Ok(())
}

impl Program {
    pub fn workload(name: &str) -> Result<Program> {
        if !embedded::WORKLOADS.contains(&name) {
            bail!(
                "unknown workload '{name}': choose one of {} or run your own static program with --binary PATH",
                embedded::WORKLOADS.join(", ")
            );
        }
        Ok(Program::Workload { name: name.to_string() })
    }

    /// Checks that `path` is a static x86-64 ELF executable and returns it as a program.
    pub fn binary(path: &Path) -> Result<Program> {
        // Read, parsed and hashed once per version of the file (program_check.rs); an unchanged
        // file costs a stat.
        let checked = crate::program_check::check(path, MAX_PROGRAM_BYTES, || {
            let bytes = read_program_file(path)?;
            check_static_elf(&bytes).with_context(|| format!("cannot run {}", path.display()))?;
            Ok(bytes)
        })?;
        Ok(Program::Binary { path: path.to_path_buf(), digest: checked.digest })
    }

    /// What the record calls it: the workload name, the file name of a binary, the image name.
    pub fn label(&self) -> String {
        match self {
            Program::Workload { name } => name.clone(),
            Program::Binary { path, .. } => {
                path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
            }
            Program::Image(image) => image.reference.clone(),
        }
    }

    /// Arguments the program file is started with before the user's: the workload's
    /// subcommand for the embedded program, nothing for a binary, the image's argv after the
    /// entrypoint's first word (the user's arguments are already in it).
    pub fn leading_args(&self) -> Vec<String> {
        match self {
            Program::Workload { name } => vec![name.clone()],
            Program::Binary { .. } => Vec::new(),
            Program::Image(image) => image.argv[1..].to_vec(),
        }
    }

    /// A path on the host at which the program file can be executed.
    pub fn host_path(&self) -> Result<PathBuf> {
        match self {
            Program::Workload { .. } => embedded::workload_path(),
            Program::Binary { path, .. } => Ok(path.clone()),
            Program::Image(_) => bail!("{IMAGE_RUNTIME_ONLY}"),
        }
    }

    /// The program file's bytes.
    pub fn bytes(&self) -> Result<Cow<'static, [u8]>> {
        match self {
            Program::Workload { .. } => Ok(Cow::Borrowed(embedded::WORKLOAD_ELF)),
            Program::Binary { path, .. } => Ok(Cow::Owned(read_program_file(path)?)),
            Program::Image(_) => bail!("{IMAGE_RUNTIME_ONLY}"),
        }
    }

    /// A short content identity, for caches derived from the file (container images).
    pub fn content_id(&self) -> Result<String> {
        match self {
            Program::Workload { .. } => Ok(embedded::WORKLOAD_HASH.trim().to_string()),
            Program::Binary { digest, .. } => Ok(digest.short()),
            Program::Image(image) => Ok(image.digest.clone()),
        }
    }
}

fn read_program_file(path: &Path) -> Result<Vec<u8>> {
    read_regular_file(path, MAX_PROGRAM_BYTES).with_context(|| format!("cannot read program {}", path.display()))
}

/// The bytes of a regular file of at most `max` bytes. Opened without blocking (a FIFO in its
/// place cannot hang cvm) and checked on the descriptor itself, then read once, at most `max`.
pub fn read_regular_file(path: &Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("{}", path.display()))?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    if meta.len() > max {
        bail!("{} is {} MiB; files larger than {} MiB are refused", path.display(), meta.len() >> 20, max >> 20);
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        bail!("{} grew past {} MiB while it was read", path.display(), max >> 20);
    }
    Ok(bytes)
}

/// Refuses anything but a complete little-endian 64-bit x86-64 ELF executable without an
/// interpreter: the same reader the VMM loads programs with.
pub fn check_static_elf(bytes: &[u8]) -> Result<()> {
    ElfFile::parse(bytes).context("cvm runs static x86-64 Linux programs")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_workload_is_static() {
        check_static_elf(embedded::WORKLOAD_ELF).unwrap();
    }

    #[test]
    fn refuses_non_elf_and_truncated() {
        assert!(format!("{:#}", check_static_elf(b"#!/bin/sh\necho hi\n").unwrap_err()).contains("not an ELF"));
        let truncated = &embedded::WORKLOAD_ELF[..100];
        assert!(format!("{:#}", check_static_elf(truncated).unwrap_err()).contains("truncated"));
    }

    #[test]
    fn any_prefix_or_corrupted_header_is_an_error_not_a_panic() {
        let elf = embedded::WORKLOAD_ELF;
        for len in (0..8192).step_by(3) {
            let _ = check_static_elf(&elf[..len]);
        }
        let mut corrupt = elf[..4096].to_vec();
        for at in 0..64 {
            for value in [0x00, 0x7f, 0xff] {
                let saved = corrupt[at];
                corrupt[at] = value;
                let _ = check_static_elf(&corrupt);
                corrupt[at] = saved;
            }
        }
    }

    #[test]
    fn refuses_dynamic_programs() {
        let dynamic = std::fs::read("/bin/sh").unwrap();
        assert!(format!("{:#}", check_static_elf(&dynamic).unwrap_err()).contains("dynamically linked"));
    }

    #[test]
    fn unknown_workload_names_the_choices() {
        let err = Program::workload("nope").unwrap_err().to_string();
        assert!(err.contains("hello, cpu, mem, syscall, idle, probe, threads"));
    }
}
