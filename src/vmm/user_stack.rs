//! The program's initial stack, exactly as Linux's `execve` leaves it, built by the VMM:
//! `argc`, `argv[]`, `envp[]`, the auxiliary vector, then the strings and the 16 `AT_RANDOM`
//! bytes above them. The guest kernel enters the program with `RSP` pointing at `argc`.

use anyhow::{ensure, Result};

pub const AT_NULL: u64 = 0;
pub const AT_PHDR: u64 = 3;
pub const AT_PHENT: u64 = 4;
pub const AT_PHNUM: u64 = 5;
pub const AT_PAGESZ: u64 = 6;
pub const AT_BASE: u64 = 7;
pub const AT_FLAGS: u64 = 8;
pub const AT_ENTRY: u64 = 9;
pub const AT_UID: u64 = 11;
pub const AT_EUID: u64 = 12;
pub const AT_GID: u64 = 13;
pub const AT_EGID: u64 = 14;
pub const AT_PLATFORM: u64 = 15;
pub const AT_HWCAP: u64 = 16;
pub const AT_CLKTCK: u64 = 17;
pub const AT_SECURE: u64 = 23;
pub const AT_RANDOM: u64 = 25;
pub const AT_HWCAP2: u64 = 26;
pub const AT_EXECFN: u64 = 31;

/// What goes on the stack besides the pointers the builder computes itself.
pub struct StackContents<'a> {
    pub args: &'a [String],
    pub env: &'a [String],
    pub execfn: &'a str,
    pub platform: &'a str,
    pub random: [u8; 16],
    /// Auxiliary entries with plain values (AT_PHDR, AT_ENTRY, AT_HWCAP, ...).
    pub aux: Vec<(u64, u64)>,
}

/// The stack image: `bytes` go at guest address `base`; `pointer` is the initial `RSP`.
#[derive(Debug)]
pub struct InitialStack {
    pub base: u64,
    pub pointer: u64,
    pub bytes: Vec<u8>,
}

