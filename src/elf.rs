//! Just enough ELF64 to check a program before any runtime starts and to place a static program
//! or a guest kernel in guest RAM: the header, the loadable segments and where the program
//! headers are. Every offset is bounds-checked,
//! so a corrupt file is an error, never a panic.

use anyhow::{bail, ensure, Context, Result};

const PT_LOAD: u32 = 1;
const PT_INTERP: u32 = 3;
const PT_NOTE: u32 = 4;
const PT_PHDR: u32 = 6;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;
const HEADER_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: u64,
    pub paddr: u64,
    pub offset: u64,
    pub file_size: u64,
    pub mem_size: u64,
}

#[derive(Clone, Debug)]
pub struct ElfFile<'a> {
    pub bytes: &'a [u8],
    /// ET_DYN (static-pie): loaded at a bias chosen by the loader.
    pub position_independent: bool,
    pub entry: u64,
    pub phoff: u64,
    pub phentsize: u16,
    pub phnum: u16,
    /// PT_PHDR's virtual address, when the file has one.
    pub phdr_vaddr: Option<u64>,
    pub segments: Vec<Segment>,
    /// (file offset, size) of each PT_NOTE segment.
    pub note_segments: Vec<(u64, u64)>,
    /// The dynamic loader a dynamically linked program names (PT_INTERP); only
    /// [`ElfFile::parse_any`] accepts such a file.
    pub interpreter: Option<String>,
}

/// One ELF note: its owner's name, its type, its contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note<'a> {
    pub name: &'a [u8],
    pub kind: u32,
    pub desc: &'a [u8],
}

fn read<const N: usize>(bytes: &[u8], offset: usize) -> Result<[u8; N]> {
    offset
        .checked_add(N)
        .and_then(|end| bytes.get(offset..end))
        .map(|slice| slice.try_into().expect("slice of length N"))
        .context("truncated or corrupt ELF file")
}

fn u16_at(bytes: &[u8], offset: usize) -> Result<u16> {
    read::<2>(bytes, offset).map(u16::from_le_bytes)
}
fn u32_at(bytes: &[u8], offset: usize) -> Result<u32> {
    read::<4>(bytes, offset).map(u32::from_le_bytes)
}
fn u64_at(bytes: &[u8], offset: usize) -> Result<u64> {
    read::<8>(bytes, offset).map(u64::from_le_bytes)
}

