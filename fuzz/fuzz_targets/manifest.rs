#![no_main]
//! `cargo +nightly fuzz run manifest`: see `tandem_fuzz::manifest`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_fuzz::manifest(data));
