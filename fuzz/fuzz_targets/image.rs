#![no_main]
//! `cargo +nightly fuzz run image`: see `tandem_fuzz::image`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_fuzz::image(data));
