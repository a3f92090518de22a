//! VM-exit counters: a fixed array indexed by the kind of exit, so counting one costs an add
//! and no allocation (the old map keyed by name allocated a string on every exit). The run
//! record gets them as a name → count map at the end.

use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    Io,
    Mmio,
    Hlt,
    Shutdown,
    InternalError,
    FailEntry,
    SystemEvent,
    /// KVM_RUN returned EINTR (the kick timer) or an interrupt exit.
    Intr,
    IrqWindow,
    /// Anything else; the run ends on it.
    Other,
}

impl ExitKind {
    const ALL: [ExitKind; 10] = [
        ExitKind::Io,
        ExitKind::Mmio,
        ExitKind::Hlt,
        ExitKind::Shutdown,
        ExitKind::InternalError,
        ExitKind::FailEntry,
        ExitKind::SystemEvent,
        ExitKind::Intr,
        ExitKind::IrqWindow,
        ExitKind::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ExitKind::Io => "io",
            ExitKind::Mmio => "mmio",
            ExitKind::Hlt => "hlt",
            ExitKind::Shutdown => "shutdown",
            ExitKind::InternalError => "internal_error",
            ExitKind::FailEntry => "fail_entry",
            ExitKind::SystemEvent => "system_event",
            ExitKind::Intr => "intr",
            ExitKind::IrqWindow => "irq_window",
            ExitKind::Other => "other",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitCounts([u64; ExitKind::ALL.len()]);

impl ExitCounts {
    pub fn count(&mut self, kind: ExitKind) {
        self.0[kind as usize] += 1;
    }

    pub fn get(&self, kind: ExitKind) -> u64 {
        self.0[kind as usize]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Adds another vCPU's counts.
    pub fn add(&mut self, other: &ExitCounts) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            *mine += theirs;
        }
    }

    /// The kinds that happened, by name, for the run record.
    pub fn to_map(&self) -> BTreeMap<String, u64> {
        ExitKind::ALL.iter().filter(|k| self.get(**k) > 0).map(|k| (k.name().to_string(), self.get(*k))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_and_name_themselves() {
        let mut a = ExitCounts::default();
        a.count(ExitKind::Io);
        a.count(ExitKind::Io);
        let mut b = ExitCounts::default();
        b.count(ExitKind::Intr);
        a.add(&b);
        assert_eq!(a.total(), 3);
        let map = a.to_map();
        assert_eq!(map["io"], 2);
        assert_eq!(map["intr"], 1);
        assert!(!map.contains_key("hlt"));
    }
}
