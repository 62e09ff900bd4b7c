#![no_main]
//! `cargo +nightly fuzz run request`: see `tandem_fuzz::request`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_fuzz::request(data));
