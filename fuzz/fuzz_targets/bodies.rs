//! Every message kind's body on arbitrary bytes: decode, re-encode, agree.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| actix_cpg::fuzzing::bodies(data));
