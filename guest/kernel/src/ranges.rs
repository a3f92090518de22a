//! A small sorted map from address ranges to a value, with a fixed capacity: what the program
//! may do with its pages (protection.rs) and the areas of the memory above guest RAM
//! (highmem.rs). No allocator: setting a range rebuilds the array, which holds a few dozen
//! entries.

use crate::errno::{Errno, ENOMEM};

/// [start, end) → value.
#[derive(Clone, Copy)]
pub struct Range<V> {
    pub start: u64,
    pub end: u64,
    pub value: V,
}

/// Ranges sorted by address, neither overlapping nor (with the same value) touching.
#[derive(Clone, Copy)]
pub struct RangeMap<V: Copy + PartialEq, const N: usize> {
    list: [Range<V>; N],
    len: usize,
}

impl<V: Copy + PartialEq, const N: usize> RangeMap<V, N> {
    /// Empty; `filler` only fills the unused slots.
    pub const fn new(filler: V) -> Self {
        RangeMap { list: [Range { start: 0, end: 0, value: filler }; N], len: 0 }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Range<V>> {
        self.list[..self.len].iter()
    }

    /// The ranges that share an address with [start, end).
    pub fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = &Range<V>> {
        self.iter().filter(move |r| r.start < end && start < r.end)
    }

    /// The range holding `address`.
    pub fn find(&self, address: u64) -> Option<Range<V>> {
        self.iter().find(|r| r.start <= address && address < r.end).copied()
    }

    /// [start, end) becomes `value` (None: no range there), whatever was there before;
    /// neighbours with the same value merge. -ENOMEM, and no change, when it does not fit.
    pub fn set(&mut self, start: u64, end: u64, value: Option<V>) -> Result<(), Errno> {
        let mut result = [self.list[0]; N];
        let mut count = 0;
        let mut push = |range: Range<V>| -> Result<(), Errno> {
            if range.start >= range.end {
                return Ok(());
            }
            if count > 0 {
                let last: &mut Range<V> = &mut result[count - 1];
                if last.end == range.start && last.value == range.value {
                    last.end = range.end;
                    return Ok(());
                }
            }
            *result.get_mut(count).ok_or(ENOMEM)? = range;
            count += 1;
            Ok(())
        };
        let new = value.map(|value| Range { start, end, value });
        let mut placed = new.is_none();
        for &r in self.iter() {
            if r.end <= start {
                push(r)?;
            } else if r.start >= end {
                if let (false, Some(new)) = (placed, new) {
                    push(new)?;
                    placed = true;
                }
                push(r)?;
            } else {
                // Overlaps: keep the parts outside [start, end).
                push(Range { end: start, ..r })?;
                if let (false, Some(new)) = (placed, new) {
                    push(new)?;
                    placed = true;
                }
                push(Range { start: end, ..r })?;
            }
        }
        if let (false, Some(new)) = (placed, new) {
            push(new)?;
        }
        self.list = result;
        self.len = count;
        Ok(())
    }
}
