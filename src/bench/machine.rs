//! What machine a benchmark ran on: the CPU model and the instruction sets the kernels can use.
//!
//! Every benchmark prints this, because the same machine class comes with different CPUs (AVX2
//! only, or AVX-512 with VNNI, BF16 and FP16), and figures are only comparable with it stated.

use serde::Serialize;

/// The CPU and its vector extensions, as detected at run time.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// `model name` from `/proc/cpuinfo`, or `unknown`.
    pub cpu: String,
    /// The vector extensions present, e.g. `avx2 fma avx512f`.
    pub isa: Vec<&'static str>,
    /// Threads available to this process.
    pub threads: usize,
}

impl Machine {
    /// Detects the machine this process runs on.
    pub fn detect() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        Machine { cpu, isa: isa(), threads }
    }

    /// One line for a table's heading.
    pub fn describe(&self) -> String {
        format!("CPU: {} | ISA: {} | {} threads", self.cpu, self.isa.join(" "), self.threads)
    }
}

#[cfg(target_arch = "x86_64")]
fn isa() -> Vec<&'static str> {
    use std::arch::is_x86_feature_detected as has;
    let found = [
        ("sse4.2", has!("sse4.2")),
        ("avx2", has!("avx2")),
        ("fma", has!("fma")),
        ("avx512f", has!("avx512f")),
        ("avx512bw", has!("avx512bw")),
        ("avx512vnni", has!("avx512vnni")),
        ("avx512bf16", has!("avx512bf16")),
        ("avx512fp16", has!("avx512fp16")),
    ];
    found.into_iter().filter(|(_, present)| *present).map(|(name, _)| name).collect()
}

#[cfg(not(target_arch = "x86_64"))]
fn isa() -> Vec<&'static str> {
    vec![std::env::consts::ARCH]
}
