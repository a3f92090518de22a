//! The program a run executes: the embedded workload or any static x86-64 Linux ELF given with
//! `--binary`. Bad programs are refused here, with one clear reason, before any runtime starts.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::elf::ElfFile;
use crate::embedded;

/// Largest program file accepted (the VM further limits it to what fits its guest RAM).
pub const MAX_PROGRAM_BYTES: u64 = 256 << 20;

#[derive(Clone, Debug)]
pub enum Program {
    /// The workload built into cvm; `name` is one of [`embedded::WORKLOADS`].
    Workload { name: String },
    /// A static program file given with `--binary`.
    Binary { path: PathBuf },
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
        let bytes = read_program_file(path)?;
        check_static_elf(&bytes).with_context(|| format!("cannot run {}", path.display()))?;
        Ok(Program::Binary { path: path.to_path_buf() })
    }

    /// What the record calls it: the workload name, or the file name of a binary.
    pub fn label(&self) -> String {
        match self {
            Program::Workload { name } => name.clone(),
            Program::Binary { path } => {
                path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
            }
        }
    }

    /// Arguments the program file is started with before the user's: the workload's
    /// subcommand for the embedded program, nothing for a binary.
    pub fn leading_args(&self) -> Vec<String> {
        match self {
            Program::Workload { name } => vec![name.clone()],
            Program::Binary { .. } => Vec::new(),
        }
    }

    /// A path on the host at which the program file can be executed.
    pub fn host_path(&self) -> Result<PathBuf> {
        match self {
            Program::Workload { .. } => embedded::workload_path(),
            Program::Binary { path } => Ok(path.clone()),
        }
    }

    /// The program file's bytes.
    pub fn bytes(&self) -> Result<Cow<'static, [u8]>> {
        match self {
            Program::Workload { .. } => Ok(Cow::Borrowed(embedded::WORKLOAD_ELF)),
            Program::Binary { path } => Ok(Cow::Owned(read_program_file(path)?)),
        }
    }

    /// A short content identity, for caches derived from the file (container images).
    pub fn content_id(&self) -> Result<String> {
        match self {
            Program::Workload { .. } => Ok(embedded::WORKLOAD_HASH.trim().to_string()),
            Program::Binary { .. } => {
                use sha2::{Digest, Sha256};
                let digest = Sha256::digest(self.bytes()?);
                Ok(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
            }
        }
    }
}

fn read_program_file(path: &Path) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read program {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    if meta.len() > MAX_PROGRAM_BYTES {
        bail!(
            "{} is {} MiB; programs larger than {} MiB are refused",
            path.display(),
            meta.len() >> 20,
            MAX_PROGRAM_BYTES >> 20
        );
    }
    std::fs::read(path).with_context(|| format!("cannot read program {}", path.display()))
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
        assert!(err.contains("hello, cpu, mem, syscall, probe"));
    }
}
