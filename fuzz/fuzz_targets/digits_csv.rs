#![no_main]
//! `cargo +nightly fuzz run digits_csv`: see `tandem_fuzz::digits_csv`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_fuzz::digits_csv(data));