/// Builds the stack that ends at `top` (exclusive); it may use at most `limit` bytes.
pub fn build(top: u64, limit: u64, contents: &StackContents) -> Result<InitialStack> {
    // Strings first (highest addresses), then the random bytes, then the vectors.
    let mut strings: Vec<u8> = Vec::new();
    let mut place = |text: &str| -> u64 {
        strings.extend_from_slice(text.as_bytes());
        strings.push(0);
        strings.len() as u64 // offset of the end; resolved to an address below
    };
    let arg_ends: Vec<u64> = contents.args.iter().map(|a| place(a)).collect();
    let env_ends: Vec<u64> = contents.env.iter().map(|e| place(e)).collect();
    let execfn_end = place(contents.execfn);
    let platform_end = place(contents.platform);
    let lengths = |ends: &[u64], texts: &[String]| -> Vec<u64> {
        ends.iter().zip(texts).map(|(end, text)| end - text.len() as u64 - 1).collect()
    };
    let arg_offsets = lengths(&arg_ends, contents.args);
    let env_offsets = lengths(&env_ends, contents.env);
    let execfn_offset = execfn_end - contents.execfn.len() as u64 - 1;
    let platform_offset = platform_end - contents.platform.len() as u64 - 1;

    let aux_count = contents.aux.len() as u64 + 4; // + AT_RANDOM, AT_EXECFN, AT_PLATFORM, AT_NULL
    let words = 1 + (contents.args.len() as u64 + 1) + (contents.env.len() as u64 + 1) + 2 * aux_count;
    let needed = strings.len() as u64 + words * 8 + 64;
    ensure!(
        needed <= limit && needed <= top,
        "the program's arguments and environment ({needed} bytes) do not fit its {} KiB stack",
        limit >> 10
    );
    // 16 bytes of headroom at the very top, like Linux's end marker.
    let strings_base = (top - 16 - strings.len() as u64) & !15;
    let random_address = strings_base - 16;
    let pointer = (random_address - words * 8) & !15;
    ensure!(
        top - pointer <= limit,
        "the program's arguments and environment ({} bytes) do not fit its {} KiB stack",
        top - pointer,
        limit >> 10
    );

    let mut vector: Vec<u64> = Vec::with_capacity(words as usize);
    vector.push(contents.args.len() as u64);
    vector.extend(arg_offsets.iter().map(|offset| strings_base + offset));
    vector.push(0);
    vector.extend(env_offsets.iter().map(|offset| strings_base + offset));
    vector.push(0);
    for &(key, value) in &contents.aux {
        vector.extend([key, value]);
    }
    vector.extend([AT_RANDOM, random_address]);
    vector.extend([AT_EXECFN, strings_base + execfn_offset]);
    vector.extend([AT_PLATFORM, strings_base + platform_offset]);
    vector.extend([AT_NULL, 0]);

    let mut bytes = vec![0u8; (top - pointer) as usize];
    let at = |address: u64| (address - pointer) as usize;
    for (index, word) in vector.iter().enumerate() {
        bytes[index * 8..index * 8 + 8].copy_from_slice(&word.to_le_bytes());
    }
    bytes[at(random_address)..at(random_address) + 16].copy_from_slice(&contents.random);
    bytes[at(strings_base)..at(strings_base) + strings.len()].copy_from_slice(&strings);
    Ok(InitialStack { base: pointer, pointer, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(stack: &InitialStack, address: u64) -> u64 {
        let i = (address - stack.base) as usize;
        u64::from_le_bytes(stack.bytes[i..i + 8].try_into().unwrap())
    }

    fn string(stack: &InitialStack, address: u64) -> String {
        let i = (address - stack.base) as usize;
        let end = stack.bytes[i..].iter().position(|&b| b == 0).unwrap();
        String::from_utf8(stack.bytes[i..i + end].to_vec()).unwrap()
    }

    #[test]
    fn layout_matches_what_libc_start_code_reads() {
        let args = vec!["prog".to_string(), "hello".to_string()];
        let env = vec!["PATH=/bin".to_string()];
        let contents = StackContents {
            args: &args,
            env: &env,
            execfn: "/prog",
            platform: "x86_64",
            random: [7; 16],
            aux: vec![(AT_PAGESZ, 4096), (AT_ENTRY, 0x401000)],
        };
        let top = 0x400_0000;
        let stack = build(top, 1 << 20, &contents).unwrap();
        assert_eq!(stack.pointer % 16, 0);
        assert_eq!(stack.base + stack.bytes.len() as u64, top);
        let sp = stack.pointer;
        assert_eq!(word(&stack, sp), 2);
        assert_eq!(string(&stack, word(&stack, sp + 8)), "prog");
        assert_eq!(string(&stack, word(&stack, sp + 16)), "hello");
        assert_eq!(word(&stack, sp + 24), 0);
        assert_eq!(string(&stack, word(&stack, sp + 32)), "PATH=/bin");
        assert_eq!(word(&stack, sp + 40), 0);
        let mut aux = std::collections::HashMap::new();
        let mut at = sp + 48;
        loop {
            let (key, value) = (word(&stack, at), word(&stack, at + 8));
            aux.insert(key, value);
            at += 16;
            if key == AT_NULL {
                break;
            }
        }
        assert_eq!(aux[&AT_PAGESZ], 4096);
        assert_eq!(aux[&AT_ENTRY], 0x401000);
        assert_eq!(string(&stack, aux[&AT_EXECFN]), "/prog");
        assert_eq!(string(&stack, aux[&AT_PLATFORM]), "x86_64");
        let random = (aux[&AT_RANDOM] - stack.base) as usize;
        assert_eq!(&stack.bytes[random..random + 16], &[7; 16]);
    }

    #[test]
    fn oversized_arguments_are_refused() {
        let args = vec!["x".repeat(5000)];
        let contents =
            StackContents { args: &args, env: &[], execfn: "x", platform: "x86_64", random: [0; 16], aux: vec![] };
        assert!(build(0x100_0000, 4096, &contents).unwrap_err().to_string().contains("do not fit"));
    }
}
