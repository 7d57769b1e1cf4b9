//! Frame decoding (`ferry_proto::frame::decode` and the codec) on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferry_proto::fuzz_support::check_frame_decode(data);
});
