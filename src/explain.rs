//! `--explain`: a runtime narrates what it does, step by step, in words a student understands.
//! The narration goes to stderr so `--json` output on stdout stays one object, through the
//! stderr relay, so a reader of stderr that stalls cannot hold a run past its deadline.

use std::cell::Cell;

#[derive(Debug)]
pub struct Narrator {
    enabled: bool,
    step: Cell<u32>,
}

impl Narrator {
    pub fn new(enabled: bool) -> Self {
        Narrator { enabled, step: Cell::new(0) }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// One numbered step: what was done, and why it matters. `text` is only built when
    /// narration is on, so a quiet run pays nothing for it.
    pub fn step(&self, text: impl FnOnce() -> String) {
        if self.enabled {
            let n = self.step.get() + 1;
            self.step.set(n);
            crate::runtime::relay::eprint(&format!("[explain {n:>2}] {}\n", text()));
        }
    }
}
