//! Message decoding on arbitrary bytes, and round trips of generated messages.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferry_proto::fuzz_support::check_message_decode(data);
});
