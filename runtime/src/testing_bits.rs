//! Which machine a recorded training hash belongs to.
//!
//! A training run's weights are a function of its code, settings and seed, and of three facts
//! about the machine: the kernels' ISA, the rayon worker count (the kernels sum weight gradients
//! per worker), and the L1 data and L2 caches. The caches matter because candle's matmul, under
//! the dense layers, blocks its products by their size and ways (the `gemm` crate reads them
//! from sysfs), so an AVX-512 AMD EPYC and an AVX-512 Intel Xeon sum in different orders and
//! write different, equally deterministic, bits. Tests that compare weights with recorded
//! hashes keep one hash per machine of [`RECORDED_MACHINES`]; elsewhere they check that two
//! runs agree and print the hashes to record.

/// The machines hashes are recorded for, as [`machine_signature`] names them. Tests keep their
/// hashes in arrays in this order. The L3 cache is left out: the recorded models' products are
/// far below the sizes it blocks.
pub const RECORDED_MACHINES: [&str; 2] = [
    // Intel Xeon (Sapphire Rapids), where the first hashes were recorded.
    "avx512 L1d 48K/12 L2 2048K/16",
    // AMD EPYC (Zen 4).
    "avx512 L1d 32K/8 L2 1024K/8",
];

/// This machine's ISA and L1 data and L2 caches, e.g. `avx512 L1d 32K/8 L2 1024K/8`, or just the
/// ISA where the caches cannot be read.
pub fn machine_signature() -> String {
    let isa = crate::kernels::isa_name();
    let caches: Vec<String> = [(1, "Data", "L1d"), (2, "Unified", "L2")]
        .iter()
        .filter_map(|&(level, kind, name)| cache(level, kind).map(|(size, ways)| format!("{name} {size}/{ways}")))
        .collect();
    if caches.len() == 2 {
        format!("{isa} {}", caches.join(" "))
    } else {
        isa.to_owned()
    }
}

/// The position of this machine in [`RECORDED_MACHINES`], if hashes were recorded on one like it.
pub fn recorded_machine() -> Option<usize> {
    let signature = machine_signature();
    RECORDED_MACHINES.iter().position(|m| *m == signature)
}

/// The size (as sysfs writes it, e.g. `32K`) and ways of CPU 0's cache of `level` and `kind`.
fn cache(level: u32, kind: &str) -> Option<(String, String)> {
    let root = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    let read =
        |dir: &std::path::Path, file: &str| std::fs::read_to_string(dir.join(file)).ok().map(|s| s.trim().to_owned());
    std::fs::read_dir(root).ok()?.flatten().map(|e| e.path()).find_map(|dir| {
        let matches = read(&dir, "level")? == level.to_string() && read(&dir, "type")? == kind;
        matches.then(|| Some((read(&dir, "size")?, read(&dir, "ways_of_associativity")?)))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signature starts with the ISA the kernels run, and a recorded machine is found only
    /// by its exact signature.
    #[test]
    fn the_signature_names_the_isa_and_matches_records_exactly() {
        let signature = machine_signature();
        assert!(signature.starts_with(crate::kernels::isa_name()), "{signature}");
        assert_eq!(recorded_machine().map(|i| RECORDED_MACHINES[i].to_owned()), recorded_machine().map(|_| signature));
    }
}
