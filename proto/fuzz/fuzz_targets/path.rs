//! Path and name validation (`RelPath::from_bytes`, `Name::new`) against the documented rules.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferry_proto::fuzz_support::check_path(data);
});
