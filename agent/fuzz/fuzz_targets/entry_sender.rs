//! The sender's state machines (`EntrySender` of a file stream,
//! `ControlSender` of the control stream) on arbitrary receiver answers,
//! checked against the protocol's rules.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferry_agent::sender::file_stream_fuzz::check_sender_streams(data);
});
