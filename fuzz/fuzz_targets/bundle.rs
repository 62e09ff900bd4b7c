#![no_main]
//! `cargo +nightly fuzz run bundle`: see `tandem_fuzz::bundle`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_fuzz::bundle(data));