impl<'a> ElfFile<'a> {
    /// A static x86-64 executable: what every runtime runs directly. A dynamically linked
    /// program is refused with the reason.
    pub fn parse(bytes: &'a [u8]) -> Result<ElfFile<'a>> {
        let file = ElfFile::parse_any(bytes)?;
        if file.interpreter.is_some() {
            bail!(
                "dynamically linked (it needs the loader named in PT_INTERP); rebuild it static, \
                 for example with -static or --target x86_64-unknown-linux-musl"
            );
        }
        Ok(file)
    }

    /// An x86-64 executable, static or dynamically linked (an image may carry its loader).
    pub fn parse_any(bytes: &'a [u8]) -> Result<ElfFile<'a>> {
        ensure!(bytes.len() >= HEADER_SIZE && bytes[..4] == *b"\x7fELF", "not an ELF file");
        ensure!(bytes[4] == 2 && bytes[5] == 1, "not a 64-bit little-endian ELF file");
        ensure!(u16_at(bytes, 18)? == EM_X86_64, "not an x86-64 ELF file");
        let kind = u16_at(bytes, 16)?;
        ensure!(kind == ET_EXEC || kind == ET_DYN, "not an executable ELF file (type {kind})");
        let entry = u64_at(bytes, 24)?;
        let phoff = u64_at(bytes, 32)?;
        let phentsize = u16_at(bytes, 54)?;
        let phnum = u16_at(bytes, 56)?;
        ensure!(usize::from(phentsize) >= PHDR_SIZE && phnum > 0, "corrupt ELF program header table");
        let mut segments = Vec::new();
        let mut phdr_vaddr = None;
        let mut note_segments = Vec::new();
        let mut interpreter = None;
        for index in 0..u64::from(phnum) {
            let base = phoff
                .checked_add(index * u64::from(phentsize))
                .and_then(|b| usize::try_from(b).ok())
                .context("corrupt ELF program header table")?;
            match u32_at(bytes, base)? {
                PT_LOAD => {
                    let segment = Segment {
                        offset: u64_at(bytes, base + 8)?,
                        vaddr: u64_at(bytes, base + 16)?,
                        paddr: u64_at(bytes, base + 24)?,
                        file_size: u64_at(bytes, base + 32)?,
                        mem_size: u64_at(bytes, base + 40)?,
                    };
                    let file_end = segment.offset.checked_add(segment.file_size);
                    if file_end.is_none_or(|end| end > bytes.len() as u64) {
                        bail!("truncated ELF file: a segment reaches past the end of the file");
                    }
                    ensure!(segment.file_size <= segment.mem_size, "corrupt ELF segment (file size > memory size)");
                    ensure!(segment.vaddr.checked_add(segment.mem_size).is_some(), "corrupt ELF segment address");
                    ensure!(segment.paddr.checked_add(segment.mem_size).is_some(), "corrupt ELF segment address");
                    segments.push(segment);
                }
                PT_INTERP => {
                    let offset = u64_at(bytes, base + 8)?;
                    let size = u64_at(bytes, base + 32)?;
                    let text = offset
                        .checked_add(size)
                        .and_then(|end| bytes.get(usize::try_from(offset).ok()?..usize::try_from(end).ok()?))
                        .context("truncated ELF file: the PT_INTERP segment reaches past the end")?;
                    let text = text.split(|&b| b == 0).next().unwrap_or_default();
                    interpreter = Some(String::from_utf8_lossy(text).into_owned());
                }
                PT_PHDR => phdr_vaddr = Some(u64_at(bytes, base + 16)?),
                PT_NOTE => note_segments.push((u64_at(bytes, base + 8)?, u64_at(bytes, base + 32)?)),
                _ => {}
            }
        }
        ensure!(!segments.is_empty(), "the ELF file has nothing to load");
        Ok(ElfFile {
            bytes,
            position_independent: kind == ET_DYN,
            entry,
            phoff,
            phentsize,
            phnum,
            phdr_vaddr,
            segments,
            note_segments,
            interpreter,
        })
    }

    /// The file bytes of a segment (checked in `parse`).
    pub fn segment_bytes(&self, segment: &Segment) -> &'a [u8] {
        &self.bytes[segment.offset as usize..(segment.offset + segment.file_size) as usize]
    }

    /// The notes of all PT_NOTE segments; a malformed note ends the list.
    pub fn notes(&self) -> Vec<Note<'a>> {
        let mut notes = Vec::new();
        for &(offset, size) in &self.note_segments {
            let Some(segment) = offset
                .checked_add(size)
                .and_then(|end| self.bytes.get(usize::try_from(offset).ok()?..usize::try_from(end).ok()?))
            else {
                continue;
            };
            let mut at = 0usize;
            while at + 12 <= segment.len() {
                let (Ok(name_size), Ok(desc_size), Ok(kind)) =
                    (u32_at(segment, at), u32_at(segment, at + 4), u32_at(segment, at + 8))
                else {
                    break;
                };
                let name_start = at + 12;
                let desc_start = name_start + (name_size as usize).next_multiple_of(4);
                let end = desc_start + (desc_size as usize).next_multiple_of(4);
                let (Some(name), Some(desc)) = (
                    segment.get(name_start..name_start + name_size as usize),
                    segment.get(desc_start..desc_start + desc_size as usize),
                ) else {
                    break;
                };
                let name = name.strip_suffix(&[0]).unwrap_or(name);
                notes.push(Note { name, kind, desc });
                at = end;
            }
        }
        notes
    }

    /// Lowest and end (exclusive) virtual address of the loadable segments.
    pub fn virtual_extent(&self) -> (u64, u64) {
        let low = self.segments.iter().map(|s| s.vaddr).min().unwrap_or(0);
        let high = self.segments.iter().map(|s| s.vaddr + s.mem_size).max().unwrap_or(0);
        (low, high)
    }

    /// Virtual address (without bias) of the program headers once loaded, if they are loaded.
    pub fn program_headers_vaddr(&self) -> Option<u64> {
        self.phdr_vaddr.or_else(|| {
            self.segments.iter().find_map(|s| {
                (self.phoff >= s.offset && self.phoff < s.offset + s.file_size)
                    .then(|| s.vaddr + (self.phoff - s.offset))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_embedded_workload_and_kernel() {
        let workload = ElfFile::parse(crate::embedded::WORKLOAD_ELF).unwrap();
        assert!(!workload.segments.is_empty());
        assert!(workload.program_headers_vaddr().is_some());
        let kernel = ElfFile::parse(crate::embedded::GUEST_KERNEL_ELF).unwrap();
        assert!(!kernel.position_independent);
        assert!(kernel.segments.iter().all(|s| s.paddr >= cvm_guest_abi::KERNEL_BASE));
    }

    #[test]
    fn corrupt_files_are_errors() {
        assert!(ElfFile::parse(b"nope").is_err());
        let mut bytes = crate::embedded::WORKLOAD_ELF[..64].to_vec();
        assert!(ElfFile::parse(&bytes).unwrap_err().to_string().contains("truncated"));
        bytes.resize(200, 0);
        bytes[54] = 10; // phentsize too small
        assert!(ElfFile::parse(&bytes).is_err());
    }
}
