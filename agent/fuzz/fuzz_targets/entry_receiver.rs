//! The receiver's file-stream state machine (`EntryReceiver`) on arbitrary
//! message sequences, checked against a model of the protocol.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferry_agent::receiver::entry_fuzz::check_entry_receiver(data);
});
