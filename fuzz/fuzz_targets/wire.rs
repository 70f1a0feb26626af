//! Frame, batch and chunk decoders on arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| actix_cpg::fuzzing::wire(data));
