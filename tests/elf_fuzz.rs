//! A bounded, deterministic fuzz of the one ELF reader and the VM loader: 1,500
//! mutations of the embedded workload (flipped bytes, program-header fields set to edge values,
//! truncations) go through the checks every runtime makes, the VMM's layout planning and
//! loading into guest RAM, and, for a sample of the accepted files with /dev/kvm, a real VM run.
//! Nothing may panic, wrap an address, or run past its time.

mod common;

use std::time::{Duration, Instant};

use common::require_kvm;
use cvm::elf::ElfFile;
use cvm::explain::Narrator;
use cvm::vmm::builder::{self, VmPlan, VmRequest};
use cvm::vmm::devices::Devices;
use cvm::vmm::layout::USER_BASE;
use cvm::vmm::loader::{self, ProgramLayout};
use cvm::vmm::memory::GuestRam;
use cvm::vmm::run;

const FILES: usize = 1500;
const RAM: u64 = 64 << 20;
/// Every this many accepted files, one is booted for real (with /dev/kvm).
const BOOT_EVERY: usize = 10;
const TIME_LIMIT: Duration = Duration::from_secs(90);

/// xorshift64*: the same files on every run.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const EDGES: [u64; 10] = [0, 1, 0xfff, 0x1000, USER_BASE, RAM - 1, RAM, 1 << 63, u64::MAX - 0x20, u64::MAX];

fn mutate(original: &[u8], random: &mut Random) -> Vec<u8> {
    let mut elf = original.to_vec();
    let phoff = u64::from_le_bytes(elf[32..40].try_into().unwrap()) as usize;
    let phnum = u16::from_le_bytes(elf[56..58].try_into().unwrap()) as usize;
    for _ in 0..1 + random.below(3) {
        match random.below(4) {
            0 => {
                let at = random.below(4096.min(elf.len()));
                elf[at] = random.next() as u8;
            }
            1 | 2 => {
                // A program-header field (offset, vaddr, paddr, filesz, memsz, align) set to
                // an edge value, or an edge value plus a little.
                let header = phoff + random.below(phnum) * 56;
                let field = header + 8 + 8 * random.below(6);
                let value = EDGES[random.below(EDGES.len())].wrapping_add(random.below(3) as u64 * 0x10);
                elf[field..field + 8].copy_from_slice(&value.to_le_bytes());
            }
            _ => {
                let keep = random.below(elf.len());
                elf.truncate(keep.max(1));
            }
        }
    }
    elf
}

#[test]
fn mutated_programs_never_panic_or_wrap_in_the_reader_and_loader_with_kvm() {
    let kvm = require_kvm();
    let started = Instant::now();
    let original = cvm::embedded::WORKLOAD_ELF;
    let mut random = Random(0x5eed_cafe_f00d_0001);
    let ram = GuestRam::new(RAM).unwrap();
    let (mut accepted, mut booted) = (0, 0);
    for index in 0..FILES {
        assert!(started.elapsed() < TIME_LIMIT, "the fuzz took longer than {TIME_LIMIT:?} at file {index}");
        let elf = mutate(original, &mut random);
        let Ok(parsed) = ElfFile::parse(&elf) else { continue };
        let Ok(layout) = ProgramLayout::plan(&parsed, RAM) else { continue };
        // A planned layout is inside guest RAM, in order, with nothing wrapped.
        assert!(layout.brk_start >= USER_BASE, "file {index}: {layout:?}");
        assert!(layout.brk_start <= layout.brk_limit && layout.brk_limit <= layout.mmap_top, "file {index}");
        assert!(layout.stack_bottom < layout.stack_top && layout.stack_top == RAM, "file {index}");
        for segment in &parsed.segments {
            let start = segment.vaddr + layout.bias;
            assert!(start >= USER_BASE && start + segment.mem_size <= layout.brk_start, "file {index}");
        }
        let _ = loader::load_program(&ram, &parsed, &layout);
        accepted += 1;
        if !kvm || accepted % BOOT_EVERY != 0 {
            continue;
        }
        let request = VmRequest {
            program_file: None,
            kernel: cvm::embedded::GUEST_KERNEL_ELF,
            program: &elf,
            ram_bytes: RAM,
            cpus: 1,
            protect_kernel: false,
            args: vec!["/fuzzed".into(), "hello".into()],
            env: vec![],
            hostname: "fuzz".into(),
        };
        let Ok(plan) = VmPlan::new(&request) else { continue };
        let mut vm = builder::build(&plan, &Narrator::new(false)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(1);
        let devices = Devices::builtin(1, false, deadline, vm.page_table_pool).unwrap();
        // Any way the run ends is fine; an error of the VMM itself or a hang is not.
        run::run_all(&mut vm.vcpus, &vm.ram, &devices, deadline).unwrap();
        booted += 1;
    }
    eprintln!("{FILES} mutated files: {accepted} passed the checks, {booted} booted, in {:?}", started.elapsed());
    assert!(accepted > 10, "the mutations should leave some files loadable ({accepted})");
}
