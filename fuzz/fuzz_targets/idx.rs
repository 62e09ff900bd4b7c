#![no_main]
//! `cargo +nightly fuzz run idx`: see `tandem_fuzz::idx`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_fuzz::idx(data));
