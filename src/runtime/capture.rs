//! What a run keeps of a program's output: the first and the last [`KEEP_EACH`] bytes of each
//! stream and a count of what was dropped between them. A program can print without end
//! (`cat /dev/zero`); cvm's own memory must not grow with it. The `CVM-RESULT` line is the
//! workload's last line, so it is always in the kept tail.

use std::collections::VecDeque;

/// Bytes kept at each end of a stream.
pub const KEEP_EACH: usize = 64 << 10;

/// One output stream as it arrives, holding at most `2 * KEEP_EACH` bytes.
#[derive(Debug, Default)]
pub struct BoundedCapture {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
}

/// A finished stream: the kept bytes (head then tail) and what was dropped between them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Captured {
    /// The first bytes, then (when `dropped > 0`) the last bytes.
    pub bytes: Vec<u8>,
    /// Everything the program wrote to the stream.
    pub total: u64,
    /// Bytes dropped from the middle; they were between offset [`KEEP_EACH`] and the tail.
    pub dropped: u64,
}

impl BoundedCapture {
    pub fn new() -> BoundedCapture {
        BoundedCapture::default()
    }

    pub fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let head_room = KEEP_EACH - self.head.len();
        if head_room > 0 {
            let take = head_room.min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        if bytes.len() >= KEEP_EACH {
            self.tail.clear();
            bytes = &bytes[bytes.len() - KEEP_EACH..];
        }
        let overflow = (self.tail.len() + bytes.len()).saturating_sub(KEEP_EACH);
        self.tail.drain(..overflow);
        self.tail.extend(bytes);
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn finish(self) -> Captured {
        let kept = (self.head.len() + self.tail.len()) as u64;
        let mut bytes = self.head;
        bytes.extend(self.tail);
        Captured { bytes, total: self.total, dropped: self.total - kept }
    }
}

impl Captured {
    /// A stream kept whole (the VM's and tests' small outputs).
    pub fn whole(bytes: Vec<u8>) -> Captured {
        Captured { total: bytes.len() as u64, bytes, dropped: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_output_is_kept_whole() {
        let mut capture = BoundedCapture::new();
        capture.push(b"hello ");
        capture.push(b"world\n");
        assert_eq!(capture.finish(), Captured::whole(b"hello world\n".to_vec()));
    }

    #[test]
    fn endless_output_keeps_both_ends_and_counts_the_rest() {
        let mut capture = BoundedCapture::new();
        let chunk = vec![b'x'; 10_000];
        for _ in 0..1000 {
            capture.push(&chunk);
        }
        let last = b"\nCVM-RESULT {\"ok\":true}\n";
        capture.push(last);
        let done = capture.finish();
        assert_eq!(done.bytes.len(), 2 * KEEP_EACH);
        assert_eq!(done.total, 10_000_000 + last.len() as u64);
        assert_eq!(done.dropped, done.total - 2 * KEEP_EACH as u64);
        assert!(done.bytes.ends_with(b"CVM-RESULT {\"ok\":true}\n"));
        assert!(done.bytes.starts_with(b"xxxx"));
    }

    #[test]
    fn one_huge_write_and_uneven_pieces_keep_the_right_bytes() {
        let data: Vec<u8> = (0..500_000u32).map(|i| (i % 251) as u8).collect();
        for pieces in [1, 7, 4096, 100_000] {
            let mut capture = BoundedCapture::new();
            for piece in data.chunks(data.len().div_ceil(pieces)) {
                capture.push(piece);
            }
            let done = capture.finish();
            assert_eq!(&done.bytes[..KEEP_EACH], &data[..KEEP_EACH]);
            assert_eq!(&done.bytes[KEEP_EACH..], &data[data.len() - KEEP_EACH..]);
        }
    }
}
