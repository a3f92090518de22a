fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg=-T{dir}/linker.ld");
    // A plain ET_EXEC at its link address: nobody applies relocations to this kernel
    // (the x86_64-unknown-none target would otherwise link a static PIE).
    println!("cargo:rustc-link-arg=--no-pie");
    println!("cargo:rustc-link-arg=--no-dynamic-linker");
    println!("cargo:rerun-if-changed=linker.ld");
}
