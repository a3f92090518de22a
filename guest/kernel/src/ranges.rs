//! A small sorted map from address ranges to a value, with a fixed capacity: what the program
//! may do with its pages (protection.rs) and the areas of the memory above guest RAM
//! (highmem.rs). No allocator: a fixed array; setting a range replaces only the entries it
//! touches.

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
    ///
    /// Only the entries from the first one touching [start, end) to the last are replaced (by
    /// at most three: what is left of the first, the new range, what is left of the last), and
    /// the tail moves by the difference: at boot this runs in emulated CPL0 on nested hosts,
    /// where rebuilding all N slots cost about a millisecond.
    pub fn set(&mut self, start: u64, end: u64, value: Option<V>) -> Result<(), Errno> {
        if start >= end {
            return Ok(());
        }
        let len = self.len;
        // The first range of an empty map (at boot, where each instruction is emulated on
        // nested hosts: the general path below costs about 150).
        if len == 0 {
            if let (Some(value), true) = (value, N > 0) {
                self.list[0] = Range { start, end, value };
                self.len = 1;
            }
            return Ok(());
        }
        // [first, last): the entries overlapping or touching [start, end).
        let first = self.list[..len].iter().position(|r| r.end >= start).unwrap_or(len);
        let last = first + self.list[first..len].iter().take_while(|r| r.start <= end).count();
        let mut middle: [Option<Range<V>>; 3] = [None; 3];
        let mut count = 0;
        let mut push = |range: Range<V>| {
            if range.start >= range.end {
                return;
            }
            if count > 0 {
                if let Some(previous) = middle[count - 1].as_mut() {
                    if previous.end == range.start && previous.value == range.value {
                        previous.end = range.end;
                        return;
                    }
                }
            }
            middle[count] = Some(range);
            count += 1;
        };
        if first < last {
            let r = self.list[first];
            push(Range { end: r.end.min(start), ..r });
        }
        if let Some(value) = value {
            push(Range { start, end, value });
        }
        if first < last {
            let r = self.list[last - 1];
            push(Range { start: r.start.max(end), ..r });
        }
        let new_len = len - (last - first) + count;
        if new_len > N {
            return Err(ENOMEM);
        }
        // Move the tail, then write the replacements.
        self.list.copy_within(last..len, first + count);
        for (slot, range) in self.list[first..first + count].iter_mut().zip(middle.iter().flatten()) {
            *slot = *range;
        }
        self.len = new_len;
        Ok(())
    }
}
