//! Which machine a recorded training hash belongs to.
//!
//! A training run's weights are a function of its code, settings and seed, and of three facts
//! about the machine: the kernels' ISA, the rayon worker count (the kernels sum weight gradients
//! per worker), and the L1 data and L2 caches. The caches matter because candle's matmul, under
//! the dense layers, blocks its products by their size and ways (the `gemm` crate reads them
//! from sysfs), so an AVX-512 AMD EPYC and an AVX-512 Intel Xeon sum in different orders and
//! write different, equally deterministic, bits. Tests that compare weights with recorded
//! hashes keep one hash per machine of [`RECORDED_MACHINES`]; elsewhere they check that two
//! runs agree and print the hashes to record. The hashes are CPU results: in a `cuda` build on a
//! GPU no machine matches, and the same two-runs check applies.

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
fn cpu_signature() -> String {
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

/// [`cpu_signature`], followed by ` on <device>` where models run on a GPU: there the GPU's
/// kernels sum in their own order, so no CPU hash can match, and the tests fall back to checking
/// that two runs agree.
pub fn machine_signature() -> String {
    let device = crate::device::default_device();
    if device.is_cpu() {
        cpu_signature()
    } else {
        format!("{} on {:?}", cpu_signature(), device.location())
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
    use crate::kernels::IsaLevel;

    /// Whether `signature` has the shape [`machine_signature`] writes with readable caches:
    /// `<isa> L1d <size>K/<ways> L2 <size>K/<ways>`.
    fn well_formed(signature: &str) -> bool {
        let parts: Vec<&str> = signature.split(' ').collect();
        let cache = |size_ways: &str| {
            size_ways.split_once('/').is_some_and(|(size, ways)| {
                size.strip_suffix('K').is_some_and(|n| n.parse::<u32>().is_ok()) && ways.parse::<u32>().is_ok()
            })
        };
        parts.len() == 5
            && IsaLevel::parse(parts[0]).is_some_and(|isa| isa.name() == parts[0])
            && parts[1] == "L1d"
            && cache(parts[2])
            && parts[3] == "L2"
            && cache(parts[4])
    }

    /// A recorded machine is found only by an exact match, so a record that this module could
    /// never write (a typo, another spacing) would silently turn every hash check into the weaker
    /// two-runs check; the records must have the written shape, differ from each other, and this
    /// machine's own signature must have the same shape wherever sysfs describes its caches.
    #[test]
    fn recorded_machines_have_the_shape_this_machine_is_named_in() {
        for record in RECORDED_MACHINES {
            assert!(well_formed(record), "{record:?}");
        }
        assert_ne!(RECORDED_MACHINES[0], RECORDED_MACHINES[1]);
        let own = cpu_signature();
        assert!(machine_signature().starts_with(&own));
        assert!(own.starts_with(crate::kernels::isa_name()), "{own}");
        if cache(1, "Data").is_some() && cache(2, "Unified").is_some() {
            assert!(well_formed(&own), "{own:?}");
        }
    }
}
